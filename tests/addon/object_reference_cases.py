"""An object's own references through the real add-on, every case in ONE bpy session.

  python object_reference_cases.py ZIP OUT_DIR RESULT.json

The room of tools/scenes.py with its crate; the crate gets a reference of its own from a camera of its own
(Object Properties > Mirage > References). Each case opens the saved room again, changes one thing and calls
bpy.ops.mirage.generate() as a script would; RESULT.json gets the error line, notices and what job.json says.
The panel is drawn with a recording layout, the add and remove buttons are pressed, and the add-on is disabled
at the end to see its properties go.
"""
import importlib
import json
import os
import sys
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenario  # noqa: E402,F401  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

PKG = "bl_ext.user_default.mirage_blender"
W, H = 64, 36


class Layout:
    """Records what a panel's draw() asks for (a UILayout needs a window), checking every property against the
    real RNA struct and every operator and list against the registered ones."""

    def __init__(self, log):
        self.log = log
        self.enabled, self.use_property_split, self.use_property_decorate = True, False, False

    def _child(self, *args, **kw):
        return Layout(self.log)
    row = column = box = split = _child

    def label(self, text="", icon="NONE"):
        self.log.append(["label", text])

    def prop(self, data, name, **kw):
        if name not in data.bl_rna.properties:
            raise AttributeError(f"{type(data).__name__} has no property {name}")
        self.log.append(["prop", name])

    def operator(self, idname, text="", icon="NONE"):
        module, name = idname.split(".")
        if not hasattr(bpy.types, f"{module.upper()}_OT_{name}"):
            raise AttributeError(f"no operator {idname}")
        self.log.append(["operator", idname])

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, rows=5):
        if not hasattr(bpy.types, list_type) or prop not in data.bl_rna.properties \
                or active_prop not in active_data.bl_rna.properties:
            raise AttributeError(f"no list {list_type} of {prop}")
        self.log.append(["list", list_type, prop])


def draw(panel_cls, context):
    log = []
    panel_cls.draw(types.SimpleNamespace(layout=Layout(log)), context)
    return log


def main():
    zip_path, out, result_path = sys.argv[1:4]
    scenes.install_extension(zip_path)
    results = {"registered": [hasattr(bpy.types.Object, p) for p in ("mirage_references", "mirage_references_index")]}
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {}
    for name, size in (("set", (H, W)), ("crate", (H, W)), ("square", (W, W))):
        images[name] = os.path.join(out, f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images[name])

    scene = scenes.build_room(W, H, 4)
    s = scene.mirage
    s.reference_image = images["set"]
    s.segment_length = 2
    s.device = "CPU"
    s.model = "patch"  # the classical model: quick, and what the job says does not depend on it
    cam = bpy.data.objects.new("CrateCam", bpy.data.cameras.new("CrateCam"))
    cam.data.lens = 24
    scene.collection.objects.link(cam)
    scenes.set_camera(cam, (2.2, -1.0, 1.2), 80, 0)  # the crate from in front, a camera of no frame

    # the panel and its buttons, as a user finds them
    ui, ops = importlib.import_module(PKG + ".ui"), importlib.import_module(PKG + ".ops")
    crate = bpy.data.objects["Crate"]
    bpy.context.view_layer.objects.active = crate
    scene.frame_set(3)
    context = types.SimpleNamespace(object=crate, scene=scene)
    results["panel"] = {"poll": [ui.MIRAGE_PT_object.poll(types.SimpleNamespace(object=ob, scene=scene))
                                 for ob in (crate, cam)],
                        "empty": draw(ui.MIRAGE_PT_object, context)}
    with bpy.context.temp_override(object=crate):
        results["panel"]["remove_without_any"] = bpy.ops.mirage.object_reference_remove.poll()
        bpy.ops.mirage.object_reference_add()
        bpy.ops.mirage.object_reference_add()
        added = [(r.camera.name if r.camera else None, r.frame) for r in crate.mirage_references]
        results["panel"]["with_two"] = draw(ui.MIRAGE_PT_object, context)
        crate.mirage_references_index = 0
        bpy.ops.mirage.object_reference_remove()
    results["panel"]["added"] = added
    results["panel"]["left"] = len(crate.mirage_references)
    s.depth_source = "PLANE"
    results["panel"]["plane"] = draw(ui.MIRAGE_PT_object, context)
    s.depth_source = "SCENE"
    crate.mirage_references.clear()

    item = crate.mirage_references.add()
    item.image, item.camera, item.frame = images["crate"], cam, 2
    scene.frame_set(1)
    base = os.path.join(out, "base.blend")
    bpy.ops.wm.save_as_mainfile(filepath=base)
    notices = []
    make = ops._generation

    def keep(context, op):  # the operator's Generation, for its notices
        gen = make(context, op)
        notices.append(gen)
        return gen
    ops._generation = keep

    def run(name, setup=None):
        bpy.ops.wm.open_mainfile(filepath=base)
        scene = bpy.context.scene
        scene.mirage.output_dir = os.path.join(out, name)
        if setup:
            setup(scene, bpy.data.objects["Crate"])
        notices.clear()
        error = None
        try:
            bpy.ops.mirage.generate()
        except RuntimeError as e:
            error = str(e)
        except Exception:
            error = "UNEXPECTED " + traceback.format_exc()
        job_path = os.path.join(out, name, "job.json")
        job = None
        if os.path.isfile(job_path):
            with open(job_path) as f:
                job = json.load(f)
        geometry = importlib.import_module(PKG + ".gather.geometry")
        results[name] = {"error": error, "notices": notices[-1].notices if notices else [], "job": job,
                         "part_numbers": geometry.part_numbers(scene),
                         "frames": sorted(os.listdir(os.path.join(out, name, "frames")))
                         if os.path.isdir(os.path.join(out, name, "frames")) else []}
        if job:
            parts = {}
            for i, r in enumerate(job.get("references", [])):
                if "parts" in r:
                    parts[i] = sorted(int(v) for v in np.unique(np.load(os.path.join(out, name, r["parts"]))))
            results[name]["reference_parts"] = parts
        with open(result_path, "w") as f:
            json.dump(results, f)

    run("ok")

    def no_camera(scene, crate):
        crate.mirage_references.add().image = images["crate"]
    run("no_camera", no_camera)

    def no_image(scene, crate):
        crate.mirage_references.add().camera = scene.camera
    run("no_image", no_image)

    def square(scene, crate):
        crate.mirage_references[0].image = images["square"]
    run("square", square)
    run("hidden", lambda scene, crate: setattr(crate, "hide_render", True))
    run("plane", lambda scene, crate: setattr(scene.mirage, "depth_source", "PLANE"))

    def on_an_empty(scene, crate):
        empty = bpy.data.objects.new("Marker", None)
        scene.collection.objects.link(empty)
        item = empty.mirage_references.add()
        item.image, item.camera = images["crate"], scene.camera
    run("empty", on_an_empty)

    def looks_away(scene, crate):  # the crate behind its camera
        crate.mirage_references[0].camera.rotation_euler[2] = 3.14159
    run("looks_away", looks_away)

    bpy.ops.preferences.addon_disable(module=PKG)
    results["unregistered"] = [hasattr(bpy.types.Object, p) for p in ("mirage_references", "mirage_references_index")]
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    scenes.run_script(main)
