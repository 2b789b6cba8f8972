"""The bench: Mirage's own measurement instrument (python3 build.py bench [--quick] [--model NAME]).

For each evaluation scene a fresh Blender (bpy) subprocess installs the built extension zip, builds the
scene, renders the ground truth with Cycles (cached under <out>/cache), sets the reference image to the
ground truth of the first frame and runs Generate, i.e. the add-on's own export and backend process.
Then this process runs two baseline memories (tools/baselines.py) through the same segment loop on the same
job.json (backend.pipeline.Run with memory=...), an oracle that forward-warps the reference with exact depth,
and measures everything against the ground truth. Writes <out>/report.md, report.json and plots.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SAMPLES = 16      # Cycles samples per ground-truth frame; OIDN denoising on (see docs/benchmarks.md)
DENOISE = True

FULL = {
    "pillar": {"builder": "pillar", "width": 256, "height": 144, "frames": 48, "segment_length": 8},
    "loop": {"builder": "loop", "width": 256, "height": 144, "loop_frames": 40, "loops": 4, "segment_length": 8},
    "objects": {"builder": "objects", "width": 256, "height": 144, "frames": 48, "segment_length": 8},
    "hall": {"builder": "hall", "width": 256, "height": 144, "frames": 48, "segment_length": 8,
             "baselines": ["pointcloud"]},
    "studio": {"builder": "studio", "width": 256, "height": 144, "frames": 48, "segment_length": 8,
               "baselines": ["pointcloud"]},
}
QUICK = {
    "pillar": {"builder": "pillar", "width": 128, "height": 72, "frames": 24, "segment_length": 4},
    "loop": {"builder": "loop", "width": 128, "height": 72, "loop_frames": 16, "loops": 4, "segment_length": 4},
    "objects": {"builder": "objects", "width": 128, "height": 72, "frames": 24, "segment_length": 4},
    "hall": {"builder": "hall", "width": 128, "height": 72, "frames": 24, "segment_length": 4,
             "baselines": ["pointcloud"]},
    "studio": {"builder": "studio", "width": 128, "height": 72, "frames": 24, "segment_length": 4,
               "baselines": ["pointcloud"]},
}
# baselines run on a static scene unless its spec names fewer (no memory answers revisits: the new scenes have none)
BASELINES = ("pointcloud", "nomemory")
# as built: the scene's own materials; blockout: every material one grey before the add-on sees the scene
# (ground truth and reference keep the real materials: the reference is the concept art, the scene is shapes)
MODES = ("built", "blockout")

TARGETS = {
    "covisible_gap_db": ("covisible PSNR within 1.5 dB of the oracle", "<=", 1.5),
    "revisit_psnr_db": ("revisit PSNR >= 28 dB", ">=", 28.0),
    "revisit_gain_db": ("revisit PSNR >= 8 dB above no-memory", ">=", 8.0),
    "flicker_ratio": ("flicker <= 1.2x ground truth", "<=", 1.2),
    "memory_ratio_5seg": ("memory after 5 segments >= 55x smaller than the point cloud", ">=", 55.0),
    "loop_growth": ("looped path grows memory <= 5 % after the first loop", "<=", 0.05),
    "slowdown": ("s/frame in segment 20 <= 1.1x segment 2", "<=", 1.1),
    "fps": ("memory + model >= 10 frames/s", ">=", 10.0),
    "object_psnr_db": ("moving object PSNR >= 26 dB in every segment (worst segment)", ">=", 26.0),
    "object_gain_db": ("moving object PSNR above the static-only memory (worst segment, 'clearly': 3 dB)", ">=", 3.0),
    "uncovered_gap_db": ("background an object uncovered as good as background it never covered", "<=", 1.0),
    # invented pixels (what no reference showed), every scene, both modes
    "invented_vs_flat_db": ("invented PSNR >= the flat mean colour + 0.5 dB", ">=", 0.5),
    "detail_ratio": ("invented detail ratio between 0.6 and 1.6", "between", (0.6, 1.6)),
    "swd_texture_ratio": ("invented texture SWD within 10 % of the ground truth shifted 4 px (ratio)", "<=", 1.10),
    "swd_raw": ("invented raw SWD <= 5.0", "<=", 5.0),
    "consistency_gap_db": ("self-consistency across segments within 1.5 dB of the ground truth's own", "<=", 1.5),
    "blockout_object_mean_db": ("moving object in blockout: PSNR >= 24 dB (mean over the frames it is seen)", ">=", 24.0),
    "blockout_object_worst_db": ("moving object in blockout: PSNR >= 20 dB in every frame it is seen (worst)", ">=", 20.0),
}
# the report's column heads for the invented pixels' targets
INVENTED_TARGETS = {"invented_vs_flat_db": "PSNR above flat mean, dB (>= 0.5)",
                    "detail_ratio": "detail ratio (0.6 to 1.6)",
                    "swd_texture_ratio": "texture SWD / shifted ground truth's (<= 1.1)",
                    "swd_raw": "raw SWD (<= 5.0)",
                    "consistency_gap_db": "self-consistency below the ground truth's, dB (<= 1.5)"}
OBJECT_MIN_SHARE = 0.001  # a frame counts as showing the object when it covers at least 0.1 % of the pixels


def gt_frames_needed(spec):
    if spec["builder"] == "loop":
        return list(range(1, spec["loop_frames"] + 1))
    return list(range(1, spec["frames"] + 1))


def gt_frame_for(spec, n):
    """Ground-truth frame that has frame n's pose (the loop repeats its first loop exactly)."""
    if spec["builder"] == "loop":
        return (n - 1) % spec["loop_frames"] + 1
    return n


def cache_dir(cache_root, name, spec, scenes_version, blender):
    """Ground truth depends on the scene, its size, the renderer settings and Blender: all in the key."""
    keep = {k: v for k, v in spec.items() if k not in ("segment_length", "baselines")}
    key = json.dumps({"scene": keep, "samples": SAMPLES, "denoise": DENOISE, "scenes_version": scenes_version,
                      "blender": blender}, sort_keys=True)
    return os.path.join(cache_root, f"{name}-{spec['width']}x{spec['height']}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")


