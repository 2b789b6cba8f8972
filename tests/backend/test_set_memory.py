"""Several references and a memory shared by the shots of one set, through the backend as a real subprocess:
references painted from cameras of their own seed the memory, and a shot that starts from the memory the shot
before it left draws exactly what one run over both shots draws."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_backend
from tests.synth import box_scene_depth, intrinsics, look_camera, make_job, texture
from tools.metrics import backward_warp, psnr

W, H = 64, 48


def frames_of(folder):
    d = os.path.join(folder, "frames")
    return {f: np.asarray(Image.open(os.path.join(d, f))) for f in sorted(os.listdir(d))}


def add_view(folder, index, x, yaw, seed, frame=1):
    """A reference painted from its own camera at (x, yaw), written into the job folder: its job entry."""
    K, c2w = intrinsics(W, H), look_camera(x, yaw_deg=yaw)
    os.makedirs(os.path.join(folder, "inputs", "references"), exist_ok=True)
    image, depth = f"inputs/references/{index:02d}.png", f"inputs/references/{index:02d}_depth.npy"
    Image.fromarray(texture(W, H, seed)).save(os.path.join(folder, image))
    np.save(os.path.join(folder, depth), box_scene_depth(K, c2w, W, H))
    return {"image": image, "frame": frame, "K": K.tolist(), "cam_to_world": c2w.tolist(), "depth": depth}


def edit_job(path, change):
    with open(path) as f:
        job = json.load(f)
    change(job)
    with open(path, "w") as f:
        json.dump(job, f)


def load_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def test_a_second_reference_shows_what_the_first_never_saw(tmp_path):
    # the camera turns away from the first reference's view towards where the second one was painted from
    xs, yaws = [0.15 * i for i in range(10)], [4.0 * i for i in range(10)]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    for folder in (one, two):
        job = make_job(folder, W=W, H=H, xs=xs, yaws=yaws, segment_length=5, model="patch")
    ref2 = add_view(two, 1, 1.8, 45.0, seed=5, frame=30)
    edit_job(os.path.join(two, "job.json"), lambda j: j.update(references=[ref2]))
    for folder in (one, two):
        proc, _ = run_backend(os.path.join(folder, "job.json"))
        assert proc.returncode == 0, proc.stderr
    K = intrinsics(W, H)
    last = look_camera(xs[-1], yaw_deg=yaws[-1])
    d_last = box_scene_depth(K, last, W, H)
    d_ref1, d_ref2 = box_scene_depth(K, look_camera(0.0), W, H), box_scene_depth(K, np.array(ref2["cam_to_world"]), W, H)
    ref2_img = load_rgb(os.path.join(two, ref2["image"]))
    warped, seen2 = backward_warp(ref2_img, d_ref2, K, np.array(ref2["cam_to_world"]), d_last, K, last)
    _, seen1 = backward_warp(load_rgb(os.path.join(two, "inputs", "reference.png")), d_ref1, K, look_camera(0.0),
                             d_last, K, last)
    only2 = seen2 & ~seen1
    assert only2.sum() > 300  # the last frame sees a good part of the wall only the second reference shows
    name = "000010.png"
    with_two = psnr(load_rgb(os.path.join(two, "frames", name)), warped, only2)
    with_one = psnr(load_rgb(os.path.join(one, "frames", name)), warped, only2)
    assert with_two > 20 and with_two > with_one + 8, (with_two, with_one)


def test_a_frame_painted_by_a_reference_is_that_reference(tmp_path):
    path = make_job(str(tmp_path), W=W, H=H, n=4, segment_length=2, model="patch")
    with open(path) as f:
        frame3 = json.load(f)["frames"][2]
    view = add_view(str(tmp_path), 1, 0.0, 0.0, seed=9, frame=3)
    view.update(K=frame3["K"], cam_to_world=frame3["cam_to_world"])
    edit_job(path, lambda j: j.update(references=[view]))
    proc, _ = run_backend(path)
    assert proc.returncode == 0, proc.stderr
    out = frames_of(str(tmp_path))
    assert np.array_equal(out["000003.png"], np.asarray(Image.open(tmp_path / view["image"])))
    assert np.array_equal(out["000001.png"], np.asarray(Image.open(tmp_path / "inputs" / "reference.png")))


def chain(tmp_path, model="builtin", whole_run=True, moving=False):
    """One run over frames 1-8 (with `whole_run`), and the same path as two shots: A (1-4) seeded by the
    reference, B (5-8) starting from the memory A left. With `moving`, the box slides (a moving object with a
    memory bank of its own). Returns the three folders."""
    xs, yaws = [0.12 * i for i in range(8)], [3.0 * i for i in range(8)]
    box = [0.1 * i for i in range(8)] if moving else None
    whole, a, b = (str(tmp_path / n) for n in ("whole", "A", "B"))
    make_job(whole, W=W, H=H, xs=xs, yaws=yaws, segment_length=4, model=model, box_xs=box)
    make_job(a, W=W, H=H, xs=xs[:4], yaws=yaws[:4], segment_length=4, model=model, box_xs=box and box[:4])
    make_job(b, W=W, H=H, xs=xs, yaws=yaws, segment_length=4, model=model, box_xs=box)

    def shot_b(job):
        # shot B's copy of the set's reference keeps frame 1's camera and maps (moving objects' poses too)
        view = dict(job["frames"][0], image="inputs/references/01.png")
        job["frames"] = job["frames"][4:]
        del job["reference"]
        job["references"] = [view]
        job["start"] = {"memory": "inputs/start/memory.safetensors", "shot": "A"}
    edit_job(os.path.join(b, "job.json"), shot_b)
    os.makedirs(os.path.join(b, "inputs", "references"))
    shutil.copyfile(os.path.join(whole, "inputs", "reference.png"), os.path.join(b, "inputs", "references", "01.png"))
    for folder in (whole, a) if whole_run else (a,):
        proc, _ = run_backend(os.path.join(folder, "job.json"))
        assert proc.returncode == 0, proc.stderr
    copy_start(a, b)
    return whole, a, b


def copy_start(a, b):
    os.makedirs(os.path.join(b, "inputs", "start"), exist_ok=True)
    for name in os.listdir(os.path.join(a, "state")):
        if name.startswith("memory"):
            shutil.copyfile(os.path.join(a, "state", name), os.path.join(b, "inputs", "start", name))


@pytest.mark.parametrize("moving", [False, True])
def test_a_shot_starting_from_the_shot_before_draws_what_one_run_draws(tmp_path, moving):
    whole, a, b = chain(tmp_path, moving=moving)
    if moving:
        assert sorted(os.listdir(os.path.join(b, "inputs", "start"))) == ["memory.object1.safetensors",
                                                                       "memory.safetensors"]
    proc, msgs = run_backend(os.path.join(b, "job.json"), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    fw, fa, fb = frames_of(whole), frames_of(a), frames_of(b)
    assert sorted(fb) == [f"{n:06d}.png" for n in range(5, 9)]
    for n in fa:
        assert np.array_equal(fa[n], fw[n]), n
    for n in fb:  # what shot A wrote into the memory, shot B shows exactly as one run would
        assert np.array_equal(fb[n], fw[n]), n
    # started from its references alone, shot B draws something else
    edit_job(os.path.join(b, "job.json"), lambda j: j.pop("start"))
    shutil.rmtree(os.path.join(b, "frames"))
    proc, _ = run_backend(os.path.join(b, "job.json"))
    assert proc.returncode == 0, proc.stderr
    assert any(not np.array_equal(v, fw[n]) for n, v in frames_of(b).items())


def test_a_shot_starts_afresh_with_a_notice_when_the_shot_before_changed(tmp_path):
    _, a, b = chain(tmp_path, whole_run=False)
    proc, _ = run_backend(os.path.join(b, "job.json"))
    assert proc.returncode == 0, proc.stderr
    before = frames_of(b)
    proc, msgs = run_backend(os.path.join(b, "job.json"), "--jsonl")  # nothing changed: all resumed
    assert proc.returncode == 0 and [m["stats"]["resumed_segments"] for m in msgs if m["type"] == "done"] == [1]
    # shot A again with another seed: another memory, copied into B as the add-on does
    edit_job(os.path.join(a, "job.json"), lambda j: j.update(seed=3))
    proc, _ = run_backend(os.path.join(a, "job.json"))
    assert proc.returncode == 0, proc.stderr
    copy_start(a, b)
    proc, msgs = run_backend(os.path.join(b, "job.json"), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    hello = next(m for m in msgs if m["type"] == "hello")
    assert any(n.startswith("the memory this shot starts from changed since its last run (shot 'A' was generated "
                            "again") for n in hello["notices"]), hello["notices"]
    assert [m["stats"]["resumed_segments"] for m in msgs if m["type"] == "done"] == [0]
    assert frames_of(b).keys() == before.keys()


def test_a_start_memory_of_another_model_is_one_clear_line(tmp_path):
    _, a, b = chain(tmp_path, model="patch", whole_run=False)
    edit_job(os.path.join(b, "job.json"), lambda j: j.update(model="builtin"))
    proc, msgs = run_backend(os.path.join(b, "job.json"), "--jsonl")
    assert proc.returncode == 1
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("the memory this shot starts from (shot 'A') was made by another "
                                                     "model (48 channels, 4-pixel cells; synth has"), errors
    shutil.rmtree(os.path.join(b, "inputs", "start"))
    proc, msgs = run_backend(os.path.join(b, "job.json"), "--jsonl")
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert proc.returncode == 1 and errors[0].startswith("the memory this shot starts from does not exist: "), errors


def test_a_memory_saved_without_its_progress_is_not_resumed(tmp_path):
    # a crash between saving the memory and saving the progress leaves a memory one segment ahead: resuming from
    # it would change the frames, so the run starts afresh
    path = make_job(str(tmp_path / "run"), W=W, H=H, n=6, segment_length=3)
    other = make_job(str(tmp_path / "other"), W=W, H=H, n=6, segment_length=3, seed=4)
    for p in (path, other):
        proc, _ = run_backend(p)
        assert proc.returncode == 0, proc.stderr
    proc, msgs = run_backend(path, "--jsonl")
    assert [m["stats"]["resumed_segments"] for m in msgs if m["type"] == "done"] == [2]
    shutil.copyfile(tmp_path / "other" / "state" / "memory.safetensors", tmp_path / "run" / "state" / "memory.safetensors")
    proc, msgs = run_backend(path, "--jsonl")
    assert proc.returncode == 0 and [m["stats"]["resumed_segments"] for m in msgs if m["type"] == "done"] == [0]


def test_bad_references_and_start_memory_are_one_clear_line(tmp_path):
    from backend import protocol
    path = make_job(str(tmp_path), W=W, H=H, n=3, segment_length=3)
    with open(path) as f:
        base = json.load(f)
    view = add_view(str(tmp_path), 1, 0.5, 10.0, seed=2)
    cases = [
        (lambda j: j.update(references=[dict(view, K=[[0, 0, 0], [0, 1, 0], [0, 0, 1]])]),
         "K of references[0] has a non-positive focal length"),
        (lambda j: j.update(references=[{k: v for k, v in view.items() if k != "depth"}]),
         "depth of references[0] must be a non-empty relative path"),
        (lambda j: j.update(references=[dict(view, image="../x.png")]), "references[0].image leaves the job folder"),
        (lambda j: j.update(references=[dict(view, image="inputs/nope.png")]),
         "the image of references[0] does not exist: "),
        (lambda j: j.update(references=[dict(view, light="inputs/l.npy")]),
         "references[0] must have a light map exactly when the frames have one"),
        (lambda j: (j.pop("reference"), j.update(references=[])), "the job has no 'reference' field"),
        (lambda j: j.update(start={"memory": "/tmp/m.safetensors"}),
         "start.memory must be relative to the job folder, got an absolute path"),
        (lambda j: j.update(start={"memory": "inputs/start/memory.safetensors"}),
         "the memory this shot starts from does not exist: "),
    ]
    for change, message in cases:
        job = json.loads(json.dumps(base))
        change(job)
        try:
            protocol.validate_job(job, str(tmp_path))
        except protocol.JobError as e:
            assert str(e).startswith(message), (str(e), message)
        else:
            raise AssertionError(f"accepted: {message}")
    # a job of references alone, each with its own camera, is valid and keeps them in order
    job = json.loads(json.dumps(base))
    job.pop("reference")
    job["references"] = [view, dict(view, frame=7)]
    parsed, _ = protocol.validate_job(job, str(tmp_path))
    assert [r.frame for r in parsed.references] == [1, 7] and parsed.reference == parsed.references[0]
    assert parsed.reference.view.cam_to_world == view["cam_to_world"]
    assert protocol.Job.from_dict(parsed.to_dict()) == parsed
