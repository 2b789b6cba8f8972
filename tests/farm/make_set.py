"""The two-shot set of tools/shot_scenes.py saved as a .blend, its reference image beside it (run inside the
stand-in blender: blender --python make_set.py -- FOLDER [PARALLEL]).

The reference is an absolute path and the output folder "//mirage/": copies of the .blend in other folders share
the reference (shared storage) and each write their own frames."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import scenes  # noqa: E402
import shot_scenes  # noqa: E402
import bpy  # noqa: E402

args = sys.argv[sys.argv.index("--") + 1:]
folder = os.path.abspath(args[0])
os.makedirs(folder, exist_ok=True)
scene = shot_scenes.build_two_shots(64, 36, 4, 4)
ref = os.path.join(folder, "reference.png")
scenes.render_reference(scene, ref, samples=2)
s = scene.mirage
s.reference_image, s.segment_length, s.device, s.output_dir = ref, 2, "CPU", "//mirage/"
if len(args) > 1:
    s.shot_mode = args[1]
scene.frame_set(3)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "set.blend"))
