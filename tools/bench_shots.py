"""The shots bench: many shots of one set (python3 build.py bench-shots [--quick]).

A fresh Blender (bpy) session installs the built extension, builds the two-shot room of tools/shot_scenes.py,
renders its ground truth with Cycles (cached) and a second reference from a camera of its own, and runs the
add-on's Generate four times: both shots chained and both shots in parallel (each from the references alone),
then shot A alone with one reference and with both. This process then measures:

* cross-shot self-consistency: each frame of shot B against the frame of shot A that sees most of the same
  surface, warped into B with exact depth (PSNR over the pixels both see); on all of them, and on those no
  reference shows (what Mirage invented), and those again away from outlines (the latent cells that straddle a
  depth edge in either frame: the memory never stores them, so every frame fills them afresh). The ground
  truth's own figure (its frame B against its frame A, warped alike) is the yardstick: resampling, shading that
  depends on the view and render noise keep it finite.
* the second reference: shot A's pixels that only the second reference shows, against the ground truth, with
  and without it; beside them the PSNR of what the first reference shows (what seen content scores).

Writes <out>/report.md and report.json (docs/benchmarks.md, "Shots of one set").
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VERSION = 1  # bump when the scene or the runs change, so cached ground truth is rendered again
SPECS = {
    "quick": {"width": 128, "height": 72, "frames_a": 12, "frames_b": 8, "segment_length": 4},
    "full": {"width": 256, "height": 144, "frames_a": 24, "frames_b": 16, "segment_length": 8},
}
SAMPLES, DENOISE = 16, True  # as the main bench's ground truth
REF2_CAMERA = ((-0.5, -3.0, 1.6), (85, 60))  # the second reference: towards what the first one never saw
RUNS = ("chained", "parallel", "one_reference", "two_references")
TARGETS = {
    "cross_shot_gap_db": ("chained shots' cross-shot PSNR on invented content within 1.5 dB of the ground "
                          "truth's own", "<=", 1.5),
    "cross_shot_surface_gap_db": ("... the same away from outlines (cells on a depth edge)", "<=", 1.5),
    "cross_shot_gain_db": ("chained above independent (parallel) shots on invented content, clearly: 3 dB",
                           ">=", 3.0),
    "second_reference_gap_db": ("what only the second reference shows scores within 1.5 dB of what the first "
                                "shows (covisible level)", "<=", 1.5),
}
MIN_OVERLAP = 0.02  # a frame pair counts when they share this share of B's pixels (invented ones)


def log(msg):
    print(f"[bench-shots {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------
# The Blender side: a fresh bpy subprocess.
# ---------------------------------------------------------------------------------------------------
def blender_session(task_path):
    with open(task_path, encoding="utf-8") as f:
        task = json.load(f)
    sys.path.insert(0, HERE)
    import math

    import scenes
    import shot_scenes
    import bpy
    scenes.install_extension(task["zip"])
    spec = task["spec"]
    scene = shot_scenes.build_two_shots(spec["width"], spec["height"], spec["frames_a"], spec["frames_b"])
    ref_cam = bpy.data.objects.new("Reference2", bpy.data.cameras.new("Reference2"))
    ref_cam.data.lens = scene.camera.data.lens
    ref_cam.location = REF2_CAMERA[0]
    ref_cam.rotation_euler = (math.radians(REF2_CAMERA[1][0]), 0.0, math.radians(REF2_CAMERA[1][1]))
    scene.collection.objects.link(ref_cam)
    cache = task["cache"]
    os.makedirs(cache, exist_ok=True)
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = SAMPLES
    scene.cycles.use_denoising = DENOISE
    r.image_settings.file_format = "PNG"
    t0 = time.perf_counter()
    rendered = 0

    def render(path):
        nonlocal rendered
        if not os.path.isfile(path):
            r.filepath = path + ".part.png"
            bpy.ops.render.render(write_still=True)
            os.replace(path + ".part.png", path)
            rendered += 1
    for n in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(n)  # the camera markers switch the render camera, shot by shot
        render(os.path.join(cache, f"{n:06d}.png"))
    # the second reference, through its own camera on frame 1 (the markers would switch the camera back)
    cameras = [(m, m.camera) for m in scene.timeline_markers]
    for m, _ in cameras:
        m.camera = None
    scene.frame_set(1)
    scene.camera = ref_cam
    render(os.path.join(cache, "reference2.png"))
    for m, cam in cameras:
        m.camera = cam
    scene.frame_set(1)
    result = {"gt_rendered": rendered, "gt_seconds": round(time.perf_counter() - t0, 2), "generate_seconds": {}}

    s = scene.mirage
    s.reference_image = os.path.join(cache, f"{scene.frame_start:06d}.png")
    s.segment_length = spec["segment_length"]
    s.device = "CPU"
    for run in RUNS:
        s.output_dir = os.path.join(task["out"], run)
        s.shot_mode = "PARALLEL" if run == "parallel" else "CHAINED"
        if run == "two_references":
            item = s.references.add()
            item.image, item.camera, item.frame = os.path.join(cache, "reference2.png"), ref_cam, 1
        t0 = time.perf_counter()
        ret = bpy.ops.mirage.generate(shot="A" if run.endswith("references") else "")
        result["generate_seconds"][run] = round(time.perf_counter() - t0, 2)
        if ret != {"FINISHED"}:
            result["error"] = f"{run}: {bpy.context.window_manager.mirage.text}"
            break
    with open(task["result"], "w") as f:
        json.dump(result, f)
    return 0 if "error" not in result else 1


# ---------------------------------------------------------------------------------------------------
# The bench process: metrics and report.
# ---------------------------------------------------------------------------------------------------
def load_rgb(path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def cameras(job_dir):
    """frame -> (K, cam_to_world, depth) of a job folder's frames, and its references' (K, c2w, depth, image)."""
    import numpy as np
    from backend import protocol
    job = protocol.load_job(os.path.join(job_dir, "job.json"))[0]
    frames = {f.frame: (np.array(f.K), np.array(f.cam_to_world), np.load(f.maps.depth).astype(np.float64))
              for f in job.frames}
    refs = []
    for ref in job.references:
        view = ref.view or next(f for f in job.frames if f.frame == ref.frame)
        refs.append((np.array(view.K), np.array(view.cam_to_world), np.load(view.maps.depth).astype(np.float64), ref.image))
    return frames, refs


class Pooled:
    """Squared errors pooled over many masks: one PSNR at the end."""

    def __init__(self):
        self.sq, self.n = 0.0, 0

    def add(self, a, b, mask):
        import metrics
        k = int(mask.sum())
        if k:
            self.sq += metrics.mse(a, b, mask) * k
            self.n += k

    def psnr(self):
        import metrics
        return metrics.psnr_from_mse(self.sq / self.n) if self.n else None


def outline_pixels(depth, cell):
    """[H, W] bool: the pixels of latent cells that straddle a depth edge (backend.memory.cell_edges)."""
    import numpy as np
    import torch
    from backend.memory import cell_edges
    H, W = depth.shape
    padded = np.pad(depth, ((0, (-H) % cell), (0, (-W) % cell)), mode="edge")
    edges = cell_edges(torch.from_numpy(padded), cell).numpy()
    return np.kron(edges, np.ones((cell, cell), bool))[:H, :W].astype(bool)


def cross_shot(out_root, cache):
    """Each frame of B against the frame of A that sees most of what B sees and no reference shows."""
    import numpy as np
    import metrics
    from backend import protocol
    shot_a, refs = cameras(os.path.join(out_root, "chained", "A"))
    shot_b, _ = cameras(os.path.join(out_root, "chained", "B"))
    K1, c1, d1, _ = refs[0]
    with open(os.path.join(out_root, "chained", "A", "run.json")) as f:
        run = json.load(f)
    cell = -(-run["width"] // run["latent"][2])  # the model's cell: pixels per latent cell
    images = {"gt": lambda shot, n: load_rgb(os.path.join(cache, f"{n:06d}.png"))}
    for run in ("chained", "parallel"):
        images[run] = (lambda run: lambda shot, n: load_rgb(os.path.join(out_root, run, shot, "frames",
                                                                          protocol.frame_filename(n))))(run)
    pooled = {m: {"all": Pooled(), "invented": Pooled(), "invented_surfaces": Pooled()} for m in images}
    truth = {m: Pooled() for m in ("chained", "parallel")}  # B's invented pixels against the ground truth
    pairs = []
    for b, (Kb, cb, db) in shot_b.items():
        seen = metrics.covisible(d1, K1, c1, db, Kb, cb)
        best = None
        for a, (Ka, ca, da) in shot_a.items():
            valid = metrics.covisible(da, Ka, ca, db, Kb, cb)
            share = float((valid & ~seen).mean())
            if best is None or share > best[0]:
                best = (share, a, valid)
        share, a, valid = best
        if share < MIN_OVERLAP:
            continue
        pairs.append({"b": b, "a": a, "shared": round(float(valid.mean()), 4), "invented_shared": round(share, 4)})
        Ka, ca, da = shot_a[a]
        outline_a = np.repeat(outline_pixels(da, cell)[..., None].astype(np.float64), 3, -1)
        outline = outline_pixels(db, cell) | (metrics.backward_warp(outline_a, da, Ka, ca, db, Kb, cb)[0][..., 0] > 0)
        for m, get in images.items():
            warped, ok = metrics.backward_warp(get("A", a), da, Ka, ca, db, Kb, cb)
            frame_b = get("B", b)
            pooled[m]["all"].add(frame_b, warped, ok)
            pooled[m]["invented"].add(frame_b, warped, ok & ~seen)
            pooled[m]["invented_surfaces"].add(frame_b, warped, ok & ~seen & ~outline)
            if m in truth:
                truth[m].add(frame_b, images["gt"]("B", b), ok & ~seen)
    out = {m: {k: p.psnr() for k, p in v.items()} for m, v in pooled.items()}
    for m, p in truth.items():
        out[m]["invented_vs_ground_truth"] = p.psnr()
    share = pooled["gt"]["invented_surfaces"].n / max(pooled["gt"]["invented"].n, 1)
    return {"psnr_db": out, "pairs": pairs, "cell": cell, "surface_share": round(share, 4)}


def second_reference(out_root, cache):
    """Shot A with one reference and with two: PSNR on what only the second shows, and on what the first shows."""
    import metrics
    from backend import protocol
    frames, refs = cameras(os.path.join(out_root, "two_references", "A"))
    (K1, c1, d1, _), (K2, c2, d2, _) = refs
    acc = {run: {"second_only": Pooled(), "first": Pooled()} for run in ("one_reference", "two_references")}
    pixels = 0
    for n, (K, c, d) in frames.items():
        if n == min(frames):
            continue  # the reference's own frame
        first = metrics.covisible(d1, K1, c1, d, K, c)
        only = metrics.covisible(d2, K2, c2, d, K, c) & ~first
        pixels += int(only.sum())
        gt = load_rgb(os.path.join(cache, f"{n:06d}.png"))
        for run in acc:
            img = load_rgb(os.path.join(out_root, run, "A", "frames", protocol.frame_filename(n)))
            acc[run]["second_only"].add(img, gt, only)
            acc[run]["first"].add(img, gt, first)
    return {"psnr_db": {run: {k: p.psnr() for k, p in v.items()} for run, v in acc.items()},
            "second_only_pixels": pixels}


def targets(cs, sr):
    def row(key, value):
        label, op, bound = TARGETS[key]
        ok = None if value is None else (value <= bound if op == "<=" else value >= bound)
        return {"target": label, "value": value, "pass": ok}
    p = cs["psnr_db"]

    def below_truth(key):
        return None if None in (p["gt"].get(key), p["chained"].get(key)) else p["gt"][key] - p["chained"][key]
    gap, surface_gap = below_truth("invented"), below_truth("invented_surfaces")
    gain = (None if None in (p["chained"]["invented"], p["parallel"]["invented"])
            else p["chained"]["invented"] - p["parallel"]["invented"])
    q = sr["psnr_db"]
    ref_gap = (None if None in (q["one_reference"]["first"], q["two_references"]["second_only"])
               else q["one_reference"]["first"] - q["two_references"]["second_only"])
    return {"cross_shot_gap_db": row("cross_shot_gap_db", gap),
            "cross_shot_surface_gap_db": row("cross_shot_surface_gap_db", surface_gap),
            "cross_shot_gain_db": row("cross_shot_gain_db", gain),
            "second_reference_gap_db": row("second_reference_gap_db", ref_gap)}


def fmt(x):
    return "n/a" if x is None else f"{x:.2f}"


def write_report(out_root, meta, cs, sr, tg):
    p, q = cs["psnr_db"], sr["psnr_db"]
    L = [f"# Mirage shots bench ({meta['mode']} mode)", "",
         f"{meta['spec']['width']}x{meta['spec']['height']}, shot A {meta['spec']['frames_a']} frames, shot B "
         f"{meta['spec']['frames_b']} frames, segments of {meta['spec']['segment_length']}; {meta['machine']}; "
         f"{meta['date']}, {meta['seconds']:.0f} s", "",
         "## Targets", "", "| target | value | pass |", "|---|---|---|"]
    for row in tg.values():
        L.append(f"| {row['target']} | {fmt(row['value'])} dB | "
                 f"{'n/a' if row['pass'] is None else ('PASS' if row['pass'] else 'MISS')} |")
    L += ["", "## Cross-shot self-consistency (frame of B against the frame of A that sees the same surface)", "",
          "| shots | PSNR dB, all shared pixels | PSNR dB, shared pixels no reference shows | the same away from "
          "outlines | B's invented pixels against the ground truth |", "|---|---|---|---|---|"]
    for m, label in (("gt", "ground truth (its own consistency)"), ("chained", "Mirage, chained"),
                     ("parallel", "Mirage, independent (parallel)")):
        L.append(f"| {label} | {fmt(p[m]['all'])} | {fmt(p[m]['invented'])} | {fmt(p[m]['invented_surfaces'])} | "
                 f"{fmt(p[m].get('invented_vs_ground_truth')) if m != 'gt' else ''} |")
    L += ["", f"Away from outlines: {100 * cs['surface_share']:.1f} % of the shared invented pixels (the rest lie in "
              f"{cs['cell']}x{cs['cell']} cells on a depth edge in either frame)."]
    pairs = ", ".join(f"{x['b']}~{x['a']} ({x['shared']:.2f}, {x['invented_shared']:.2f})" for x in cs["pairs"])
    L += ["", f"Frame pairs (B frame ~ A frame; share of B's pixels both see, of those no reference shows): {pairs}.",
          "", "## A second reference", "",
          f"{sr['second_only_pixels']} pixel-frames of shot A show what only the second reference shows.", "",
          "| references | PSNR dB where only the second shows | PSNR dB where the first shows |", "|---|---|---|"]
    for run, label in (("one_reference", "the first only"), ("two_references", "both")):
        L.append(f"| {label} | {fmt(q[run]['second_only'])} | {fmt(q[run]['first'])} |")
    with open(os.path.join(out_root, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", help="the built extension zip (build.py passes it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench", "shots"))
    ap.add_argument("--quick", action="store_true", help="128x72, 20 frames")
    ap.add_argument("--cache", help="ground-truth cache folder (default <out>/cache)")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the runs an earlier bench left in --out again, without Blender")
    ap.add_argument("--blender-session", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.blender_session:
        return blender_session(args.blender_session)
    if not args.zip:
        ap.error("--zip is required (python3 build.py bench-shots passes it)")
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    t_start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    spec = SPECS[mode]
    out_root = os.path.abspath(args.out)
    key = json.dumps({"spec": spec, "samples": SAMPLES, "denoise": DENOISE, "version": VERSION,
                      "ref2": REF2_CAMERA}, sort_keys=True)
    cache = os.path.abspath(args.cache or os.path.join(out_root, "cache",
                                                       f"{mode}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"))
    import bpy_session
    task = {"zip": os.path.abspath(args.zip), "spec": spec, "cache": cache, "out": out_root,
            "result": os.path.join(out_root, "blender_result.json")}
    rc = 0
    if not args.measure_only:
        for run in RUNS:
            shutil.rmtree(os.path.join(out_root, run), ignore_errors=True)  # fresh runs: never resume older ones
        os.makedirs(out_root, exist_ok=True)
        log("Blender session (install zip, build the two shots, Cycles ground truth, four Generates)")
        rc = bpy_session.launch(__file__, task, out_root)
    bres = bpy_session.result(task) or {}
    if rc != 0 or "error" in bres or not bres:
        raise SystemExit(f"bench-shots: the Blender session failed ({bres.get('error')}); see "
                         f"{os.path.join(out_root, 'blender.log')}")
    log(f"{bres['gt_rendered']} ground-truth images rendered in {bres['gt_seconds']} s; Generate: {bres['generate_seconds']}")
    import torch
    torch.set_num_threads(1)  # many small ops (see tools/bench.py)
    cs = cross_shot(out_root, cache)
    sr = second_reference(out_root, cache)
    tg = targets(cs, sr)
    meta = {"mode": mode, "spec": spec, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "blender": bres,
            "seconds": time.perf_counter() - t_start}
    with open(os.path.join(out_root, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "targets": tg, "cross_shot": cs, "second_reference": sr}, f, indent=1)
    write_report(out_root, meta, cs, sr, tg)
    for row in tg.values():
        log(f"{'PASS' if row['pass'] else 'MISS'}  {row['target']}: {fmt(row['value'])}")
    log(f"report: {os.path.join(out_root, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
