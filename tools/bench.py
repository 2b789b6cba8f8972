"""The bench: Mirage's own measurement instrument (python3 build.py bench [--quick] [--model NAME]).

For each evaluation scene a fresh Blender (bpy) subprocess installs the built extension zip, builds the
scene, renders the ground truth with Cycles, makes the bench's own per-pixel maps of it (tools/surface_maps.py)
and renders the scene once more with its textures laid out differently (the other-layout row), all cached
under <out>/cache; it sets the reference image to the ground truth of the first frame and runs Generate, i.e.
the add-on's own export and backend process, as built and as a grey blockout. Then this process runs the
baselines (tools/baselines.py) through the same segment loop on the same job.json (backend.pipeline.Run with
memory=...), an oracle that forward-warps the reference with exact depth, and measures the frames against the
ground truth with its own maps: the memory's figures, the actors' (tools/actors.py) and the invented pixels'
(tools/invented.py). Writes <out>/report.md, report.json, plots and contact sheets.
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
LAYOUT_SEED = 1   # scenes.other_layout's seed for the other-layout row

_S = {"width": 256, "height": 144, "frames": 48, "segment_length": 8}
_Q = {"width": 128, "height": 72, "frames": 24, "segment_length": 4}
FULL = {
    "pillar": {"builder": "pillar", **_S},
    "loop": {"builder": "loop", "width": 256, "height": 144, "loop_frames": 40, "loops": 4, "segment_length": 8},
    "objects": {"builder": "objects", **_S},
    "hall": {"builder": "hall", **_S, "baselines": ["pointcloud"]},
    "studio": {"builder": "studio", **_S, "baselines": ["pointcloud"]},
    "walker": {"builder": "walker", **_S},
    "props": {"builder": "props", **_S},
}
QUICK = {
    "pillar": {"builder": "pillar", **_Q},
    "loop": {"builder": "loop", "width": 128, "height": 72, "loop_frames": 16, "loops": 4, "segment_length": 4},
    "objects": {"builder": "objects", **_Q},
    "hall": {"builder": "hall", **_Q, "baselines": ["pointcloud"]},
    "studio": {"builder": "studio", **_Q, "baselines": ["pointcloud"]},
    "walker": {"builder": "walker", **_Q},
    "props": {"builder": "props", **_Q},
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
    # actors, per actor (as built; blockout where named)
    "actor_mean_db": ("actor PSNR >= 26 dB, mean over the frames that show it (as built)", ">=", 26.0),
    "actor_worst_db": ("actor PSNR >= 22 dB in its worst frame (as built)", ">=", 22.0),
    "actor_mean_blockout_db": ("actor PSNR >= 24 dB, mean over the frames that show it (blockout)", ">=", 24.0),
    "actor_worst_blockout_db": ("actor PSNR >= 20 dB in its worst frame (blockout)", ">=", 20.0),
    "actor_seen_db": ("actor pixels a reference saw: PSNR >= 28 dB in every segment (worst segment)", ">=", 28.0),
    "actor_gain_db": ("actor PSNR above the static-only memory by 3 dB (worst segment, as built)", ">=", 3.0),
    "uncovered_gap_db": ("background an actor uncovered within 1.5 dB of never-covered background", "<=", 1.5),
    # invented pixels (what no reference showed), every scene, both modes; against the other layout's row
    "shown_vs_other_db": ("invented, shown objects: PSNR >= the other layout's - 1 dB", ">=", -1.0),
    "shown_detail": ("invented, shown objects: detail ratio 0.7 to 1.4", "between", (0.7, 1.4)),
    "shown_swd_1": ("invented, shown objects: texture SWD <= 2x the other layout's (full size)", "<=", 2.0),
    "shown_swd_2": ("invented, shown objects: texture SWD <= 2x the other layout's (1/2 size)", "<=", 2.0),
    "shown_swd_4": ("invented, shown objects: texture SWD <= 2x the other layout's (1/4 size)", "<=", 2.0),
    "never_detail": ("invented, never-shown objects: detail ratio 0.6 to 1.6", "between", (0.6, 1.6)),
    "never_swd_1": ("invented, never-shown objects: texture SWD <= 3x the other layout's (full size)", "<=", 3.0),
    "never_swd_2": ("invented, never-shown objects: texture SWD <= 3x the other layout's (1/2 size)", "<=", 3.0),
    "never_swd_4": ("invented, never-shown objects: texture SWD <= 3x the other layout's (1/4 size)", "<=", 3.0),
    "consistency_gap_db": ("self-consistency across segments within 1.5 dB of the ground truth's own", "<=", 1.5),
}
# the report's column heads for the invented pixels' targets
INVENTED_TARGETS = {"shown_vs_other_db": "shown: PSNR - other layout's, dB (>= -1)",
                    "shown_detail": "shown: detail (0.7-1.4)",
                    "shown_swd_1": "shown: SWD / other's, full (<= 2)",
                    "shown_swd_2": "shown: 1/2 (<= 2)", "shown_swd_4": "shown: 1/4 (<= 2)",
                    "never_detail": "never shown: detail (0.6-1.6)",
                    "never_swd_1": "never shown: SWD / other's, full (<= 3)",
                    "never_swd_2": "never shown: 1/2 (<= 3)", "never_swd_4": "never shown: 1/4 (<= 3)",
                    "consistency_gap_db": "self-consistency below the ground truth's, dB (<= 1.5)"}
ACTOR_TARGETS = ("actor_mean_db", "actor_worst_db", "actor_mean_blockout_db", "actor_worst_blockout_db",
                 "actor_seen_db", "actor_gain_db", "uncovered_gap_db")
SPLITS = {"all": "all invented pixels", "shown": "on objects the reference shows part of",
          "never_shown": "on objects the reference does not show"}


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
    """Ground truth depends on the scene, its size, the renderer settings and Blender; the maps on their
    format; the other layout on its seed: all in the key."""
    import surface_maps
    keep = {k: v for k, v in spec.items() if k not in ("segment_length", "baselines")}
    key = json.dumps({"scene": keep, "samples": SAMPLES, "denoise": DENOISE, "scenes_version": scenes_version,
                      "blender": blender, "maps": surface_maps.VERSION, "layout_seed": LAYOUT_SEED}, sort_keys=True)
    return os.path.join(cache_root, f"{name}-{spec['width']}x{spec['height']}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")


# ---------------------------------------------------------------------------------------------------
# The Blender side: runs in a fresh bpy subprocess (bpy state is global, one scene per process).
# ---------------------------------------------------------------------------------------------------
def render_missing(scene, frames, folder):
    """Render the frames that `folder` does not hold yet (Cycles, as set up); returns how many."""
    import bpy
    os.makedirs(folder, exist_ok=True)
    done = 0
    for n in frames:
        path = os.path.join(folder, f"{n:06d}.png")
        if os.path.isfile(path):
            continue
        scene.frame_set(n)
        scene.render.filepath = path + ".part.png"
        bpy.ops.render.render(write_still=True)
        os.replace(path + ".part.png", path)
        done += 1
    return done


def blender_session(task_path):
    with open(task_path, encoding="utf-8") as f:
        task = json.load(f)
    sys.path.insert(0, HERE)
    import scenes
    import surface_maps
    import bpy
    result = {"ok": False}
    t0 = time.perf_counter()
    scenes.install_extension(task["zip"])
    spec = task["spec"]
    if spec["builder"] == "loop":
        scene = scenes.build_loop(spec["width"], spec["height"], spec["loop_frames"], spec["loops"])
    else:
        scene = scenes.BENCH_BUILDERS[spec["builder"]](spec["width"], spec["height"], spec["frames"])
    result["build_seconds"] = round(time.perf_counter() - t0, 2)
    result["textures"] = scenes.texture_kinds(scene)

    # ground truth: Cycles on the CPU, cached by scene parameters
    t0 = time.perf_counter()
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = task["samples"]
    scene.cycles.use_denoising = task["denoise"]
    r.image_settings.file_format = "PNG"
    result["gt_rendered"] = render_missing(scene, task["gt_frames"], task["cache"])
    result["gt_seconds"] = round(time.perf_counter() - t0, 2)
    # the bench's own maps of the ground truth (object, depth, rest-space surface position per pixel)
    t0 = time.perf_counter()
    result["maps_made"] = surface_maps.export(scene, task["gt_frames"], task["cache"])
    result["maps_seconds"] = round(time.perf_counter() - t0, 2)
    # the other layout: the same scene, its textures laid out differently (a calibration row, never the input)
    t0 = time.perf_counter()
    saved = scenes.other_layout(scene, task["layout_seed"])
    try:
        result["other_rendered"] = render_missing(scene, task["gt_frames"], os.path.join(task["cache"], "other"))
    finally:
        scenes.restore_layout(saved)
    result["other_seconds"] = round(time.perf_counter() - t0, 2)
    scene.frame_set(scene.frame_start)

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
            "model": args.model, "layout_seed": LAYOUT_SEED, "result": os.path.join(scene_dir, "blender_result.json")}
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


def load_run(name, spec, args, job_dir, cache, maps):
    """What every figure needs from one Generate: the job and its frames, and from the bench's own cache the
    cameras, exact depth, per-pixel maps, ground truth and the other layout. The job's cameras must be the
    scene's (checked); the job's depth is read only by the baselines, which take the product's inputs."""
    import numpy as np
    job = load_job(job_dir)
    job["model"] = args.model  # the add-on may have run it under an offered name (see blender_session)
    with open(os.path.join(job_dir, "run.json")) as f:
        run = json.load(f)
    order = [fr["frame"] for fr in job["frames"]]
    fm = {n: maps.frame(gt_frame_for(spec, n)) for n in order}
    for fr in job["frames"]:
        n, m = fr["frame"], fm[fr["frame"]]
        if not (np.allclose(np.array(fr["K"]), m["K"], rtol=1e-5, atol=1e-4)
                and np.allclose(np.array(fr["cam_to_world"]), m["c2w"], rtol=0, atol=1e-4)):
            raise SystemExit(f"bench: the job's camera on frame {n} of '{name}' is not the scene's (job K "
                             f"{fr['K']}, c2w {fr['cam_to_world']}; scene K {m['K'].tolist()}, c2w {m['c2w'].tolist()})")
    paths = {fr["frame"]: fr["depth"] for fr in job["frames"]}
    gt = {n: load_rgb(os.path.join(cache, f"{gt_frame_for(spec, n):06d}.png")) for n in order}
    other = {n: load_rgb(os.path.join(cache, "other", f"{gt_frame_for(spec, n):06d}.png")) for n in order}
    frames = {n: load_rgb(frame_path(job_dir, n)) for n in order}
    return {"job": job, "job_dir": job_dir, "run": run, "order": order, "maps": fm,
            "K": {n: fm[n]["K"] for n in order}, "c2w": {n: fm[n]["c2w"] for n in order},
            "depth": {n: fm[n]["depth"] for n in order},
            "job_depth": lambda n: np.load(paths[n]).astype(np.float64),
            "gt": gt, "other": other, "frames": frames, "ref": job["reference"]["frame"],
            "gt_frame": {n: gt_frame_for(spec, n) for n in order}}


