"""The demo: install the built extension in a fresh Blender session, build a procedural room with an
animated camera, a sliding crate and a walking character, render a reference frame, Generate headless (which
also writes flythrough.mp4), and save the result.

Writes out/demo/: frames/*.png, flythrough.mp4, demo.blend (strips in its VSE), run.json, job.json, and
contact_sheet.png: frames spread over the path, what the reference never showed outlined, beside the same job
run with the smooth-fill model (compact) for comparison; then Bake to Materials: demo_baked.blend (the scene with
the memory baked into its materials) and baked_render.png (it rendered with Cycles on the shot's middle frame).
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


DEMO_WALK = [(-2.6, -1.2), (-1.0, -2.2), (0.8, -2.0), (1.6, -0.8)]  # ground points, in view of the camera


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
    scenes.add_walker(scene, DEMO_WALK, args.frames)  # the bench's walking character, skinned to its armature
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
    print(f"wrote {bake_and_render(out)}", flush=True)


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


def bake_and_render(out, size=1024):
    """Bake to Materials (Look, size x size texels per object) on the generated scene, saved as demo_baked.blend,
    and rendered with Cycles from the camera on the shot's middle frame: baked_render.png, beside the flythrough's
    own frame (its PSNR against it printed)."""
    from PIL import Image
    scene = bpy.context.scene
    t = time.perf_counter()
    bpy.ops.mirage.bake_memory(mode="LOOK", resolution=size)
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        generated = json.load(f)["seconds"]
    print(f"baked at {size}x{size} per object in {time.perf_counter() - t:.1f} s (the backend's Generate took "
          f"{generated:.1f} s)", flush=True)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "demo_baked.blend"), copy=True)
    frame = (scene.frame_start + scene.frame_end) // 2
    r, v = scene.render, scene.view_settings
    saved = (r.engine, r.filepath, r.use_sequencer, r.use_compositing, v.view_transform, v.look, scene.frame_current)
    r.engine, r.use_sequencer, r.use_compositing = "CYCLES", False, False
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 32, False
    v.view_transform, v.look = "Standard", "None"  # an emission then shows its own colour
    r.image_settings.file_format = "PNG"
    r.filepath = os.path.join(out, "baked_render.png")
    scene.frame_set(frame)
    bpy.ops.render.render(write_still=True)
    r.engine, r.filepath, r.use_sequencer, r.use_compositing, v.view_transform, v.look, now = saved
    scene.frame_set(now)
    baked = np.asarray(Image.open(os.path.join(out, "baked_render.png")).convert("RGB"), np.float64) / 255
    shown = np.asarray(Image.open(os.path.join(out, "frames", f"{frame:06d}.png")).convert("RGB"), np.float64) / 255
    with open(os.path.join(out, "job.json"), encoding="utf-8") as f:
        depth = next(fr["depth"] for fr in json.load(f)["frames"] if fr["frame"] == frame)
    geometry = np.isfinite(np.load(os.path.join(out, depth)))
    psnr = 10 * np.log10(1.0 / np.mean((baked[geometry] - shown[geometry]) ** 2))
    print(f"the baked scene rendered on frame {frame}: {psnr:.2f} dB against the flythrough's frame", flush=True)
    return os.path.join(out, "baked_render.png")


if __name__ == "__main__":
    main()
