"""The demo: install the built extension in a fresh Blender session, build a procedural room with an
animated camera, render a reference frame, Generate headless (which also writes flythrough.mp4), and save
the result.

Writes out/demo/: frames/*.png, flythrough.mp4, demo.blend (strips in its VSE), run.json, job.json, and
contact_sheet.png: frames spread over the path, what the reference never showed outlined, beside the same job
run with the smooth-fill model (compact) for comparison.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

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
    print(f"wrote {contact_sheet(out)}", flush=True)


def contact_sheet(out):
    """The demo's frames beside the same job with the smooth-fill model, never-seen pixels outlined."""
    import metrics
    import sheet
    from PIL import Image
    with open(os.path.join(out, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    compare = os.path.join(out, "compare_compact")
    shutil.rmtree(compare, ignore_errors=True)
    os.makedirs(compare)
    shutil.copytree(os.path.join(out, "inputs"), os.path.join(compare, "inputs"))
    with open(os.path.join(compare, "job.json"), "w", encoding="utf-8") as f:
        json.dump(dict(job, model="compact"), f)
    python = os.environ.get("MIRAGE_BACKEND_PYTHON") or sys.executable
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([python, "-m", "backend", "run", os.path.join(compare, "job.json")], cwd=root, check=True,
                   stdout=subprocess.DEVNULL)
    views = {f["frame"]: (np.load(os.path.join(out, f["depth"])).astype(np.float64), np.array(f["K"]),
                          np.array(f["cam_to_world"])) for f in job["frames"]}
    ref = views[job["reference"]["frame"]]
    frames = sheet.spread(sorted(views), count=6)
    masks = {n: metrics.unseen(*views[n], [ref]) for n in frames}

    def row(folder):
        return {n: np.asarray(Image.open(os.path.join(folder, "frames", f"{n:06d}.png")).convert("RGB")) / 255.0
                for n in frames}
    return sheet.contact_sheet(os.path.join(out, "contact_sheet.png"), frames,
                               [("Built-in\n(invents)", row(out)), ("Compact\n(smooth fill)", row(compare))],
                               masks, title="Mirage demo: outlined, what the reference never showed")


if __name__ == "__main__":
    main()