def evaluate(name, spec, args, out_root, cache_root):
    """One scene: a Blender session (ground truth, maps, other layout, Generate per mode), then the figures. As
    built, the memory's figures (static scenes: baselines, covisible, revisit, flicker, memory, speed; actor
    scenes: the static-only memory beside the product); in every mode the actors' and the invented pixels'
    figures and the contact sheet."""
    import surface_maps
    scene_dir = os.path.join(out_root, name)
    cache = cache_dir(cache_root, name, spec, scenes_version(), blender_version())
    log(f"{name}: Blender session (install zip, build scene, Cycles ground truth, maps, other layout, Generate "
        f"{', '.join(args.modes)})")
    job_dirs, bres = run_blender(name, spec, args, scene_dir, cache)
    log(f"{name}: {bres['gt_rendered']} ground-truth frames rendered in {bres['gt_seconds']} s, maps of "
        f"{bres['maps_made']} in {bres['maps_seconds']} s, {bres['other_rendered']} other-layout frames in "
        f"{bres['other_seconds']} s; Generate took "
        + ", ".join(f"{m['generate_seconds']} s {mode}" for mode, m in bres["modes"].items()))
    if bres.get("model_alias"):
        log(f"{name}: {bres['model_alias']}")
    maps = surface_maps.Maps(cache)
    kind = "actors" if maps.actors else "static"
    result = {"scene": name, "spec": spec, "kind": kind, "model": args.model, "model_alias": bres.get("model_alias"),
              "textures": bres.get("textures"), "actors": sorted(maps.actors.values()),
              "timing": {"blender_session_s": bres["wall_seconds"], "gt_render_s": bres["gt_seconds"],
                         "gt_frames_rendered": bres["gt_rendered"], "maps_s": bres["maps_seconds"],
                         "other_layout_s": bres["other_seconds"], "other_frames_rendered": bres["other_rendered"],
                         **{f"generate_{m}_s": x["generate_seconds"] for m, x in bres["modes"].items()}}}
    modes, earlier, shared = {}, {}, {}
    for mode in args.modes:
        run = load_run(name, spec, args, job_dirs[mode], cache, maps)
        if mode == "built":
            if kind == "static":
                figs = memory_figures(name, spec, args, scene_dir, run, bres)
                result["timing"].update(figs.pop("timing"))
                result.update(figs)
            else:
                result.update(static_only_figures(name, args, scene_dir, run, maps, shared))
        modes[mode] = invention_figures(name, mode, args, mode_dir(scene_dir, mode), run, out_root, earlier,
                                        maps, shared)
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
    # baselines through the same segment loop, on the same job: the depth they read is the job's, as the product's
    model = load_model(job["model"])
    job_c2w = {fr["frame"]: np.array(fr["cam_to_world"]) for fr in job["frames"]}
    by_pose = {np.asarray(job_c2w[n], np.float64).round(6).tobytes(): n for n in order}

    def depth_lookup(K_, c2w_):
        n = by_pose.get(np.asarray(c2w_, np.float64).round(6).tobytes())
        return None if n is None else torch.from_numpy(run["job_depth"](n))

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
                   "gt_frames_rendered": bres["gt_rendered"],
                   "mirage_backend_s": mirage_run.get("seconds"),
                   **{f"{m}_s": runs[m]["seconds"] for m in runs if m != "mirage"},
                   "metrics_s": round(metric_seconds, 2)},
    }




