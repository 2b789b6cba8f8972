"""Shots of one set through the real add-on, many cases in ONE bpy session (starting bpy costs seconds).

  python shots_cases.py ZIP OUT_DIR RESULT.json

The two-shot room of tools/shot_scenes.py is saved once; each case opens it again (or the file an earlier case
saved), changes one thing, calls bpy.ops.mirage.generate() as a script would (or drives it like the UI), and
writes what it saw: the error line, notices, status, strips, what the shots' job folders hold.
"""
import hashlib
import importlib
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scenario import scene_state  # noqa: E402  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import shot_scenes  # noqa: E402
import bpy  # noqa: E402

PKG = "bl_ext.user_default.mirage_blender"


def digests(folder):
    """relative path -> sha256 of every file below a folder."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def job_summary(folder):
    path = os.path.join(folder, "job.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        job = json.load(f)
    run = {}
    if os.path.isfile(os.path.join(folder, "run.json")):
        with open(os.path.join(folder, "run.json")) as f:
            run = json.load(f)
    return {"frames": [fr["frame"] for fr in job["frames"]], "reference": job.get("reference"),
            "references": [r["frame"] for r in job.get("references", [])], "start": job.get("start"),
            "references_scene_depth": [r.get("scene_depth") for r in job.get("references", [])],
            "objects": job.get("objects"), "segment_length": job["segment_length"],
            "run_frames": run.get("frames"), "resumed": run.get("resumed_segments")}


def main():
    zip_path, out, result_path = sys.argv[1:4]
    scenes.install_extension(zip_path)
    ops = importlib.import_module(PKG + ".ops")
    shots = importlib.import_module(PKG + ".shots")
    generation = importlib.import_module(PKG + ".generation")
    made = []
    make = ops._generation

    def keep(context, op):  # the operator's Generation, to read its notices afterwards
        made.append(make(context, op))
        return made[-1]
    ops._generation = keep

    os.makedirs(out, exist_ok=True)
    scene = shot_scenes.build_two_shots(64, 36, 4, 4)
    ref = os.path.join(out, "reference.png")
    scenes.render_reference(scene, ref, samples=2)
    s = scene.mirage
    s.reference_image = ref
    s.segment_length = 2
    s.device = "CPU"
    s.output_dir = os.path.join(out, "all")
    scene.frame_set(3)
    base = os.path.join(out, "base.blend")
    bpy.ops.wm.save_as_mainfile(filepath=base)
    results = {}

    def run(name, setup=None, blend=base, shot="", folder="all", ui=False, generate=True):
        bpy.ops.wm.open_mainfile(filepath=blend)
        scene = bpy.context.scene
        scene.mirage.output_dir = os.path.join(out, folder)
        if setup:
            setup(scene)
        before_files = digests(os.path.join(out, "all"))
        before = scene_state(scene)
        made.clear()
        error, t0, extra = None, time.perf_counter(), {}
        try:
            if not generate:
                pass
            elif ui:
                extra = drive_like_the_ui(generation, scene)
            else:
                bpy.ops.mirage.generate(shot=shot)
        except RuntimeError as e:
            error = str(e)
        except Exception:
            error = "UNEXPECTED " + traceback.format_exc()
        scene = bpy.context.scene
        try:
            found = shots.plan(scene, scene.mirage).shots
        except Exception:  # the markers this case broke
            found = ()
        gen = made[-1] if made else None
        results[name] = {
            "error": error, "seconds": round(time.perf_counter() - t0, 2),
            "status": bpy.context.window_manager.mirage.text, "notices": gen.notices if gen else [],
            "before": before, "after": scene_state(scene),
            "shots": {sh.name: {"frames": list(sh.frames), "state": shots.state(sh), "folder": sh.folder,
                                "job": job_summary(sh.folder)} for sh in found},
            "all_before": before_files, "all_after": digests(os.path.join(out, "all")), **extra}
        with open(result_path, "w") as f:
            json.dump(results, f)
        return scene

    # every shot, chained; then saved for the cases that follow it
    scene = run("all")
    folder = os.path.join(out, "all")
    results["all"]["start_matches"] = (
        digests(os.path.join(folder, "A", "state")).get("memory.safetensors") ==
        digests(os.path.join(folder, "B", "inputs", "start")).get("memory.safetensors"))
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "all.blend"))
    done = os.path.join(out, "all.blend")
    results["all"]["panel"] = draw_panel()
    run("again_b", blend=done, shot="B")
    run("unknown_shot", blend=done, shot="C")
    run("two_markers_one_frame", lambda sc: setattr(sc.timeline_markers.new("C", frame=5), "camera", sc.camera),
        blend=done)
    run("not_a_camera", lambda sc: setattr(sc.timeline_markers.new("C", frame=6), "camera",
                                           bpy.data.objects["Pillar"]), blend=done)
    run("unbound_marker", lambda sc: sc.timeline_markers.new("note", frame=2), blend=done, shot="note")
    run("states_after_a_marker_moved", lambda sc: setattr(sc.timeline_markers["B"], "frame", 4), blend=done,
        generate=False)

    def unbind(sc):
        for m in sc.timeline_markers:
            m.camera = None
    run("plain_markers", unbind, folder="plain")

    def outside(sc):
        item = sc.mirage.references.add()
        item.image, item.camera, item.frame = ref, bpy.data.objects["CameraB"], 40
    run("reference_outside", outside, folder="outside")

    def no_camera(sc):
        sc.mirage.references.add().image = ref
    run("reference_without_camera", no_camera, folder="nocam")
    run("b_before_a", folder="fresh", shot="B")
    run("parallel", lambda sc: setattr(sc.mirage, "shot_mode", "PARALLEL"), folder="parallel")
    run("ui", folder="ui", ui=True)

    def render_in_b(sc):  # the reference is frame 6, in shot B, rendered by Generate
        sc.mirage.reference_source = "RENDER"
        sc.mirage.reference_frame = 6
    run("render_reference", render_in_b, folder="render")

    def monocular(sc):  # depth from the images, with a second reference from shot B's camera
        sc.mirage.depth_source = "MONOCULAR"
        item = sc.mirage.references.add()
        item.image, item.camera, item.frame = ref, bpy.data.objects["CameraB"], 6
    run("monocular_references", monocular, folder="mono")
    # the farm buttons where they cannot work: one line each
    farm_errors = {}
    for name, call in (("submit_flamenco", lambda: bpy.ops.mirage.submit_flamenco()),
                       ("openjd_unsaved", lambda: (bpy.ops.wm.read_homefile(use_empty=True),
                                                   bpy.ops.mirage.write_openjd_job()))):
        bpy.ops.wm.open_mainfile(filepath=done)
        try:
            call()
            farm_errors[name] = None
        except RuntimeError as e:
            farm_errors[name] = str(e)
    results["farm_errors"] = farm_errors
    # shot A's camera changes: A is made again, and B, starting from what A leaves, starts afresh
    run("changed_a", lambda sc: setattr(sc.camera.data, "lens", 26.0), blend=done)


class Layout:
    """Blender's UILayout cannot exist without a window: this one records what a panel's draw() asks for, and
    checks each property against the real RNA struct and each operator against the registered ones."""

    def __init__(self, log):
        self.log = log
        self.enabled, self.use_property_split, self.use_property_decorate, self.operator_context = True, False, False, ""

    def _child(self, *args, **kw):
        return Layout(self.log)
    row = column = box = split = _child

    def label(self, text="", icon="NONE"):
        self.log.append(("label", text))

    def prop(self, data, name, **kw):
        if name not in data.bl_rna.properties:
            raise AttributeError(f"{type(data).__name__} has no property {name}")
        self.log.append(("prop", name))

    def operator(self, idname, text="", icon="NONE"):
        module, name = idname.split(".")
        if not hasattr(bpy.types, f"{module.upper()}_OT_{name}"):
            raise AttributeError(f"no operator {idname}")
        self.log.append(("operator", idname, text))

        class Props:  # what the panel sets on the button
            def __setattr__(self, key, value):
                self.__dict__[key] = value
                Layout_props.append((idname, key, value))
        return Props()

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, rows=5):
        if not hasattr(bpy.types, list_type) or prop not in data.bl_rna.properties:
            raise AttributeError(f"no list {list_type} of {prop}")
        self.log.append(("list", prop))

    def progress(self, **kw):
        self.log.append(("progress",))


Layout_props = []


def draw_panel():
    ui = importlib.import_module(PKG + ".ui")
    log = []
    Layout_props.clear()
    panel = type("Panel", (), {"layout": Layout(log)})()
    ui.MiragePanelMixin.draw(panel, bpy.context)
    return {"drawn": log, "buttons": list(Layout_props)}


def drive_like_the_ui(generation, scene):
    """What the modal operator does on each timer tick, for every shot."""
    prefs = importlib.import_module(PKG + ".prefs")
    gen = generation.Generation(bpy.context, prefs.python_pref())
    ticks = 0
    deadline = time.monotonic() + 300
    while not gen.ended and time.monotonic() < deadline:
        gen.tick(budget=0)
        ticks += 1
        time.sleep(0.005)
    gen.close()
    return {"ui": {"finished": gen.finished, "error": gen.error, "ticks": ticks, "segments_in_vse": gen.segments_in_vse,
                   "status": gen.status}}


if __name__ == "__main__":
    scenes.run_script(main)
