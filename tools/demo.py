"""The demo: install the built extension in a fresh Blender session, build a procedural room with an
animated camera, render a reference frame, Generate headless (which also writes flythrough.mp4), and save
the result.

Writes out/demo/: frames/*.png, flythrough.mp4, demo.blend (strips in its VSE), run.json, job.json.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402

import bpy  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zip", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    scenes.install_extension(os.path.abspath(args.zip))
    scene = scenes.build_room(frames=args.frames, moving_crate=True)
    t = time.perf_counter()
    ref = scenes.render_reference(scene, os.path.join(out, "reference.png"), samples=32)
    print(f"reference rendered in {time.perf_counter() - t:.1f} s", flush=True)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "demo.blend"))
    s = scene.mirage
    s.reference_image = ref
    s.output_dir = out
    s.segment_length = 16
    t = time.perf_counter()
    bpy.ops.mirage.generate()
    print(f"generated {args.frames} frames in {time.perf_counter() - t:.1f} s (export + backend)", flush=True)
    if not os.path.isfile(os.path.join(out, "flythrough.mp4")):  # Generate's Write MP4 (on by default)
        raise SystemExit("Generate finished without writing flythrough.mp4")
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "demo.blend"))
    print(f"wrote {out}/flythrough.mp4, demo.blend, run.json", flush=True)


if __name__ == "__main__":
    main()