def segments_of(run):
    """{frame: index of its segment} from the run's run.json."""
    return {n: i for i, sg in enumerate(run["run"]["per_segment"]) for n in run["order"]
            if sg["frames"][0] <= n <= sg["frames"][1]}


def scene_geometry(run, maps, shared):
    """What the figures need that does not depend on the mode: the invented masks, their split into shown and
    never-shown objects, the still pixels, the self-consistency pairs and the uncovered pixels. Computed once
    per scene into `shared`."""
    import numpy as np
    import actors
    import invented
    if shared:
        return shared
    order, ref, fm = run["order"], run["ref"], run["maps"]
    refs = [fm[ref]]
    by_gt = {}  # frames that repeat a pose (the loop) share their ground truth's masks
    masks = {}
    for n in order:
        key = id(fm[n])
        if key not in by_gt:
            by_gt[key] = metrics_erode_unseen(fm[n], refs, maps.actors)
        masks[n] = by_gt[key]
    masks[ref] = np.zeros_like(masks[ref])  # the reference frame is the reference
    shown = actors.shown_objects(refs, invented.MIN_SHOWN_PIXELS)
    split = {"all": masks, "shown": {}, "never_shown": {}}
    for n in order:
        obj = fm[n]["obj"]
        on_shown = np.isin(obj, list(shown))
        split["shown"][n] = masks[n] & on_shown
        split["never_shown"][n] = masks[n] & (obj > 0) & ~on_shown
    static = {n: (fm[n]["obj"] > 0) & ~np.isin(fm[n]["obj"], list(maps.actors)) for n in order}
    views = {n: (fm[n]["depth"], fm[n]["K"], fm[n]["c2w"]) for n in order}
    segment_of = segments_of(run)
    pairs = invented.partners(order, views, segment_of, masks, static)
    shared.update(masks=masks, split=split, static=static, views=views, segment_of=segment_of, pairs=pairs,
                  shown=sorted(maps.names[i - 1] for i in shown),
                  never_shown=sorted(set(maps.names) - {maps.names[i - 1] for i in shown}),
                  uncovered=actors.uncovered_masks(order, fm, ref, maps.actors) if maps.actors else None)
    return shared