# ---------------------------------------------------------------------------------------------------
# The Blender side: runs in a fresh bpy subprocess (bpy state is global, one scene per process).
# ---------------------------------------------------------------------------------------------------
def blender_session(task_path):
    with open(task_path, encoding="utf-8") as f:
        task = json.load(f)
    sys.path.insert(0, HERE)
    import scenes
    import bpy
    result = {"ok": False}
    t0 = time.perf_counter()
    scenes.install_extension(task["zip"])
    spec = task["spec"]
    if spec["builder"] == "loop":
        scene = scenes.build_loop(spec["width"], spec["height"], spec["loop_frames"], spec["loops"])
    else:
        build = {"pillar": scenes.build_pillar_revisit, "objects": scenes.build_moving_crate,
                 "hall": scenes.build_hall, "studio": scenes.build_studio}[spec["builder"]]
        scene = build(spec["width"], spec["height"], spec["frames"])
    result["build_seconds"] = round(time.perf_counter() - t0, 2)

    # ground truth: Cycles on the CPU, cached by scene parameters
    t0 = time.perf_counter()
    os.makedirs(task["cache"], exist_ok=True)
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = task["samples"]
    scene.cycles.use_denoising = task["denoise"]
    r.image_settings.file_format = "PNG"
    rendered = 0
    for n in task["gt_frames"]:
        path = os.path.join(task["cache"], f"{n:06d}.png")
        if os.path.isfile(path):
            continue
        scene.frame_set(n)
        r.filepath = path + ".part.png"
        bpy.ops.render.render(write_still=True)
        os.replace(path + ".part.png", path)
        rendered += 1
    scene.frame_set(scene.frame_start)
    result["gt_rendered"] = rendered
    result["gt_seconds"] = round(time.perf_counter() - t0, 2)

    # the product: the add-on's Generate (export cameras + exact depth, backend subprocess), once per mode
    s = scene.mirage
    s.reference_image = os.path.join(task["cache"], f"{scene.frame_start:06d}.png")
    s.segment_length = spec["segment_length"]
    s.device = "CPU"
    offered = {e.identifier for e in s.bl_rna.properties["model"].enum_items}
    if task["model"] in offered:
        s.model = task["model"]
    else:
        # the panel offers only some models: run the requested one under an offered name, by pointing the
        # backend (which inherits this environment) at a models folder where that name is the requested model
        src = os.path.join(ROOT, "models", task["model"])
        if not os.path.isfile(os.path.join(src, "model.json")):
            result["error"] = f"no model {task['model']!r} in {os.path.join(ROOT, 'models')}"
            with open(task["result"], "w") as f:
                json.dump(result, f)
            return 1
        alias = os.path.join(os.path.dirname(task["result"]), "models")
        shutil.rmtree(alias, ignore_errors=True)
        os.makedirs(alias)
        stand_in = sorted(offered)[0]
        shutil.copytree(src, os.path.join(alias, stand_in))
        os.environ["MIRAGE_MODELS_DIR"] = alias
        s.model = stand_in
        result["model_alias"] = f"{task['model']} run as the add-on's '{stand_in}'"
    result["modes"] = {}
    for mode in task["modes"]:  # "built" first: the blockout replaces the materials for good
        if mode == "blockout":
            scenes.blockout(scene)
        s.output_dir = task["job_dirs"][mode]
        t0 = time.perf_counter()
        ret = bpy.ops.mirage.generate()
        result["modes"][mode] = {"generate_seconds": round(time.perf_counter() - t0, 2),
                                 "generate_result": sorted(ret), "status": bpy.context.window_manager.mirage.text,
                                 "ok": ret == {"FINISHED"}}
        if not result["modes"][mode]["ok"]:
            result["status"] = f"{mode}: {result['modes'][mode]['status']}"
            break
    result["ok"] = all(m["ok"] for m in result["modes"].values()) and len(result["modes"]) == len(task["modes"])
    with open(task["result"], "w") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------------------------------
# The bench process: baselines, metrics, report.
# ---------------------------------------------------------------------------------------------------
def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def scenes_version():
    import re
    with open(os.path.join(HERE, "scenes.py"), encoding="utf-8") as f:
        return int(re.search(r"^BENCH_SCENES_VERSION = (\d+)", f.read(), re.M).group(1))


def blender_version():
    try:
        from importlib.metadata import version
        return version("bpy")
    except Exception:
        return "unknown"


def mode_dir(scene_dir, mode):
    """Where a mode's runs go: the scene's folder as built, <scene>/blockout/ for the blockout."""
    return scene_dir if mode == "built" else os.path.join(scene_dir, mode)


