"""Surface addresses through the real add-on: a Generate on a room with an object that deforms (shape keys) and
one that keeps its user's rest-position setting on, in ONE bpy session.

  python address_cases.py ZIP OUT_DIR RESULT.json

RESULT.json gets each object's add_rest_position_attribute before and after Generate, the error line, and for the
first and last frame the deforming object's addresses (their spread along the axis its rest shape is flat in) and
its world points' spread along the same axis.
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenario  # noqa: E402,F401  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

W, H = 64, 36


def flag(name, location, flat_y=True):
    """A 6 x 6 grid flat in its own XZ plane whose shape key bends it along y."""
    mesh = bpy.data.meshes.new(name)
    xs = np.linspace(-0.8, 0.8, 7)
    verts = [(x, 0.0, z) for z in xs for x in xs]
    faces = [(r * 7 + c, r * 7 + c + 1, (r + 1) * 7 + c + 1, (r + 1) * 7 + c) for r in range(6) for c in range(6)]
    mesh.from_pydata(verts, [], faces)
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    ob.location = location
    ob.shape_key_add(name="Basis")
    wave = ob.shape_key_add(name="Wave")
    for i, v in enumerate(mesh.vertices):
        wave.data[i].co = (v.co.x, 0.5 * math.sin(3.0 * v.co.x), v.co.z)
    wave.value = 0.0
    wave.keyframe_insert("value", frame=1)
    wave.value = 1.0
    wave.keyframe_insert("value", frame=4)
    return ob


def main():
    zip_path, out, result_path = sys.argv[1:4]
    scenes.install_extension(zip_path)
    os.makedirs(out, exist_ok=True)
    scene = scenes.build_room(W, H, 4)
    image = os.path.join(out, "reference.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image)
    s = scene.mirage
    s.reference_image, s.segment_length, s.device, s.model = image, 2, "CPU", "patch"
    s.output_dir = os.path.join(out, "run")
    a = flag("FlagA", (-1.5, 1.0, 1.0))
    b = flag("FlagB", (0.8, 1.5, 1.0))
    b.add_rest_position_attribute = True  # the user's own setting, kept
    before = {ob.name: ob.add_rest_position_attribute for ob in (a, b)}
    error = None
    try:
        bpy.ops.mirage.generate()
    except RuntimeError as e:
        error = str(e)
    after = {ob.name: ob.add_rest_position_attribute for ob in (a, b)}
    result = {"before": before, "after": after, "error": error, "frames": {}}
    if error is None:
        with open(os.path.join(s.output_dir, "job.json")) as f:
            job = json.load(f)
        names = {o["name"]: o["id"] for o in job.get("objects", [])}
        result["objects"] = sorted(names)
        for fr in (job["frames"][0], job["frames"][-1]):
            run = s.output_dir
            ids = np.load(os.path.join(run, fr["ids"]))
            rest = np.load(os.path.join(run, fr["rest"]))
            depth = np.load(os.path.join(run, fr["depth"]))
            K, c2w = np.array(fr["K"]), np.array(fr["cam_to_world"])
            v, u = np.nonzero(ids == names["FlagA"])
            z = depth[v, u].astype(np.float64)
            cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
            pose = np.array(fr["objects"][str(names["FlagA"])])
            world = cam @ c2w[:3, :3].T + c2w[:3, 3]
            local = (world - pose[:3, 3]) @ pose[:3, :3]  # the bent flag in its own space
            result["frames"][str(fr["frame"])] = {"pixels": int(len(u)),
                                                  "rest_y": float(np.abs(rest[v, u, 1]).max()),
                                                  "local_y": float(np.abs(local[:, 1]).max())}
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