def metrics_erode_unseen(frame, refs, actor_ids):
    import actors
    import metrics
    return metrics.erode(actors.unseen_mask(frame, refs, actor_ids))


def static_only_figures(name, args, scene_dir, run, maps, shared):
    """An actor scene as built: the product's memory with the actors baked into the still world (the job
    without its moving objects, through the same segment loop) beside the product, on each actor's pixels per
    segment. Returns {"static_only": {actor: {"psnr_per_segment", "product_psnr_per_segment"}}} or a note when
    the product's job names no moving object."""
    import actors
    job = run["job"]
    if not job.get("objects"):
        return {"static_only": None, "static_only_note": "the add-on's job names no moving object"}
    baked = dict(job)
    baked.pop("objects")
    baked["frames"] = [{k: v for k, v in fr.items() if k not in ("objects", "ids", "light", "albedo")}
                       for fr in job["frames"]]
    folder = os.path.join(scene_dir, "static_only")
    t0 = time.perf_counter()
    run_segments(baked, folder)
    log(f"{name}: static-only memory ran in {time.perf_counter() - t0:.1f} s")
    frames = {n: load_rgb(frame_path(folder, n)) for n in run["order"]}
    geo = scene_geometry(run, maps, shared)
    figs = actors.actor_figures(run["order"], run["ref"], run["maps"], [run["maps"][run["ref"]]], maps.actors,
                                run["gt"], {"product": run["frames"], "static_only": frames}, geo["segment_of"])
    return {"static_only": {a: {"psnr_per_segment": f["images"]["static_only"]["psnr_per_segment"],
                                "product_psnr_per_segment": f["images"]["product"]["psnr_per_segment"]}
                            for a, f in figs.items()},
            "job_objects": [o["name"] for o in job["objects"]]}


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




