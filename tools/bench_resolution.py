"""The bench's resolution mode: what a flythrough costs at the sizes artists render, beside Cycles.

  python3 build.py bench --resolution 1280x720[,1920x1080,...] [--frames 240] [--segment-length 8] [--model builtin]

For each size a fresh Blender (bpy) session installs the built extension zip, builds the bench's pillar room at
that size with a FRAMES-frame shot, renders its first frame with Cycles (16 samples, denoised: the bench's
ground-truth settings), takes that render as the reference and runs Generate the way `blender -b` does (the
export streamed into the backend process), noting when the export ends and when each segment lands in the
Sequencer. Then this process runs the same job.json again through the product's segment loop on its first
segments with every stage timed (read, draw, decode, fill, encode, write, PNG, ...). One report per size in
<out>/resolution/<W>x<H>.json; report.md and seconds_per_frame_vs_pixels.png cover every size measured there.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKG = "bl_ext.user_default.mirage_blender"
SAMPLES = 16      # the bench's Cycles settings (tools/bench.py)
DENOISE = True

TARGETS = {
    "cycles_ratio": ("1280x720: at least 80x faster than a Cycles frame at 16 samples", ">=", 80.0, "1280x720"),
    "pixel_cost": ("1920x1080 s/frame at most 2.7x the 1280x720 s/frame", "<=", 2.7, "1920x1080"),
    "first_segment": ("time to the first segment at most 3x one segment's generation", "<=", 3.0, "1280x720"),
    "flat": ("s/frame in segment 20 at most 1.1x segment 2", "<=", 1.1, None),
    "rss_1080p": ("backend peak RSS at 1920x1080 under 3 GB", "<=", 3e9, "1920x1080"),
}


def log(msg):
    print(f"[bench-resolution {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The Blender side: a fresh bpy subprocess per size.
# ---------------------------------------------------------------------------------------------------------
def blender_session(task_path):
    with open(task_path, encoding="utf-8") as f:
        task = json.load(f)
    sys.path.insert(0, HERE)
    import importlib

    import scenes
    import bpy
    W, H, frames = task["width"], task["height"], task["frames"]
    scenes.install_extension(task["zip"])
    scene = scenes.build_pillar_revisit(W, H, frames)
    os.makedirs(task["out"], exist_ok=True)
    reference = os.path.join(task["out"], "cycles_frame1.png")
    scene.frame_set(scene.frame_start)
    t = time.perf_counter()
    scenes.render_still(scene, reference, samples=task["samples"], denoise=task["denoise"])
    cycles = time.perf_counter() - t
    s = scene.mirage
    s.reference_image = reference
    s.output_dir = task["job_dir"]
    s.segment_length = task["segment_length"]
    s.device = "CPU"
    s.model = task["model"]
    session = importlib.import_module(PKG + ".session").Session(
        bpy.context, importlib.import_module(PKG + ".prefs").python_pref(), stall_timeout=0)
    landed, export_end = [], []
    insert, steps = session.insert, session.job.steps

    def timed_insert(msg):
        insert(msg)
        landed.append(time.perf_counter() - t0)

    def timed_steps():
        yield from steps()
        export_end.append(time.perf_counter() - t0)

    session.insert, session.job.steps = timed_insert, timed_steps
    t0 = time.perf_counter()
    session.run_blocking()  # what bpy.ops.mirage.generate() runs under `blender -b`
    total = time.perf_counter() - t0
    result = {"cycles_seconds": round(cycles, 3), "generate_seconds": round(total, 3),
              "export_seconds": round(export_end[0], 3) if export_end else None,
              "segments_landed_at": [round(x, 3) for x in landed], "finished": session.finished,
              "error": session.error, "status": session.status}
    with open(task["result"], "w") as f:
        json.dump(result, f)
    return 0 if session.finished else 1


def run_blender(args, W, H, out):
    job_dir = os.path.join(out, "mirage")
    shutil.rmtree(job_dir, ignore_errors=True)  # a fresh run: never resume an older one
    os.makedirs(out, exist_ok=True)
    task = {"zip": os.path.abspath(args.zip), "width": W, "height": H, "frames": args.frames,
            "segment_length": args.segment_length, "model": args.model, "samples": SAMPLES, "denoise": DENOISE,
            "out": out, "job_dir": job_dir, "result": os.path.join(out, "blender_result.json")}
    import bpy_session
    rc = bpy_session.launch(__file__, task, out)
    res = bpy_session.result(task) or {"finished": False}
    if rc != 0 or not res.get("finished"):
        raise SystemExit(f"bench: the Blender session at {W}x{H} failed ({res.get('error') or res.get('status')}); "
                         f"see {os.path.join(out, 'blender.log')}")
    return job_dir, res


# ---------------------------------------------------------------------------------------------------------
# The stages, timed on a second run of the same job in this process.
# ---------------------------------------------------------------------------------------------------------
def profile_stages(job_dir, segments, out_dir):
    """Wall seconds per frame of each stage over `segments` segments of the job (its first segment excluded: the
    seed and the first decodes), run through backend.pipeline.Run with the product's models and memory."""
    import dataclasses

    from backend import protocol, state, step
    from backend.models import compact
    from backend.pipeline import Run
    job, _ = protocol.load_job(os.path.join(job_dir, "job.json"))
    L = job.segment_length
    job = dataclasses.replace(job, frames=job.frames[:min(len(job.frames), (segments + 1) * L)])
    shutil.rmtree(out_dir, ignore_errors=True)
    run = Run.load(job, out_dir, lambda *a, **k: None)
    totals, frames_seen = {}, []
    counting = [False]

    def wrap(obj, name, label):
        f = getattr(obj, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                if counting[0]:
                    key = label(a) if callable(label) else label
                    totals[key] = totals.get(key, 0.0) + time.perf_counter() - t
        setattr(obj, name, timed)

    wrap(Run, "view", "inputs and view")
    wrap(step.View, "read", "memory read")
    wrap(step.View, "write", "memory write")
    wrap(compact.LearnedModel, "draw", "draw (with decodes)")
    wrap(compact.LearnedModel, "canvas_patches", "decode")
    wrap(compact, "pixel_fill", "fill")
    wrap(compact, "tiled", lambda a: "encode" if isinstance(a[0], compact.Encoder) else "tiled decoder")
    wrap(state, "to_rgb8", "PNG (to 8 bits)")
    wrap(state, "write_png", "PNG (writer thread)")
    wrap(run.lighting, "relit", "relight")
    per_frame = run.per_frame

    def counted(memory, seg):
        counting[0] = seg[0] != job.frames[0].frame
        t = time.perf_counter()
        for n in per_frame(memory, seg):
            yield n
        if counting[0]:
            frames_seen.append((len(seg), time.perf_counter() - t))
    run.per_frame = counted
    run.run()
    n = sum(k for k, _ in frames_seen)
    stages = {k: v / n for k, v in totals.items()}
    # decodes run inside draw: the drawing alone is the rest; the tiled decoder runs inside decode
    stages["draw"] = stages.pop("draw (with decodes)", 0.0) - stages.get("decode", 0.0)
    stages.pop("tiled decoder", None)
    return {"frames": n, "seconds_per_frame": sum(t for _, t in frames_seen) / n,
            "stages": {k: round(v, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}}


# ---------------------------------------------------------------------------------------------------------
def measure(args, W, H, root):
    out = os.path.join(root, f"{W}x{H}")
    log(f"{W}x{H}: Blender session (install zip, build the room, one Cycles frame, Generate {args.frames} frames)")
    job_dir, res = run_blender(args, W, H, out)
    with open(os.path.join(job_dir, "run.json")) as f:
        run = json.load(f)
    seg = [s["seconds_per_frame"] for s in run["per_segment"]]
    seg_seconds = [s["seconds"] for s in run["per_segment"]]
    frames = run["frames"]
    e2e = res["generate_seconds"] / frames
    r = {"width": W, "height": H, "pixels": W * H, "frames": frames, "segment_length": args.segment_length,
         "segments": len(seg), "model": run["runs"],
         "cycles_frame_seconds": res["cycles_seconds"],
         "end_to_end_seconds_per_frame": round(e2e, 4),
         "cycles_ratio": round(res["cycles_seconds"] / e2e, 2),
         "backend_seconds_per_frame": round(sum(seg_seconds) / frames, 4),
         "export_seconds_per_frame": round(res["export_seconds"] / frames, 4) if res["export_seconds"] else None,
         "generate_seconds": res["generate_seconds"], "export_seconds": res["export_seconds"],
         "first_segment_seconds": res["segments_landed_at"][0],
         "segment_generation_seconds": {"first": seg_seconds[0], "median": statistics.median(seg_seconds)},
         "seconds_per_frame_per_segment": seg,
         "peak_rss_bytes": run.get("peak_rss_bytes"),
         "memory_bytes": run["memory_bytes"]}
    r["first_segment_ratio"] = round(r["first_segment_seconds"] / statistics.median(seg_seconds), 2)
    if len(seg) >= 20:
        r["segment20_over_segment2"] = round(seg[19] / seg[1], 3)
        r["last4_over_segments2to5"] = round(statistics.median(seg[-4:]) / statistics.median(seg[1:5]), 3)
    if args.profile_segments:
        log(f"{W}x{H}: stages, timed on segments 2..{args.profile_segments + 1} of the same job")
        r["profile"] = profile_stages(job_dir, args.profile_segments, os.path.join(out, "profiled"))
    with open(os.path.join(root, f"{W}x{H}.json"), "w") as f:
        json.dump(r, f, indent=1)
    log(f"{W}x{H}: {e2e:.3f} s/frame end to end, backend {r['backend_seconds_per_frame']:.3f}, Cycles frame "
        f"{res['cycles_seconds']:.1f} s ({r['cycles_ratio']:.1f}x), first segment after {r['first_segment_seconds']:.1f} s")
    return r


def load_all(root):
    out = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".json") and "x" in name and name[0].isdigit():
            with open(os.path.join(root, name)) as f:
                out.append(json.load(f))
    return sorted(out, key=lambda r: r["pixels"])


def targets(results):
    by = {f"{r['width']}x{r['height']}": r for r in results}
    rows = []

    def put(key, value, where):
        text, op, limit, _ = TARGETS[key]
        if value is not None:
            rows.append({"target": text, "where": where, "value": value,
                         "pass": value >= limit if op == ">=" else value <= limit})

    if "1280x720" in by:
        put("cycles_ratio", by["1280x720"]["cycles_ratio"], "1280x720")
        put("first_segment", by["1280x720"]["first_segment_ratio"], "1280x720")
    if "1280x720" in by and "1920x1080" in by:
        put("pixel_cost", round(by["1920x1080"]["end_to_end_seconds_per_frame"]
                                / by["1280x720"]["end_to_end_seconds_per_frame"], 3), "1920x1080 / 1280x720")
    for size, r in by.items():
        put("flat", r.get("segment20_over_segment2"), size)
    if "1920x1080" in by:
        put("rss_1080p", by["1920x1080"]["peak_rss_bytes"], "1920x1080")
    return rows


def plot(results, root):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    px = [r["pixels"] / 1e6 for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(px, [r["end_to_end_seconds_per_frame"] for r in results], "o-", label="Mirage, end to end (export streamed)")
    ax.plot(px, [r["backend_seconds_per_frame"] for r in results], "s--", label="Mirage, backend")
    ax.plot(px, [r["cycles_frame_seconds"] for r in results], "^:", color="tab:red", label="Cycles, 16 samples, denoised")
    for r, x in zip(results, px):
        ax.annotate(f"{r['width']}x{r['height']}", (x, r["end_to_end_seconds_per_frame"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    ax.set_xlabel("megapixels per frame")
    ax.set_ylabel("seconds per frame")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Seconds per frame against pixels (same machine, same run per size)")
    path = os.path.join(root, "seconds_per_frame_vs_pixels.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results, rows, root, meta):
    L = ["# Resolution bench", "", f"{meta}", "",
         "| size | frames | end to end s/frame | backend s/frame | export s/frame | Cycles frame s | Cycles / Mirage | "
         "first segment s (x one segment) | seg 20 / seg 2 | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        L.append(f"| {r['width']}x{r['height']} | {r['frames']} | {r['end_to_end_seconds_per_frame']:.3f} | "
                 f"{r['backend_seconds_per_frame']:.3f} | {r['export_seconds_per_frame'] or 0:.3f} | "
                 f"{r['cycles_frame_seconds']:.1f} | {r['cycles_ratio']:.1f}x | {r['first_segment_seconds']:.1f} "
                 f"({r['first_segment_ratio']:.2f}x) | {r.get('segment20_over_segment2', 'n/a')} | "
                 f"{(r['peak_rss_bytes'] or 0) / 1e6:.0f} |")
    L += ["", "| target | where | value | |", "|---|---|---|---|"]
    for row in rows:
        L.append(f"| {row['target']} | {row['where']} | {row['value']} | {'PASS' if row['pass'] else 'MISS'} |")
    for r in results:
        if "profile" in r:
            L += ["", f"Stages at {r['width']}x{r['height']} (s/frame over {r['profile']['frames']} frames, "
                      f"{r['profile']['seconds_per_frame']:.3f} s/frame in all):", "",
                  "| stage | s/frame |", "|---|---|"]
            L += [f"| {k} | {v:.4f} |" for k, v in r["profile"]["stages"].items()]
    with open(os.path.join(root, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", help="the built extension zip (build.py passes it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench"))
    ap.add_argument("--resolution", help="comma-separated WxH sizes")
    ap.add_argument("--frames", type=int, default=240, help="frames in the shot (default 240, 10 s at 24 fps)")
    ap.add_argument("--segment-length", type=int, default=8)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--profile-segments", type=int, default=3, help="segments timed stage by stage (0: none)")
    ap.add_argument("--blender-session", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.blender_session:
        return blender_session(args.blender_session)
    if not args.zip or not args.resolution:
        ap.error("--zip and --resolution are required (python3 build.py bench --resolution WxH passes the zip)")
    sizes = []
    for item in args.resolution.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            ap.error(f"--resolution wants sizes like 1280x720, got {item!r}")
        sizes.append((w, h))
    sys.path.insert(0, ROOT)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the backend process runs (backend/__main__.py)
    root = os.path.join(os.path.abspath(args.out), "resolution")
    os.makedirs(root, exist_ok=True)
    for w, h in sizes:
        measure(args, w, h, root)
    results = load_all(root)
    rows = targets(results)
    import torch
    meta = (f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{time.strftime('%Y-%m-%d %H:%M')}; Cycles on the CPU at {SAMPLES} samples, denoised, in the same "
            f"Blender session as each size's Generate")
    plot(results, root)
    write_report(results, rows, root, meta)
    with open(os.path.join(root, "report.json"), "w") as f:
        json.dump({"meta": meta, "targets": rows, "sizes": results}, f, indent=1)
    for row in rows:
        log(f"{'PASS' if row['pass'] else 'MISS'}  {row['target']} [{row['where']}]: {row['value']}")
    log(f"report: {os.path.join(root, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
