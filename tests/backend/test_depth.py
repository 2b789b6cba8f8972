"""Depth from the image (depth source MONOCULAR): the scaling maths on known depths, and whole jobs through the
backend process with a tiny random Depth Anything V2 in a local Hugging Face cache, offline."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backend import depth  # noqa: E402
from tests.conftest import run_backend  # noqa: E402
from tests.synth import make_job  # noqa: E402
from tests.tiny_depth import build_tiny_depth_cache  # noqa: E402


def true_depth(H=36, W=64):
    """A floor-like ramp: 2 at the bottom row to 12 at the top."""
    return torch.linspace(12.0, 2.0, H)[:, None].expand(H, W).clone()


def test_distance_sets_the_centre():
    z = true_depth()
    d, how = depth.to_depth(3.0 / z, None, distance=7.0)  # disparity known up to scale
    assert how == "distance"
    H, W = z.shape
    centre = d[int(H * 0.4):int(H * 0.6), int(W * 0.4):int(W * 0.6)]
    assert abs(float(centre.median()) - 7.0) < 0.05
    ratio = d / z
    assert float(ratio.max() / ratio.min()) < 1.001  # the shape is kept: one scale for every pixel


def test_scene_geometry_sets_scale_and_shift_and_is_kept_exactly():
    z = true_depth()
    disparity = 2.0 / z + 0.05  # relative inverse depth: scale and shift unknown to the backend
    scene = torch.full_like(z, float("inf"))
    scene[:, :20] = z[:, :20]  # the scene has geometry on the left third only
    d, how = depth.to_depth(disparity, scene, distance=100.0)  # the distance is not used then
    assert how == "scene"
    assert torch.equal(d[:, :20], z[:, :20])
    assert float(((d[:, 20:] - z[:, 20:]).abs() / z[:, 20:]).max()) < 1e-3


def test_no_disparity_is_sky():
    z = true_depth()
    disparity = 1.0 / z
    disparity[:5] = 0.0  # the top rows: nothing there
    d, _ = depth.to_depth(disparity, None, 5.0)
    assert torch.isinf(d[:5]).all() and torch.isfinite(d[5:]).all() and (d[5:] > 0).all()


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("depth") / "hub"
    build_tiny_depth_cache(str(cache))
    return cache


def monocular_job(folder, **extra):
    path = make_job(str(folder), n=6, segment_length=3, **extra)
    with open(path) as f:
        job = json.load(f)
    job["depth_source"] = "MONOCULAR"
    job["monocular_distance"] = 3.0
    for fr in job["frames"]:
        fr.pop("depth")
    with open(path, "w") as f:
        json.dump(job, f)
    return path


def test_a_job_with_depth_from_the_image_runs_offline(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_cache))
    job = monocular_job(tmp_path / "job")
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [m["type"] for m in msgs if m["type"] == "segment_done"] == ["segment_done"] * 2
    assert sorted(os.listdir(tmp_path / "job" / "frames")) == [f"{n:06d}.png" for n in range(1, 7)]


def test_scene_depth_at_the_reference_frame_is_used(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_cache))
    job = monocular_job(tmp_path / "job")
    data = json.loads(open(job).read())
    scene = np.full((48, 64), np.inf, np.float32)
    scene[:, :32] = 2.5
    np.save(tmp_path / "job" / "inputs" / "reference_scene_depth.npy", scene)
    data["reference"]["scene_depth"] = "inputs/reference_scene_depth.npy"
    (tmp_path / "job" / "job.json").write_text(json.dumps(data))
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # what the backend seeded its memory with: the scene's depth where it has geometry
    from backend import protocol
    from backend.inputs import Inputs
    est = Inputs(protocol.load_job(job)[0]).reference_depth()
    assert torch.equal(est[:, :32], torch.full((48, 32), 2.5))
    assert torch.isfinite(est[:, 32:]).all()


def test_offline_without_the_weights_is_one_line_naming_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    job = monocular_job(tmp_path / "job")
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 1
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"{depth.TITLE} needs about 0.1 GB downloaded to {tmp_path / 'empty-cache'}")
    assert "HF_HUB_OFFLINE is set" in errors[0]
    assert not os.path.exists(tmp_path / "job" / "frames") or not os.listdir(tmp_path / "job" / "frames")


def test_every_reference_is_estimated_and_scaled_by_the_scene_through_its_own_camera(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_cache))
    job = monocular_job(tmp_path / "job")
    data = json.loads(open(job).read())
    # a second reference painted from frame 4's camera, on frame 4, with the scene's depth through that camera
    fr = data["frames"][3]
    scene = np.full((48, 64), np.inf, np.float32)
    scene[:, 32:] = 4.0
    os.makedirs(tmp_path / "job" / "inputs" / "references")
    np.save(tmp_path / "job" / "inputs" / "references" / "02_scene_depth.npy", scene)
    image = "inputs/references/02" + os.path.splitext(data["reference"]["image"])[1]
    (tmp_path / "job" / image).write_bytes((tmp_path / "job" / data["reference"]["image"]).read_bytes())
    data["references"] = [{"image": image, "frame": fr["frame"], "K": fr["K"], "cam_to_world": fr["cam_to_world"],
                           "scene_depth": "inputs/references/02_scene_depth.npy"}]
    (tmp_path / "job" / "job.json").write_text(json.dumps(data))
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from backend import protocol
    from backend.inputs import Inputs
    loaded = protocol.load_job(job)[0]
    assert loaded.to_dict()["references"][0]["scene_depth"].endswith("02_scene_depth.npy")
    inputs = Inputs(loaded)
    first, second = (inputs.reference_depth(r) for r in loaded.references)
    assert torch.equal(second[:, 32:], torch.full((48, 32), 4.0))  # its own scene depth, kept exactly
    assert torch.isfinite(first).all() and not torch.equal(first, second)  # the first: by the distance


def test_a_changed_distance_starts_afresh_and_an_unchanged_job_resumes(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_cache))
    job = monocular_job(tmp_path / "job")

    def resumed():
        proc, msgs = run_backend(job, "--jsonl")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [m["stats"]["resumed_segments"] for m in msgs if m["type"] == "done"]
    assert resumed() == [0]
    assert resumed() == [2]  # the same job: both segments kept
    data = json.loads(open(job).read())
    data["monocular_distance"] = 6.0  # the estimate's scale, so every frame, changes
    (tmp_path / "job" / "job.json").write_text(json.dumps(data))
    assert resumed() == [0]