def invention_figures(name, mode, args, out_dir, run, out_root, earlier, maps, shared):
    """One mode's figures (docs/benchmarks.md): the invented pixels', split into shown and never-shown objects,
    for the model, the compared model, the other layout and the rows made from the ground truth; the actors'
    and what they uncovered; the contact sheet.

    earlier: {frames digest: (mode, figures)} of the scene's modes so far; a mode whose frames are byte for byte
    those of an earlier one (a static scene when no model reads the materials) takes its figures."""
    import numpy as np
    import torch
    import actors
    import invented
    import sheet

    order, gt, ref = run["order"], run["gt"], run["ref"]
    images = {"model": run["frames"]}
    note = None
    if args.compare:
        images["compare"], note = compare_frames(name, mode, args, out_dir, run)
    images["other_layout"] = run["other"]
    digest = hashlib.sha256()
    for key in ("model", "compare"):
        for n in order if key in images else ():
            digest.update(images[key][n].tobytes())
    digest = digest.hexdigest()
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: see memory_figures
    geo = scene_geometry(run, maps, shared)
    masks = geo["masks"]
    frames = [n for n in order if n != ref]
    if digest in earlier:
        same, out = earlier[digest]
        out = dict(out, same_frames_as=same)
        log(f"{name} ({mode}): the frames are those of {same}, and so are the figures")
    else:
        same = {n: run["gt_frame"][n] for n in frames}  # the loop's later laps: the ground truth's rows once
        figures = {split: invented.image_figures(frames, gt, geo["split"][split], images, gt[ref], swd=split != "all",
                                                 same=same, fixed=("other_layout",))
                   for split in SPLITS}
        consistency = invented.self_consistency(geo["pairs"], geo["views"], masks, dict(images, gt=gt), geo["static"])
        out = {"compare": args.compare, "compare_note": note, "figures": figures, "consistency": consistency,
               "pairs": {str(n): m for n, m in geo["pairs"].items()},
               "shown_objects": geo["shown"], "never_shown_objects": geo["never_shown"],
               "invented_share": {str(n): float(masks[n].mean()) for n in frames},
               "mean_invented_share": float(np.mean([masks[n].mean() for n in frames])),
               "split_share": {s: float(np.mean([geo["split"][s][n].mean() for n in frames])) for s in SPLITS}}
        if maps.actors:
            sets = {k: images[k] for k in ("model", "compare", "other_layout") if k in images}
            out["actors"] = actors.actor_figures(order, ref, run["maps"], [run["maps"][ref]], maps.actors, gt, sets,
                                                 geo["segment_of"])
            out["uncovered"] = actors.uncovered_figures(geo["uncovered"], gt, sets)
        earlier[digest] = (mode, out)
    torch.set_num_threads(threads)
    shown = sheet.spread(order, 6, skip={ref})
    rows = [("ground truth", gt), (f"{args.model}\n(this model)", images["model"])]
    if args.compare and note is None:
        rows.append((f"{args.compare}\n(compared)", images["compare"]))
    rows.append(("other layout\n(calibration)", images["other_layout"]))
    rows.append(("invented pixels\n(the rest dimmed)", sheet.mask_row(gt, masks, shown)))
    actor_px = ({n: np.isin(run["maps"][n]["obj"], list(maps.actors)) for n in shown} if maps.actors else None)
    title = (f"{name}, {mode}: invented pixels (no reference saw them) outlined in magenta"
             + (", actors in cyan" if actor_px else ""))
    out["sheet"] = sheet.contact_sheet(os.path.join(out_root, f"sheet_{name}_{mode}.png"), shown, rows, masks, title,
                                       second=actor_px)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    f, c = out["figures"], out["consistency"]["psnr_db"]
    for split in ("shown", "never_shown"):
        x, o = f[split]["model"], f[split]["other_layout"]
        if x["pixels"]:
            log(f"{name} ({mode}): invented on {split.replace('_', '-')} objects ({100 * out['split_share'][split]:.0f} % "
                f"of the pixels): PSNR {fmt(x['psnr_db'])} dB (other layout {fmt(o['psnr_db'])}), detail "
                f"{fmt(x['detail_ratio'])}, texture SWD {fmt(x.get('swd_texture'))} / {fmt(x.get('swd_texture_2'))} / "
                f"{fmt(x.get('swd_texture_4'))} (other layout {fmt(o.get('swd_texture'))} / {fmt(o.get('swd_texture_2'))} "
                f"/ {fmt(o.get('swd_texture_4'))})")
    log(f"{name} ({mode}): self-consistency {fmt(c['model'])} dB (ground truth {fmt(c['gt'])}); {out['seconds']} s")
    for a, x in (out.get("actors") or {}).items():
        m = x["images"]["model"]
        log(f"{name} ({mode}): actor {a}: mean {fmt(m['mean_db'])} dB, worst {fmt(m['worst_db'])} dB (frame "
            f"{m['worst_frame']}), seen part per segment {', '.join(fmt(v, 1) for v in m['seen_psnr_per_segment'])}")
    return out