def run_blender(name, spec, args, scene_dir, cache):
    """One Blender session for the scene: ground truth, then Generate once per mode. Returns ({mode: job
    folder}, the session's result)."""
    job_dirs = {m: os.path.join(mode_dir(scene_dir, m), "mirage") for m in args.modes}
    for d in job_dirs.values():
        shutil.rmtree(d, ignore_errors=True)  # a fresh run: never resume an older one
    os.makedirs(scene_dir, exist_ok=True)
    task = {"zip": os.path.abspath(args.zip), "spec": spec, "cache": cache, "samples": SAMPLES, "denoise": DENOISE,
            "gt_frames": gt_frames_needed(spec), "job_dirs": job_dirs, "modes": list(args.modes),
            "model": args.model, "result": os.path.join(scene_dir, "blender_result.json")}
    import bpy_session
    t0 = time.perf_counter()
    rc = bpy_session.launch(__file__, task, scene_dir)
    res = bpy_session.result(task) or {"ok": False}
    res["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if rc != 0 or not res.get("ok"):
        raise SystemExit(f"bench: the Blender session for '{name}' failed ({res.get('error') or res.get('status')}); "
                         f"see {os.path.join(scene_dir, 'blender.log')}")
    return job_dirs, res


# -- the bench's calls into the backend, in one place -------------------------------------------------
def run_segments(job, out_dir, memory=None, model=None):
    """Run a job (a dict of the job format) through the product's own segment loop (backend.pipeline.Run) in
    this process, with another memory (a baseline of tools/baselines.py) or another model (the compared
    model); returns its run.json content."""
    from backend.memory import SceneMemory
    from backend.pipeline import Run
    from backend.protocol import Job
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    if model is not None:
        job = dict(job, model=model)
    return Run.load(Job.from_dict(job), out_dir, lambda *a, **k: None, memory=memory or SceneMemory).run()


def runs_model(name):
    """The model a name really loads (an alias such as 'builtin' names another model)."""
    from backend import catalog
    return catalog.describe(name).runs


def load_model(name):
    from backend import models
    return models.load(name, "cpu")


def load_job(job_dir):
    """The add-on's job as a plain dict of the job format (paths absolute)."""
    from backend import protocol
    return protocol.load_job(os.path.join(job_dir, "job.json"))[0].to_dict()


def frame_path(folder, n):
    from backend import protocol
    return os.path.join(folder, "frames", protocol.frame_filename(n))


# ---------------------------------------------------------------------------------------------------
def load_rgb(path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def finite_mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def pooled_psnr(sq_errors, counts):
    import metrics
    n = sum(counts)
    return metrics.psnr_from_mse(sum(sq_errors) / n) if n else float("nan")


def load_run(name, spec, args, job_dir, cache):
    """What every figure needs from one Generate: the job, cameras, exact depth, ground truth and frames."""
    import numpy as np
    job = load_job(job_dir)
    job["model"] = args.model  # the add-on may have run it under an offered name (see blender_session)
    with open(os.path.join(job_dir, "run.json")) as f:
        run = json.load(f)
    order = [fr["frame"] for fr in job["frames"]]
    K = {fr["frame"]: np.array(fr["K"]) for fr in job["frames"]}
    c2w = {fr["frame"]: np.array(fr["cam_to_world"]) for fr in job["frames"]}
    depth = {fr["frame"]: np.load(fr["depth"]).astype(np.float64) for fr in job["frames"]}
    for n in order:  # the loop's ground truth is reused: the poses must really repeat
        g = gt_frame_for(spec, n)
        if g != n and not np.allclose(c2w[n], c2w[g], atol=1e-5):
            raise SystemExit(f"bench: frame {n} of '{name}' does not repeat the pose of frame {g}")
    gt = {n: load_rgb(os.path.join(cache, f"{gt_frame_for(spec, n):06d}.png")) for n in order}
    frames = {n: load_rgb(frame_path(job_dir, n)) for n in order}
    return {"job": job, "job_dir": job_dir, "run": run, "order": order, "K": K, "c2w": c2w, "depth": depth,
            "gt": gt, "frames": frames, "ref": job["reference"]["frame"]}


def evaluate(name, spec, args, out_root, cache_root):
    """One scene: a Blender session (ground truth, Generate per mode), then per mode the figures. As built, the
    memory's figures (baselines, covisible, revisit, flicker, memory, speed; or the moving object's); in every
    mode the invented pixels' figures and the contact sheet."""
    scene_dir = os.path.join(out_root, name)
    cache = cache_dir(cache_root, name, spec, scenes_version(), blender_version())
    log(f"{name}: Blender session (install zip, build scene, Cycles ground truth, Generate {', '.join(args.modes)})")
    job_dirs, bres = run_blender(name, spec, args, scene_dir, cache)
    log(f"{name}: {bres['gt_rendered']} ground-truth frames rendered in {bres['gt_seconds']} s, Generate took "
        + ", ".join(f"{m['generate_seconds']} s {mode}" for mode, m in bres["modes"].items()))
    if bres.get("model_alias"):
        log(f"{name}: {bres['model_alias']}")
    objects = spec["builder"] == "objects"
    result = {"scene": name, "spec": spec, "kind": "objects" if objects else "static", "model": args.model,
              "model_alias": bres.get("model_alias")}
    modes, earlier = {}, {}
    for mode in args.modes:
        run = load_run(name, spec, args, job_dirs[mode], cache)
        if mode == "built":
            result.update((object_figures if objects else memory_figures)(name, spec, args, scene_dir, run, bres))
        modes[mode] = invention_figures(name, mode, args, mode_dir(scene_dir, mode), run, out_root, earlier)
        del run
    result["modes"] = modes
    return result


def memory_figures(name, spec, args, scene_dir, run, bres):
    """The memory's figures on a static scene, as built: the product against two baseline memories run through
    the same segment loop on the same job, and an oracle reprojection."""
    import numpy as np
    import torch
    import metrics
    from baselines import NoMemory, PointCloudMemory

    job, mirage_run, order, K, c2w, depth, gt = (run[k] for k in ("job", "run", "order", "K", "c2w", "depth", "gt"))
    # baselines through the same segment loop, on the same job
    model = load_model(job["model"])
    by_pose = {np.asarray(c2w[n], np.float64).round(6).tobytes(): n for n in order}

    def depth_lookup(K_, c2w_):
        n = by_pose.get(np.asarray(c2w_, np.float64).round(6).tobytes())
        return None if n is None else torch.from_numpy(depth[n])

    runs = {"mirage": mirage_run}
    dirs = {"mirage": run["job_dir"]}
    classes = {"pointcloud": PointCloudMemory.bind(model, depth_lookup), "nomemory": NoMemory}
    for method in spec.get("baselines", BASELINES):
        cls = classes[method]
        t0 = time.perf_counter()
        dirs[method] = os.path.join(scene_dir, method)
        runs[method] = run_segments(job, dirs[method], memory=cls)
        log(f"{name}: baseline {method} ran in {time.perf_counter() - t0:.1f} s")

    # metrics: one torch thread. They are many small ops, and on a loaded machine the OpenMP threads of
    # a second worker mostly wait on each other (20x slower measured here with the trainer running).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ref = job["reference"]["frame"]
    H, W = job["height"], job["width"]
    gen = {m: run["frames"] if m == "mirage" else {n: load_rgb(frame_path(dirs[m], n)) for n in order} for m in dirs}
    methods = list(dirs) + ["oracle"]
    per = {m: {"covis_psnr": [], "covis_ssim": [], "psnr": []} for m in methods}
    covis_frac, acc = [], {m: ([], []) for m in methods}
    for n in order:
        cov = metrics.covisible(depth[ref], K[ref], c2w[ref], depth[n], K[n], c2w[n])
        covis_frac.append(float(cov.mean()))
        images = {m: gen[m][n] for m in dirs}
        images["oracle"] = metrics.oracle(gt[ref], depth[ref], K[ref], c2w[ref], K[n], c2w[n], H, W)
        for m in methods:
            img = images[m]
            use = cov.any() and n != ref
            per[m]["covis_psnr"].append(metrics.psnr(img, gt[n], cov) if cov.any() else None)
            per[m]["covis_ssim"].append(metrics.ssim(img, gt[n], cov) if cov.any() else None)
            per[m]["psnr"].append(metrics.psnr(img, gt[n]) if m != "oracle" else None)
            if use:
                acc[m][0].append(metrics.mse(img, gt[n], cov) * int(cov.sum()))
                acc[m][1].append(int(cov.sum()))
    poses = [c2w[n] for n in order]
    rev = metrics.revisits(poses)
    flick = {m: [] for m in ["gt"] + list(dirs)}
    for i in range(1, len(order)):
        a, b = order[i - 1], order[i]
        for m in flick:
            imgs = gt if m == "gt" else gen[m]
            flick[m].append(metrics.warp_error(imgs[a], imgs[b], depth[a], depth[b], K[a], c2w[a], K[b], c2w[b]))
    metric_seconds = time.perf_counter() - t0
    torch.set_num_threads(threads)

    summary = {}
    for m in methods:
        ssims = [s for n, s in zip(order, per[m]["covis_ssim"]) if s is not None and n != ref]
        summary[m] = {"covisible_psnr_db": pooled_psnr(*acc[m]),
                      "covisible_ssim": finite_mean(ssims)}
        if m == "oracle":
            continue
        rv = [per[m]["psnr"][i] for i in rev]
        summary[m]["revisit_psnr_db"] = finite_mean(rv) if rv else None
        summary[m]["revisit_frames"] = len(rv)
        # consistency: the revisit frame against the method's own frame at the earlier pose
        own = [metrics.psnr(gen[m][order[i]], gen[m][order[j]]) for i, j in rev.items()] if m in gen else []
        summary[m]["revisit_self_psnr_db"] = finite_mean([min(x, 99.0) for x in own]) if own else None
        summary[m]["flicker_mae"] = finite_mean(flick[m])
        summary[m]["flicker_ratio"] = finite_mean(flick[m]) / finite_mean(flick["gt"])
        segs = runs[m]["per_segment"]
        summary[m]["memory_bytes"] = [s["memory_bytes"] for s in segs]
        summary[m]["seconds_per_frame"] = [s["seconds_per_frame"] for s in segs]
        summary[m]["frames_after_segment"] = [order.index(s["frames"][1]) + 1 for s in segs]
        spf = sorted(summary[m]["seconds_per_frame"])
        summary[m]["median_fps"] = 1.0 / spf[len(spf) // 2]
        summary[m]["full_psnr_db"] = finite_mean(per[m]["psnr"][1:])
    summary["gt"] = {"flicker_mae": finite_mean(flick["gt"])}
    return {
        "frames": len(order),
        "segments": len(runs["mirage"]["per_segment"]), "width": W, "height": H, "reference_frame": ref,
        "latent": mirage_run.get("latent"),
        "revisit_frames": {str(order[i]): order[j] for i, j in rev.items()},
        "covisible_fraction": covis_frac, "per_frame": {m: per[m] for m in methods}, "order": order,
        "flicker_per_pair": flick, "summary": summary,
        "timing": {"blender_session_s": bres["wall_seconds"], "gt_render_s": bres["gt_seconds"],
                   "gt_frames_rendered": bres["gt_rendered"], "generate_s": bres["modes"]["built"]["generate_seconds"],
                   "mirage_backend_s": mirage_run.get("seconds"),
                   **{f"{m}_s": runs[m]["seconds"] for m in runs if m != "mirage"},
                   "metrics_s": round(metric_seconds, 2)},
    }


def object_figures(name, spec, args, scene_dir, run, bres):
    """The moving-crate scene as built: the product (one memory bank per moving object) against the same
    memory with the crate baked into the static world, on the crate's pixels and on what it uncovered."""
    import numpy as np
    import metrics

    job, tracked_run, order, K, c2w, depth, gt = (run[k] for k in ("job", "run", "order", "K", "c2w", "depth", "gt"))
    if not job.get("objects"):
        raise SystemExit(f"bench: the add-on found no moving object in '{name}'")
    oid = job["objects"][0]["id"]
    baked = dict(job)
    baked.pop("objects")
    baked["frames"] = [{k: v for k, v in fr.items() if k not in ("objects", "ids", "light", "albedo")} for fr in job["frames"]]
    t0 = time.perf_counter()
    baked_dir = os.path.join(scene_dir, "static_only")
    run_segments(baked, baked_dir)  # the product's memory, the crate in its static world
    log(f"{name}: static-only baseline ran in {time.perf_counter() - t0:.1f} s")

    fr = {f["frame"]: f for f in job["frames"]}
    ids = {n: np.load(fr[n]["ids"]) for n in order}
    dirs = {"tracked": run["job_dir"], "static_only": baked_dir}
    gen = {"tracked": run["frames"], "static_only": {n: load_rgb(frame_path(baked_dir, n)) for n in order}}
    ref = run["ref"]

    acc = {m: {k: ([], []) for k in ("object", "uncovered", "never_covered")} for m in dirs}
    per_seg = {m: [] for m in dirs}
    seg_of = {n: i for i, s in enumerate(tracked_run["per_segment"]) for n in range(s["frames"][0], s["frames"][1] + 1)}
    seg_acc = {m: {} for m in dirs}
    # the object's pixels whose surface the reference saw, and the rest (faces it turned toward the camera later)
    seen_acc = {k: {} for k in ("seen", "unseen", "flat_oracle")}
    ref_obj_depth = np.where(ids[ref] == oid, depth[ref], np.inf)
    pose = {n: np.array(fr[n]["objects"][str(oid)]) for n in order}
    covered_px = 0
    for k, n in enumerate(order):
        if n == ref:
            continue
        obj = ids[n] == oid
        static = (ids[n] == 0) & np.isfinite(depth[n])
        seen = metrics.covisible(depth[ref], K[ref], c2w[ref], depth[n], K[n], c2w[n])
        hidden = np.zeros_like(static)
        for m in order[1:k]:  # an earlier frame on which the crate stood in front of this point
            hidden |= metrics.occluded_by(depth[n], K[n], c2w[n], depth[m], ids[m], oid, K[m], c2w[m])
        masks = {"object": obj, "uncovered": static & seen & hidden, "never_covered": static & seen & ~hidden}
        covered_px += int(masks["uncovered"].sum())
        for m in dirs:
            for key, mask in masks.items():
                if mask.any():
                    acc[m][key][0].append(metrics.mse(gen[m][n], gt[n], mask) * int(mask.sum()))
                    acc[m][key][1].append(int(mask.sum()))
            if obj.any():
                e, c = seg_acc[m].setdefault(seg_of[n], ([], []))
                e.append(metrics.mse(gen[m][n], gt[n], obj) * int(obj.sum()))
                c.append(int(obj.sum()))
        if obj.any():
            # the reference camera carried along with the object from its reference pose to this frame's
            ref_cam = pose[n] @ np.linalg.inv(pose[ref]) @ c2w[ref]
            seen_obj = obj & metrics.covisible(ref_obj_depth, K[ref], ref_cam, depth[n], K[n], c2w[n])
            for key, mask in (("seen", seen_obj), ("unseen", obj & ~seen_obj)):
                if mask.any():
                    e, c = seen_acc[key].setdefault(seg_of[n], ([], []))
                    e.append(metrics.mse(gen["tracked"][n], gt[n], mask) * int(mask.sum()))
                    c.append(int(mask.sum()))
            # a bound: the never-seen faces painted in their ground truth's mean colour, face by face (the
            # light map tells flat faces apart), the best any fill that does not know their texture paints flat
            flat = gen["tracked"][n].copy()
            unseen = obj & ~seen_obj
            faces = np.round(np.load(fr[n]["light"]).astype(np.float64), 2) if fr[n].get("light") else np.zeros(obj.shape)
            for val in np.unique(faces[unseen]):
                sel = unseen & (faces == val)
                flat[sel] = gt[n][sel].mean(0)
            e, c = seen_acc["flat_oracle"].setdefault(seg_of[n], ([], []))
            e.append(metrics.mse(flat, gt[n], obj) * int(obj.sum()))
            c.append(int(obj.sum()))
    for m in dirs:
        per_seg[m] = [pooled_psnr(*seg_acc[m][i]) if i in seg_acc[m] else None
                      for i in range(len(tracked_run["per_segment"]))]
    summary = {m: {f"{k}_psnr_db": pooled_psnr(*acc[m][k]) if acc[m][k][1] else None for k in acc[m]}
               for m in dirs}
    for m in dirs:
        summary[m]["object_psnr_per_segment"] = per_seg[m]
    segs = range(len(tracked_run["per_segment"]))
    for key, a in seen_acc.items():
        summary["tracked"][f"object_{key}_psnr_per_segment"] = [pooled_psnr(*a[i]) if i in a else None for i in segs]
        summary["tracked"][f"object_{key}_pixels_per_segment"] = [sum(a[i][1]) if i in a else 0 for i in segs]
    return {"frames": len(order),
            "segments": len(tracked_run["per_segment"]), "width": job["width"], "height": job["height"],
            "object": job["objects"][0]["name"], "uncovered_pixels": covered_px, "summary": summary,
            "memory_bytes": tracked_run["per_segment"][-1]["memory_bytes"],
            "timing": {"blender_session_s": bres["wall_seconds"], "gt_render_s": bres["gt_seconds"],
                       "generate_s": bres["modes"]["built"]["generate_seconds"]}}


def compare_frames(name, mode, args, out_dir, run):
    """The compared model's frames on the same job through the same segment loop, or the product's own frames
    when both names load the same model. Returns (frames, note)."""
    if runs_model(args.compare) == runs_model(args.model):
        return run["frames"], f"`{args.compare}` is the model itself (`{args.model}` runs `{runs_model(args.model)}`)"
    folder = os.path.join(out_dir, f"compare-{args.compare}")
    t0 = time.perf_counter()
    run_segments(run["job"], folder, model=args.compare)
    log(f"{name} ({mode}): compared model {args.compare} ran in {time.perf_counter() - t0:.1f} s")
    return {n: load_rgb(frame_path(folder, n)) for n in run["order"]}, None


def invention_figures(name, mode, args, out_dir, run, out_root, earlier):
    """The invented pixels' figures of one mode (docs/benchmarks.md) for the model, the compared model and the
    rows made from the ground truth; the moving object's PSNR per frame; the contact sheet.

    earlier: {frames digest: (mode, figures)} of the scene's modes so far; a mode whose frames are byte for byte
    those of an earlier one (a static scene when no model reads the materials) takes its figures."""
    import numpy as np
    import torch
    import invented
    import sheet

    job, order, gt, ref = run["job"], run["order"], run["gt"], run["ref"]
    images = {"model": run["frames"]}
    note = None
    if args.compare:
        images["compare"], note = compare_frames(name, mode, args, out_dir, run)
    digest = hashlib.sha256()
    for key in images:
        for n in order:
            digest.update(images[key][n].tobytes())
    digest = digest.hexdigest()
    t0 = time.perf_counter()
    views = {n: (run["depth"][n], run["K"][n], run["c2w"][n]) for n in order}
    ids = poses = static = None
    if job.get("objects"):
        fr = {f["frame"]: f for f in job["frames"]}
        ids = {n: np.load(fr[n]["ids"]) for n in order}
        poses = {n: {int(k): np.array(v) for k, v in (fr[n].get("objects") or {}).items()} for n in order}
        static = {n: ids[n] == 0 for n in order}
    masks = invented.frame_masks(order, views, [ref], ids, poses)
    masks[ref] = np.zeros_like(masks[ref])  # the reference frame is the reference
    frames = [n for n in order if n != ref]
    if digest in earlier:
        same, out = earlier[digest]
        out = dict(out, same_frames_as=same)
        log(f"{name} ({mode}): the frames are those of {same}, and so are the figures")
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # many small ops: see memory_figures
        figures = invented.image_figures(frames, gt, masks, images, gt[ref])
        segment_of = {n: i for i, sg in enumerate(run["run"]["per_segment"]) for n in order
                      if sg["frames"][0] <= n <= sg["frames"][1]}
        pairs = invented.partners(order, views, segment_of, masks, static)
        consistency = invented.self_consistency(pairs, views, masks, dict(images, gt=gt), static)
        out = {"compare": args.compare, "compare_note": note, "figures": figures, "consistency": consistency,
               "pairs": {str(n): m for n, m in pairs.items()},
               "invented_share": {str(n): float(masks[n].mean()) for n in frames},
               "mean_invented_share": float(np.mean([masks[n].mean() for n in frames]))}
        if ids is not None:
            out["object"] = object_per_frame(job, order, ref, ids, gt, images)
        torch.set_num_threads(threads)
        earlier[digest] = (mode, out)
    shown = sheet.spread(order, 6, skip={ref})
    rows = [("ground truth", gt), (f"{args.model}\n(this model)", images["model"])]
    if args.compare:
        rows.append((f"{args.compare}\n(compared)", images["compare"]))
    rows.append(("invented pixels\n(the rest dimmed)", sheet.mask_row(gt, masks, shown)))
    out["sheet"] = sheet.contact_sheet(os.path.join(out_root, f"sheet_{name}_{mode}.png"), shown, rows, masks,
                                       f"{name}, {mode}: invented pixels (no reference saw them) outlined in magenta")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    f, c = out["figures"], out["consistency"]["psnr_db"]
    x = f["model"]
    log(f"{name} ({mode}): {100 * out['mean_invented_share']:.0f} % of the pixels invented; there PSNR "
        f"{fmt(x['psnr_db'])} dB (flat mean {fmt(f['flat_mean']['psnr_db'])}), detail {fmt(x['detail_ratio'])}, "
        f"SWD {fmt(x['swd_raw'])} / texture {fmt(x['swd_texture'])} (shifted ground truth "
        f"{fmt(f['gt_shifted']['swd_texture'])}); self-consistency {fmt(c['model'])} dB (ground truth "
        f"{fmt(c['gt'])}) in {out['seconds']} s")
    return out


def object_per_frame(job, order, ref, ids, gt, images):
    """PSNR on each moving object's pixels per frame that shows it (at least OBJECT_MIN_SHARE of the pixels;
    the reference frame left out): {image set: {"per_frame", "mean_db", "worst_db", "worst_frame"}}."""
    import metrics
    oid = job["objects"][0]["id"]
    out = {}
    for key, imgs in images.items():
        per = {}
        for n in order:
            mask = ids[n] == oid
            if n != ref and mask.mean() >= OBJECT_MIN_SHARE:
                per[str(n)] = metrics.psnr(imgs[n], gt[n], mask)
        worst = min(per, key=per.get) if per else None
        out[key] = {"per_frame": per, "mean_db": finite_mean(per.values()) if per else None,
                    "worst_db": per[worst] if per else None, "worst_frame": int(worst) if worst else None}
    return out


def passes(op, thr, value):
    if value is None or not math.isfinite(value):
        return None
    if op == "between":
        return thr[0] <= value <= thr[1]
    return value <= thr if op == "<=" else value >= thr


def targets(results):
    """Each target measured where it is defined; value and pass/miss."""
    lp = results.get("loop") if "summary" in results.get("loop", {}) else None
    out = {}

    def put(key, value, where):
        desc, op, thr = TARGETS[key]
        out.setdefault(key, []).append({"target": desc, "scene": where, "value": value, "threshold": thr,
                                        "op": op, "pass": passes(op, thr, value)})

    for name, r in results.items():
        s = r.get("summary")
        if s is None:
            pass
        elif r.get("kind") == "objects":
            t, b = s["tracked"]["object_psnr_per_segment"], s["static_only"]["object_psnr_per_segment"]
            pairs = [(x, y) for x, y in zip(t, b) if x is not None]
            if pairs:
                put("object_psnr_db", min(x for x, _ in pairs), name)
                put("object_gain_db", min(x - y for x, y in pairs), name)
            if s["tracked"]["uncovered_psnr_db"] is not None:
                put("uncovered_gap_db", s["tracked"]["never_covered_psnr_db"] - s["tracked"]["uncovered_psnr_db"], name)
        else:
            put("covisible_gap_db", s["oracle"]["covisible_psnr_db"] - s["mirage"]["covisible_psnr_db"], name)
            if r["revisit_frames"]:  # the new scenes never come back to a pose
                put("revisit_psnr_db", s["mirage"]["revisit_psnr_db"], name)
                put("revisit_gain_db", s["mirage"]["revisit_psnr_db"] - s["nomemory"]["revisit_psnr_db"], name)
            put("flicker_ratio", s["mirage"]["flicker_ratio"], name)
            mem, pc = s["mirage"]["memory_bytes"], s["pointcloud"]["memory_bytes"]
            if len(mem) >= 5:
                put("memory_ratio_5seg", pc[4] / mem[4], name)
            put("fps", s["mirage"]["median_fps"], name)
    if lp:
        s = lp["summary"]["mirage"]
        per_loop = lp["spec"]["loop_frames"] // lp["spec"]["segment_length"]
        mem = s["memory_bytes"]
        put("loop_growth", mem[-1] / mem[per_loop - 1] - 1.0, "loop")
        spf = s["seconds_per_frame"]
        last = min(19, len(spf) - 1)
        put("slowdown", spf[last] / spf[1], f"loop (segment {last + 1} / segment 2)")
        # one segment's time is noisy on a shared machine: also the median of the last 4 over segments 2-5
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        if len(spf) >= 8:
            put("slowdown", med(spf[-4:]) / med(spf[1:5]), f"loop (median of last 4 / median of segments 2-5)")
    for mode in MODES:  # the invented pixels, scene by scene, as built and as a blockout
        for name, r in results.items():
            m = r.get("modes", {}).get(mode)
            if m is None:
                continue
            where = f"{name} ({mode})"
            f, c = m["figures"], m["consistency"]["psnr_db"]
            x = f["model"]
            if x["psnr_db"] is not None:
                put("invented_vs_flat_db", x["psnr_db"] - f["flat_mean"]["psnr_db"], where)
                put("detail_ratio", x["detail_ratio"], where)
            if x["swd_texture"] is not None and f["gt_shifted"]["swd_texture"]:
                put("swd_texture_ratio", x["swd_texture"] / f["gt_shifted"]["swd_texture"], where)
                put("swd_raw", x["swd_raw"], where)
            if c["model"] is not None:
                put("consistency_gap_db", c["gt"] - c["model"], where)
            if mode == "blockout" and m.get("object"):
                o = m["object"]["model"]
                put("blockout_object_mean_db", o["mean_db"], where)
                put("blockout_object_worst_db", o["worst_db"], f"{where}, frame {o['worst_frame']}")
    return out


def fmt(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    return f"{x:.{nd}f}"


def plots(results, out_root):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    colours = {"mirage": "tab:blue", "pointcloud": "tab:red", "nomemory": "tab:gray", "oracle": "tab:green"}
    labels = {"mirage": "Mirage (latent memory)", "pointcloud": "RGB point cloud", "nomemory": "no memory",
              "oracle": "oracle (exact reprojection)"}
    files = []
    results = {k: r for k, r in results.items() if "summary" in r}  # the memory's figures are as built only
    for name, r in results.items():
        if r.get("kind") != "objects":
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, colour, label in (("tracked", "tab:blue", "Mirage (one bank per moving object)"),
                                 ("static_only", "tab:orange", "static-only memory (object baked in)")):
            ys = r["summary"][m]["object_psnr_per_segment"]
            ax.plot([i + 1 for i, y in enumerate(ys) if y is not None], [y for y in ys if y is not None], "o-",
                    color=colour, label=label)
        ax.axhline(TARGETS["object_psnr_db"][2], color="k", ls="--", lw=0.8, label="target")
        ax.set_xlabel("segment")
        ax.set_ylabel("PSNR on the object's pixels (dB)")
        ax.set_title(f"{name}: the moving {r['object']} against ground truth")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(os.path.join(out_root, f"object_psnr_{name}.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    results = {k: r for k, r in results.items() if r.get("kind") != "objects"}
    if not results:
        return files

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for m in [k for k in ("mirage", "pointcloud", "nomemory") if k in r["summary"]]:
            s = r["summary"][m]
            ax.plot(s["frames_after_segment"], s["memory_bytes"], "o-", color=colours[m], label=labels[m], ms=3)
        ax.set_yscale("log")
        ax.set_xlabel("frames generated")
        ax.set_ylabel("memory bytes (log)")
        ax.set_title(f"{name}: memory after each segment")
        if name == "loop":
            L = r["spec"]["loop_frames"]
            for k in range(1, r["spec"]["loops"]):
                ax.axvline(k * L, color="k", lw=0.5, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out_root, "memory_vs_frames.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        for m in [k for k in ("mirage", "pointcloud", "nomemory") if k in r["summary"]]:
            s = r["summary"][m]
            ax.plot(range(1, len(s["seconds_per_frame"]) + 1), [1000 * x for x in s["seconds_per_frame"]], "o-",
                    color=colours[m], label=labels[m], ms=3)
        ax.axhline(100, color="k", ls="--", lw=0.8, label="10 frames/s")
        ax.set_xlabel("segment")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("ms per frame")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name}: time per frame as the path grows")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out_root, "seconds_per_frame.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    for name, r in results.items():
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
        order = r["order"]
        cap = lambda v: None if v is None else min(v, 50.0)  # noqa: E731  identical frames plot at 50 dB
        for m in [k for k in ("oracle", "mirage", "pointcloud", "nomemory") if k in r["summary"]]:
            a1.plot(order, [cap(v) for v in r["per_frame"][m]["covis_psnr"]], "-", color=colours[m], label=labels[m])
        for m in [k for k in ("mirage", "pointcloud", "nomemory") if k in r["summary"]]:
            a2.plot(order, [cap(v) for v in r["per_frame"][m]["psnr"]], "-", color=colours[m], label=labels[m])
        rv = sorted(int(k) for k in r["revisit_frames"])
        for ax in (a1, a2):
            for n in rv:
                ax.axvspan(n - 0.5, n + 0.5, color="gold", alpha=0.25, lw=0)
            seg = r["spec"]["segment_length"]
            for k in range(seg, len(order), seg):
                ax.axvline(order[k] - 0.5, color="k", lw=0.3, ls=":")
            ax.grid(True, alpha=0.3)
            ax.set_ylabel("PSNR dB (cap 50)")
        a1.set_title(f"{name}: PSNR on pixels covisible with the reference (yellow = revisit frames)")
        a2.set_title("whole-frame PSNR against ground truth")
        a2.set_xlabel("frame")
        a1.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        files.append(os.path.join(out_root, f"psnr_per_frame_{name}.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def invention_lines(name, r, meta):
    """The report's tables of a scene's invented pixels, one per mode."""
    import invented
    L = []
    for mode, m in r.get("modes", {}).items():
        f, c = m["figures"], m["consistency"]
        L += ["", f"### `{name}`, {mode}: invented pixels ({100 * m['mean_invented_share']:.0f} % of a frame's pixels "
                  f"on average; self-consistency over {c['pairs']} frame pairs, {c['pixels']} pixels)", "",
              "| image | invented PSNR dB | detail ratio | SWD raw | SWD texture | self-consistency across segments dB |",
              "|---|---|---|---|---|---|"]
        rows = [("model", f"`{meta['model']}` (this model)")]
        if "compare" in f:
            rows.append(("compare", f"`{m['compare']}` (compared)"))
        rows += [(k, invented.ROW_LABELS[k]) for k in invented.REFERENCE_ROWS]
        for key, label in rows:
            x = f[key]
            own = fmt(c["psnr_db"].get(key)) if key in c["psnr_db"] else ""
            L.append(f"| {label} | {fmt(x['psnr_db'])} | {fmt(x['detail_ratio'])} | {fmt(x['swd_raw'])} | "
                     f"{fmt(x['swd_texture'])} | {own} |")
        L.append(f"| ground truth (its own frames) | | 1.00 | 0.00 | 0.00 | {fmt(c['psnr_db']['gt'])} |")
        if m.get("compare_note"):
            L += ["", f"The compared row: {m['compare_note']}."]
        if m.get("same_frames_as"):
            L += ["", f"Every frame is byte for byte that of {m['same_frames_as']}: the add-on and the model read "
                      f"no material of this scene."]
        if m.get("object"):
            L += ["", f"Moving object, PSNR per frame it is seen (at least {100 * OBJECT_MIN_SHARE:.1f} % of the "
                      f"pixels; the reference frame left out):", "",
                  "| image | mean dB | worst frame dB | frames |", "|---|---|---|---|"]
            for key, o in m["object"].items():
                label = f"`{meta['model']}`" if key == "model" else f"`{m['compare']}` (compared)"
                L.append(f"| {label} | {fmt(o['mean_db'])} | {fmt(o['worst_db'])} (frame {o['worst_frame']}) | "
                         f"{len(o['per_frame'])} |")
    return L


def write_report(results, tg, meta, out_root):
    L = [f"# Mirage bench ({meta['mode']} mode)", "",
         f"model `{meta['model']}` (files sha256 {meta.get('model_digest', 'n/a')}), {meta['machine']}, total {meta['total_seconds']:.0f} s, {meta['date']}", "",
         f"Model: {(meta.get('model_config') or {}).get('description', 'n/a')}. Ground truth: Cycles CPU, "
         f"{meta['samples']} samples, denoiser {'on' if meta['denoise'] else 'off'}.", "",
         "## Targets", "", "| target | scene | value | pass |", "|---|---|---|---|"]
    verdict = lambda row: "n/a" if row["pass"] is None else ("PASS" if row["pass"] else "MISS")  # noqa: E731
    for key, rows in tg.items():
        if key in INVENTED_TARGETS:
            continue
        for row in rows:
            v = row["value"]
            shown = f"{100 * v:.1f} %" if key == "loop_growth" and v is not None else fmt(v)
            L.append(f"| {row['target']} | {row['scene']} | {shown} | {verdict(row)} |")
    # the invented pixels' targets: one row per scene and mode, one column per target
    where = list(dict.fromkeys(row["scene"] for key in INVENTED_TARGETS for row in tg.get(key, [])))
    if where:
        L += ["", "Invented pixels (what no reference showed; docs/benchmarks.md defines each figure):", "",
              "| scene (mode) | " + " | ".join(INVENTED_TARGETS.values()) + " |",
              "|---|" + "---|" * len(INVENTED_TARGETS)]
        for w in where:
            cells = []
            for key in INVENTED_TARGETS:
                row = next((x for x in tg.get(key, []) if x["scene"] == w), None)
                cells.append("n/a" if row is None else f"{fmt(row['value'])} {verdict(row)}")
            L.append(f"| {w} | " + " | ".join(cells) + " |")
    for name, r in results.items():
        s = r.get("summary")
        if s is None:
            L += invention_lines(name, r, meta)
            continue
        if r.get("kind") == "objects":
            L += ["", f"## Scene `{name}`: {r['frames']} frames at {r['width']}x{r['height']}, {r['segments']} segments, "
                      f"moving object '{r['object']}'", "",
                  "| memory | object PSNR dB per segment | object PSNR dB (all) | uncovered background PSNR dB | "
                  "never-covered background PSNR dB |", "|---|---|---|---|---|"]
            for m in ("tracked", "static_only"):
                x = s[m]
                L.append(f"| {m} | {', '.join(fmt(v, 1) for v in x['object_psnr_per_segment'])} | "
                         f"{fmt(x['object_psnr_db'])} | {fmt(x['uncovered_psnr_db'])} | {fmt(x['never_covered_psnr_db'])} |")
            x = s["tracked"]
            L += ["", "Tracked object, per segment, split by whether the reference saw the surface (a face it "
                      "showed) or not (a face turned toward the camera later: its look is not in any input):", "",
                  "| object pixels | PSNR dB per segment | pixel-frames per segment |", "|---|---|---|"]
            for key in ("seen", "unseen"):
                L.append(f"| {key} by the reference | {', '.join(fmt(v, 1) for v in x[f'object_{key}_psnr_per_segment'])} | "
                         f"{', '.join(str(v) for v in x[f'object_{key}_pixels_per_segment'])} |")
            L.append(f"| all, the never-seen faces in their ground truth's mean colour (a bound for a flat fill) | "
                     f"{', '.join(fmt(v, 1) for v in x['object_flat_oracle_psnr_per_segment'])} | |")
            L += ["", f"Uncovered background: {r['uncovered_pixels']} pixel-frames that the reference saw and the "
                      f"object later stood in front of; never-covered: the reference's other static pixels. "
                      f"Segments without the object in view show n/a. Memory at the end: {r['memory_bytes']} bytes."]
            L += invention_lines(name, r, meta)
            continue
        L += ["", f"## Scene `{name}`: {r['frames']} frames at {r['width']}x{r['height']}, "
                  f"{r['segments']} segments of {r['spec']['segment_length']}, latent {r['latent']}", "",
              "| method | covisible PSNR dB | covisible SSIM | whole-frame PSNR dB | revisit PSNR dB (frames) | "
              "revisit vs own earlier frame dB | flicker (MAE, x GT) | memory after 5 seg | memory at end | "
              "median ms/frame |", "|---|---|---|---|---|---|---|---|---|---|"]
        for m in [k for k in ("mirage", "oracle", "pointcloud", "nomemory") if k in s]:
            x = s[m]
            if m == "oracle":
                L.append(f"| oracle | {fmt(x['covisible_psnr_db'])} | {fmt(x['covisible_ssim'], 3)} | | | | | | | |")
                continue
            mem = x["memory_bytes"]
            spf = sorted(x["seconds_per_frame"])
            L.append(f"| {m} | {fmt(x['covisible_psnr_db'])} | {fmt(x['covisible_ssim'], 3)} | {fmt(x['full_psnr_db'])} | "
                     f"{fmt(x['revisit_psnr_db'])} ({x['revisit_frames']}) | {fmt(x['revisit_self_psnr_db'])} | "
                     f"{fmt(x['flicker_mae'], 4)} "
                     f"({fmt(x['flicker_ratio'])}x) | {mem[4] if len(mem) >= 5 else 'n/a'} | {mem[-1]} | "
                     f"{fmt(1000 * spf[len(spf) // 2], 1)} |")
        L.append(f"| ground truth | | | | | | {fmt(s['gt']['flicker_mae'], 4)} (1.00x) | | | |")
        t = r["timing"]
        L += ["", f"Timing: Blender session {t['blender_session_s']} s (ground truth {t['gt_render_s']} s for "
                  f"{t['gt_frames_rendered']} new frames, Generate {t['generate_s']} s of which backend "
                  f"{t['mirage_backend_s']} s); point cloud {t.get('pointcloud_s', 'not run')} s; "
                  f"no memory {t.get('nomemory_s', 'not run')} s; "
                  f"metrics {t['metrics_s']} s."]
        L += invention_lines(name, r, meta)
    sheets = [m["sheet"] for r in results.values() for m in r.get("modes", {}).values()]
    L += ["", "## Contact sheets", "", "Rows: ground truth, this model, the compared model, the ground truth with "
          "all but the invented pixels dimmed; invented pixels outlined in magenta.", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in sheets]
    L += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in meta["plots"]]
    L += ["", "Definitions: docs/benchmarks.md."]
    with open(os.path.join(out_root, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", help="the built extension zip (build.py passes it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench"))
    ap.add_argument("--quick", action="store_true", help="small scenes for CI (about 2 minutes)")
    ap.add_argument("--model", default="builtin", help="model to generate with (default builtin)")
    ap.add_argument("--cache", help="ground-truth cache folder (default <out>/cache)")
    ap.add_argument("--scenes", default=",".join(FULL), help=f"comma-separated subset of: {', '.join(FULL)}")
    ap.add_argument("--compare", default="compact",
                    help="model run beside it on the same job, for the invented pixels and the contact sheets "
                         "(default compact, the previous default; 'none' to skip)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="as built and/or as a grey blockout (default built,blockout)")
    ap.add_argument("--blender-session", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.blender_session:
        return blender_session(args.blender_session)
    asked = {x.strip() for x in args.modes.split(",") if x.strip()}
    if not asked or asked - set(MODES):
        ap.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")
    args.modes = [m for m in MODES if m in asked]  # as built first: the blockout replaces the materials
    if args.compare.lower() == "none":
        args.compare = None
    if not args.zip:
        ap.error("--zip is required (python3 build.py bench passes it)")
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    t_start = time.perf_counter()
    out_root = os.path.abspath(args.out)
    os.makedirs(out_root, exist_ok=True)
    specs = QUICK if args.quick else FULL
    names = [n.strip() for n in args.scenes.split(",") if n.strip()]
    for n in names:
        if n not in specs:
            ap.error(f"unknown scene {n!r}")
    from backend.protocol import ModelError
    for name in (args.model, args.compare):
        try:
            if name:
                runs_model(name)
        except ModelError as e:
            ap.error(str(e))
    results = {}
    for name in names:
        results[name] = evaluate(name, specs[name], args, out_root,
                                 os.path.abspath(args.cache or os.path.join(out_root, "cache")))
    tg = targets(results)
    import torch
    meta = {"mode": "quick" if args.quick else "full", "model": args.model, "compare": args.compare,
            "modes": args.modes,
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
                       f"Blender {blender_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M"), "samples": SAMPLES, "denoise": DENOISE}
    try:
        with open(os.path.join(ROOT, "models", args.model, "model.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        meta["model_config"] = {k: cfg.get(k) for k in ("class", "alias", "args", "description")}
        h = hashlib.sha256()
        folder = os.path.join(ROOT, "models", args.model)
        for fn in sorted(os.listdir(folder)):
            if fn.endswith((".json", ".safetensors")):
                with open(os.path.join(folder, fn), "rb") as f:
                    h.update(fn.encode() + hashlib.sha256(f.read()).digest())
        meta["model_digest"] = h.hexdigest()[:16]
    except (OSError, ValueError):
        meta["model_config"] = None
    meta["plots"] = plots(results, out_root)
    meta["total_seconds"] = time.perf_counter() - t_start
    with open(os.path.join(out_root, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "targets": tg, "scenes": results}, f, indent=1,
                  default=lambda o: None)
    write_report(results, tg, meta, out_root)
    for key, rows in tg.items():
        for row in rows:
            v = row["value"]
            log(f"{'PASS' if row['pass'] else 'MISS'}  {row['target']} [{row['scene']}]: {fmt(v, 3)}")
    log(f"report: {os.path.join(out_root, 'report.md')} ({meta['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