def passes(op, thr, value):
    if value is None or not math.isfinite(value):
        return None
    if op == "between":
        return thr[0] <= value <= thr[1]
    return value <= thr if op == "<=" else value >= thr


def ratio(a, b):
    return a / b if a is not None and b else None


def targets(results):
    """Each target measured where it is defined; value and pass/miss."""
    lp = results.get("loop") if "summary" in results.get("loop", {}) else None
    out = {}

    def put(key, value, where):
        desc, op, thr = TARGETS[key]
        out.setdefault(key, []).append({"target": desc, "scene": where, "value": value, "threshold": thr,
                                        "op": op, "pass": passes(op, thr, value)})

    def put_swd(split, x, o, where):  # texture SWD over the other layout's, at each scale
        for s in invented_scales():
            key = "swd_texture" if s == 1 else f"swd_texture_{s}"
            v = ratio(x.get(key), o.get(key))
            if v is not None:
                put(f"{split}_swd_{s}", v, where)

    for name, r in results.items():
        s = r.get("summary")
        if s is None:
            continue
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
            put("slowdown", med(spf[-4:]) / med(spf[1:5]), "loop (median of last 4 / median of segments 2-5)")
    for mode in MODES:  # actors, then the invented pixels, scene by scene, as built and as a blockout
        for name, r in results.items():
            m = r.get("modes", {}).get(mode)
            if m is None:
                continue
            where = f"{name} ({mode})"
            for a, x in (m.get("actors") or {}).items():
                o = x["images"]["model"]
                k = "" if mode == "built" else "_blockout"
                put(f"actor_mean{k}_db", o["mean_db"], f"{where}: {a}")
                put(f"actor_worst{k}_db", o["worst_db"], f"{where}: {a}, frame {o['worst_frame']}")
                seen = [v for v in o["seen_psnr_per_segment"] if v is not None]
                if seen:
                    put("actor_seen_db", min(seen), f"{where}: {a}")
                so = (r.get("static_only") or {}).get(a)
                if mode == "built" and so:
                    gains = [p - q for p, q in zip(so["product_psnr_per_segment"], so["psnr_per_segment"])
                             if p is not None and q is not None]
                    if gains:
                        put("actor_gain_db", min(gains), f"{where}: {a}")
            u = (m.get("uncovered") or {}).get("model")
            if u and u["uncovered_seen"] is not None and u["never_covered"] is not None:
                put("uncovered_gap_db", u["never_covered"] - u["uncovered_seen"], where)
            f, c = m["figures"], m["consistency"]["psnr_db"]
            x, o = f["shown"]["model"], f["shown"]["other_layout"]
            if x["psnr_db"] is not None and o["psnr_db"] is not None:
                put("shown_vs_other_db", x["psnr_db"] - o["psnr_db"], where)
                put("shown_detail", x["detail_ratio"], where)
            put_swd("shown", x, o, where)
            x, o = f["never_shown"]["model"], f["never_shown"]["other_layout"]
            if x["pixels"]:
                put("never_detail", x["detail_ratio"], where)
            put_swd("never", x, o, where)
            if c["model"] is not None:
                put("consistency_gap_db", c["gt"] - c["model"], where)
    return out


def invented_scales():
    import invented
    return invented.SWD_SCALES


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
    for name, r in results.items():  # actors: PSNR per frame that shows them, each mode
        acts = {mode: m.get("actors") for mode, m in r.get("modes", {}).items() if m.get("actors")}
        if not acts:
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        for mode, per in acts.items():
            for a, x in per.items():
                pf = x["images"]["model"]["per_frame"]
                ax.plot([int(k) for k in pf], [min(v, 50.0) for v in pf.values()], "-" if mode == "built" else "--",
                        label=f"{a} ({mode})")
        for key in ("actor_mean_db", "actor_worst_db"):
            ax.axhline(TARGETS[key][2], color="k", ls=":", lw=0.8)
        ax.set_xlabel("frame")
        ax.set_ylabel("PSNR on the actor's pixels (dB, cap 50)")
        ax.set_title(f"{name}: each actor against ground truth (dotted: the as-built targets)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(os.path.join(out_root, f"actor_psnr_{name}.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    results = {k: r for k, r in results.items() if "summary" in r}  # the memory's figures: static scenes, as built
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


def seg_list(xs, nd=1):
    return ", ".join(fmt(v, nd) for v in xs)


def invention_lines(name, r, meta):
    """The report's tables of a scene's invented pixels and actors, one set per mode."""
    import invented
    L = []
    for mode, m in r.get("modes", {}).items():
        f, c = m["figures"], m["consistency"]
        share = m.get("split_share", {})
        L += ["", f"### `{name}`, {mode}: invented pixels ({100 * m['mean_invented_share']:.0f} % of a frame's pixels "
                  f"on average: {100 * share.get('shown', 0):.0f} % on shown objects, "
                  f"{100 * share.get('never_shown', 0):.0f} % on never-shown ones)", "",
              f"Shown objects: {', '.join(m.get('shown_objects') or []) or 'none'}. Never shown: "
              f"{', '.join(m.get('never_shown_objects') or []) or 'none'}."]
        rows = [("model", f"`{meta['model']}` (this model)")]
        if "compare" in f["all"] and not m.get("compare_note"):
            rows.append(("compare", f"`{m['compare']}` (compared)"))
        rows += [("other_layout", invented.ROW_LABELS["other_layout"])]
        rows += [(k, invented.ROW_LABELS[k]) for k in invented.REFERENCE_ROWS]
        for split in ("shown", "never_shown"):
            if not f[split]["model"]["pixels"]:
                L += ["", f"No invented pixels {SPLITS[split]}."]
                continue
            L += ["", f"Invented pixels {SPLITS[split]}:", "",
                  "| image | PSNR dB | detail ratio | SWD raw | texture SWD | texture SWD 1/2 | texture SWD 1/4 |",
                  "|---|---|---|---|---|---|---|"]
            for key, label in rows:
                x = f[split][key]
                L.append(f"| {label} | {fmt(x['psnr_db'])} | {fmt(x['detail_ratio'])} | {fmt(x.get('swd_raw'))} | "
                         f"{fmt(x.get('swd_texture'))} | {fmt(x.get('swd_texture_2'))} | {fmt(x.get('swd_texture_4'))} |")
        L += ["", f"All invented pixels, and self-consistency across segments ({c['pairs']} frame pairs, "
                  f"{c['pixels']} pixels):", "", "| image | PSNR dB | detail ratio | self-consistency dB |",
              "|---|---|---|---|"]
        for key, label in rows:
            x = f["all"][key]
            own = fmt(c["psnr_db"].get(key)) if key in c["psnr_db"] else ""
            L.append(f"| {label} | {fmt(x['psnr_db'])} | {fmt(x['detail_ratio'])} | {own} |")
        L.append(f"| ground truth (its own frames) | | 1.00 | {fmt(c['psnr_db']['gt'])} |")
        if m.get("compare_note"):
            L += ["", f"The compared model: {m['compare_note']}."]
        if m.get("same_frames_as"):
            L += ["", f"Every frame is byte for byte that of {m['same_frames_as']}: the add-on and the model read "
                      f"no material of this scene."]
        if m.get("actors"):
            L += ["", "Actors, PSNR on their pixels per frame that shows them (at least 0.1 % of the pixels; the "
                      "reference frame left out), and per segment split by whether a reference saw that part of "
                      "the surface:", "",
                  "| actor | image | mean dB | worst frame dB | per segment dB | seen part per segment dB | "
                  "never-seen part per segment dB | seen share per segment |", "|---|---|---|---|---|---|---|---|"]
            for a, x in m["actors"].items():
                shares = ", ".join("n/a" if not p else f"{100 * s:.0f} %" for s, p in
                                   zip(x["seen_share_per_segment"], x["pixels_per_segment"]))
                for key, label in (("model", f"`{meta['model']}`"), ("compare", f"`{m['compare']}`"),
                                   ("other_layout", "other layout")):
                    if key not in x["images"] or (key == "compare" and m.get("compare_note")):
                        continue
                    o = x["images"][key]
                    L.append(f"| {a} | {label} | {fmt(o['mean_db'])} | {fmt(o['worst_db'])} (frame {o['worst_frame']}) | "
                             f"{seg_list(o['psnr_per_segment'])} | {seg_list(o['seen_psnr_per_segment'])} | "
                             f"{seg_list(o['unseen_psnr_per_segment'])} | {shares if key == 'model' else ''} |")
        if m.get("uncovered"):
            u = m["uncovered"]
            px = u["pixels"]
            L += ["", "Still background and the actors (PSNR dB; pixel-frames): *uncovered* — an actor stood in "
                      "front of it on an earlier frame and the reference saw it; *never covered* — the "
                      "reference saw it and no actor covered it; *hidden on the reference* — an actor stood in front "
                      "of it on the reference itself (never shown, invented):", "",
                  f"| image | uncovered ({px['uncovered_seen']}) | never covered ({px['never_covered']}) | hidden on the "
                  f"reference ({px['uncovered_unseen']}) |", "|---|---|---|---|"]
            for key, label in (("model", f"`{meta['model']}`"), ("compare", f"`{m['compare']}`"),
                               ("other_layout", "other layout (a calibration where nothing was shown)")):
                if key in u and not (key == "compare" and m.get("compare_note")):
                    seen = "| |" if key == "other_layout" else \
                        f"| {fmt(u[key]['uncovered_seen'])} | {fmt(u[key]['never_covered'])} |"
                    L.append(f"| {label} {seen} {fmt(u[key]['uncovered_unseen'])} |")
    return L


PERIODIC_KINDS = ("checker", "brick", "stripes")  # scenes.PERIODIC (scenes.py needs bpy)


def textures_line(r):
    """How many of a scene's materials are stochastic, photographs, periodic, flat."""
    kinds = list((r.get("textures") or {}).values())
    photo = sum(k.startswith("photo") for k in kinds)
    periodic = sum(k in PERIODIC_KINDS for k in kinds)
    flat = sum(k in ("paint", "other") for k in kinds)
    parts = [f"{len(kinds) - photo - periodic - flat} stochastic", f"{photo} photographs", f"{periodic} periodic"]
    return ", ".join(parts + ([f"{flat} flat"] if flat else []))


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
        L += ["", "Invented pixels (what no reference showed), against the other layout of the same scene "
                  "(docs/benchmarks.md defines each figure):", "",
              "| scene (mode) | " + " | ".join(INVENTED_TARGETS.values()) + " |",
              "|---|" + "---|" * len(INVENTED_TARGETS)]
        for w in where:
            cells = []
            for key in INVENTED_TARGETS:
                row = next((x for x in tg.get(key, []) if x["scene"] == w), None)
                cells.append("n/a" if row is None else f"{fmt(row['value'])} {verdict(row)}")
            L.append(f"| {w} | " + " | ".join(cells) + " |")
    L += ["", "## Scenes", "", "| scene | frames | size | textures | actors | time (Blender session, of which ground "
          "truth / maps / other layout / Generate) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        sp, t = r["spec"], r["timing"]
        frames = sp.get("frames") or sp["loop_frames"] * sp["loops"]
        gen = " + ".join(f"{v} s" for k, v in t.items() if k.startswith("generate_"))
        L.append(f"| `{name}` | {frames} | {sp['width']}x{sp['height']} | {textures_line(r)} | "
                 f"{', '.join(r.get('actors') or []) or 'none'} | {t['blender_session_s']} s ({t['gt_render_s']} s for "
                 f"{t['gt_frames_rendered']} new frames / {t['maps_s']} s / {t['other_layout_s']} s for "
                 f"{t['other_frames_rendered']} new frames / {gen}) |")
    for name, r in results.items():
        s = r.get("summary")
        if s is None:
            L += ["", f"## Scene `{name}`: actors {', '.join(r.get('actors') or [])}"]
            if r.get("static_only"):
                L += ["", "Each actor's PSNR per segment, the product beside its memory with the actors baked into the "
                          "still world (the job without its moving objects):", "",
                      "| actor | product, per segment dB | static-only memory, per segment dB |", "|---|---|---|"]
                for a, x in r["static_only"].items():
                    L.append(f"| {a} | {seg_list(x['product_psnr_per_segment'])} | {seg_list(x['psnr_per_segment'])} |")
                L += ["", f"The add-on's job names as moving: {', '.join(r.get('job_objects') or [])}."]
            elif r.get("static_only_note"):
                L += ["", f"No static-only run: {r['static_only_note']}."]
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
                  f"{t['gt_frames_rendered']} new frames, Generate {t['generate_built_s']} s of which backend "
                  f"{t['mirage_backend_s']} s); point cloud {t.get('pointcloud_s', 'not run')} s; "
                  f"no memory {t.get('nomemory_s', 'not run')} s; "
                  f"metrics {t['metrics_s']} s."]
        L += invention_lines(name, r, meta)
    sheets = [m["sheet"] for r in results.values() for m in r.get("modes", {}).values()]
    L += ["", "## Contact sheets", "", "Rows: ground truth, this model, the compared model, the other layout, the "
          "ground truth with all but the invented pixels dimmed; invented pixels outlined in magenta, actors in "
          "cyan.", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in sheets]
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
