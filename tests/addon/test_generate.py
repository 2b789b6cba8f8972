"""The whole product in real bpy: the built zip installed as an extension in a fresh session,
Generate run in background mode, the backend as a real subprocess, frames into the VSE."""
import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BACKEND_PYTHON

SCENARIO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenario.py")


def run_scenario(extension_zip, tmp_path, name, **env):
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, SCENARIO, extension_zip, str(tmp_path), name, str(result)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": BACKEND_PYTHON, **env})
    data = json.loads(result.read_text()) if result.exists() else None
    return proc, data


def error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("RuntimeError: ")]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def generated(extension_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generate")
    proc, data = run_scenario(extension_zip, tmp, "ok")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, data


def test_every_scene_frame_has_a_png(generated):
    tmp, data = generated
    frames = tmp / "mirage" / "frames"
    names = sorted(os.listdir(frames))
    assert names == [f"{n:06d}.png" for n in range(1, 25)]
    for n in names:
        with Image.open(frames / n) as im:
            assert im.size == (128, 72)


def test_vse_strips_cover_the_frame_range_exactly(generated):
    _, data = generated
    assert data["background"] is True
    strips = sorted(data["after"]["strips"], key=lambda s: s["start"])
    assert [s["name"] for s in strips] == ["Mirage 001", "Mirage 002", "Mirage 003"]
    assert [(s["start"], s["end"]) for s in strips] == [(1, 11), (11, 21), (21, 25)]  # end is exclusive
    assert len({s["channel"] for s in strips}) == 1
    assert [len(s["files"]) for s in strips] == [10, 10, 4]
    assert strips[0]["files"][0] == "000001.png" and strips[2]["files"][-1] == "000024.png"


def test_rerun_replaces_its_own_strips(generated):
    tmp, data = generated
    assert len(data["first"]["strips"]) == 3
    assert len(data["after"]["strips"]) == 3  # after a second Generate, saved and reopened
    # unsaved file: absolute paths; saved project: "//" paths that survive moving the project folder
    assert data["first"]["strips"][0]["directory"] == str(tmp / "mirage" / "frames") + os.sep
    for s in data["after"]["strips"]:
        assert s["directory"] == "//mirage" + os.sep + "frames" + os.sep
        assert os.path.isfile(tmp / "mirage" / "frames" / s["files"][0])


def test_job_and_run_reports(generated):
    tmp, data = generated
    job = json.loads((tmp / "mirage" / "job.json").read_text())
    run = json.loads((tmp / "mirage" / "run.json").read_text())
    assert [f["frame"] for f in job["frames"]] == list(range(1, 25))
    assert job["width"] == 128 and job["height"] == 72 and job["segment_length"] == 10
    assert all(os.path.isfile(tmp / "mirage" / f["depth"]) for f in job["frames"])
    assert run["frames"] == 24 and run["segments"] == 3
    assert [s["frames"] for s in run["per_segment"]] == [[1, 10], [11, 20], [21, 24]]


def test_moving_object_gets_its_memory_and_light(extension_zip, tmp_path):
    proc, data = run_scenario(extension_zip, tmp_path, "moving")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads((tmp_path / "mirage" / "job.json").read_text())
    assert job["objects"] == [{"id": 1, "name": "Crate"}]
    in_view = []
    for fr in job["frames"]:
        light = np.load(tmp_path / "mirage" / fr["light"]).astype(float)
        ids = np.load(tmp_path / "mirage" / fr["ids"])
        assert light.shape == ids.shape == (72, 128) and np.isfinite(light).all() and (light >= 0).all()
        colour = np.load(tmp_path / "mirage" / fr["albedo"])
        assert colour.shape == (72, 128, 3) and not colour[ids == 0].any()  # moving objects only
        if (ids == 1).any():
            in_view.append(light)
            assert colour[ids == 1].mean() > 20  # the crate's material, baked
    assert len(in_view) >= 4
    # the crate's faces and shadow change the light on some pixels, and nothing else does
    assert all(0.001 < (light != 1.0).mean() < 0.5 for light in in_view)
    assert len(os.listdir(tmp_path / "mirage" / "frames")) == 24
    assert data["status"].startswith("Done: 24 frames") and ", moving: Crate" in data["status"]


def test_relative_output_folder_and_no_unclosed_pipes(extension_zip, tmp_path):
    # warnings as errors: an unclosed pipe or log of the backend process shows as "ResourceWarning" on stderr;
    # every deprecation is printed: Blender 5.1+ deprecates the strips' frame_final_* (removal planned for 6.0)
    proc, data = run_scenario(extension_zip, tmp_path, "relative_output",
                              PYTHONWARNINGS="error::ResourceWarning,always::DeprecationWarning")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["unsaved_out"] == str(tmp_path / "rel_out")  # the working folder (the test runs in tmp_path)
    assert sorted(os.listdir(tmp_path / "rel_out" / "frames")) == [f"{n:06d}.png" for n in range(1, 7)]
    saved = tmp_path / "shots" / "rel_out"  # the .blend's folder once saved
    assert sorted(os.listdir(saved / "frames")) == [f"{n:06d}.png" for n in range(1, 7)]
    assert (saved / "job.json").is_file() and data["status"].startswith("Done: 6 frames")
    assert "ResourceWarning" not in proc.stderr, proc.stderr[-3000:]
    assert "frame_final_" not in proc.stderr, proc.stderr[-3000:]


def test_a_finished_generate_writes_the_flythrough_video(generated):
    tmp, data = generated
    video = data["video"]
    assert video is not None, "no flythrough.mp4"
    assert video["frames"] == 24 and video["fps"] == 12.0 and video["size"] == [128, 72]
    with Image.open(tmp / "mirage" / "frames" / "000001.png") as im:
        first = np.asarray(im.convert("RGB"), dtype=float).mean(axis=(0, 1)) / 255
    assert np.abs(np.array(video["first_mean"]) - first).max() < 0.03  # the frames' colours, not a view transform
    assert data["render_after"] == data["render_before"]  # the user's render settings and scenes untouched
    assert not (tmp / "mirage" / "flythrough.part.mp4").exists()
    assert data["first_status"].endswith(", flythrough.mp4 written")


def test_camera_and_concept_art_only_generates_with_depth_from_the_image(extension_zip, tmp_path, tiny_depth_cache):
    proc, data = run_scenario(extension_zip, tmp_path, "monocular", HF_HUB_OFFLINE="1",
                              HF_HUB_CACHE=str(tiny_depth_cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["before"]["objects"] == ["Camera"]
    job = json.loads((tmp_path / "mirage" / "job.json").read_text())
    assert job["depth_source"] == "MONOCULAR" and job["monocular_distance"] == 4.0
    assert "scene_depth" not in job["reference"]  # no geometry: the distance sets the scale
    assert sorted(os.listdir(tmp_path / "mirage" / "frames")) == [f"{n:06d}.png" for n in range(1, 25)]
    assert data["status"].startswith("Done: 24 frames")


def test_depth_from_the_image_offline_without_weights_is_one_line(extension_zip, tmp_path):
    proc, data = run_scenario(extension_zip, tmp_path, "monocular_no_weights", HF_HUB_OFFLINE="1",
                              HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    assert proc.returncode != 0
    line = error_line(proc)
    assert "Depth Anything V2 Small (depth from the image) needs about 0.1 GB downloaded to " in line, proc.stderr[-2000:]
    assert "HF_HUB_OFFLINE is set" in line and data["status"] in line
    assert not os.path.isdir(tmp_path / "mirage" / "frames") or not os.listdir(tmp_path / "mirage" / "frames")


def test_user_frame_is_restored(generated):
    _, data = generated
    assert data["before"]["frame_current"] == 7 and data["after"]["frame_current"] == 7


def test_first_frame_matches_the_reference(generated):
    # the reference depicts frame 1's view, so the generated frame 1 must look like it
    tmp, _ = generated
    ref = np.asarray(Image.open(tmp / "reference.png").convert("RGB"), dtype=float)
    out = np.asarray(Image.open(tmp / "mirage" / "frames" / "000001.png").convert("RGB"), dtype=float)
    mse = ((ref - out) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-10)) > 25


def test_strips_go_to_the_first_free_channel(extension_zip, tmp_path):
    proc, data = run_scenario(extension_zip, tmp_path, "user_strip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    user = [s for s in data["after"]["strips"] if s["name"] == "UserColor"]
    ours = [s for s in data["after"]["strips"] if s["name"].startswith("Mirage")]
    assert user == [s for s in data["before"]["strips"] if s["name"] == "UserColor"]
    assert len(ours) == 3 and {s["channel"] for s in ours} == {2}


@pytest.mark.parametrize("scenario, message", [
    ("no_camera", "The scene has no camera"),
    ("ortho", "Mirage needs a perspective camera; 'Camera' is orthographic"),
    ("missing_reference", "The reference image does not exist"),
    ("corrupt_reference", "The reference image cannot be read"),
    ("segment_too_long", "Segment Length (500) is longer than the frame range (24 frames)"),
])
def test_bad_input_fails_cleanly(extension_zip, tmp_path, scenario, message):
    proc, data = run_scenario(extension_zip, tmp_path, scenario)
    assert proc.returncode != 0
    assert message in error_line(proc), proc.stderr[-2000:]
    assert message in data["status"]
    assert data["after"] == data["before"]  # the user's scene is left as it was


def test_backend_without_torch(extension_zip, tmp_path):
    bare = tmp_path / "bare-venv"
    venv.create(bare, with_pip=False)
    proc, data = run_scenario(extension_zip, tmp_path, "ok", MIRAGE_BACKEND_PYTHON=str(bare / "bin" / "python"))
    assert proc.returncode != 0
    assert "cannot import torch" in error_line(proc), proc.stderr[-2000:]
    assert data["after"] == data["before"]


def test_missing_backend_interpreter(extension_zip, tmp_path):
    proc, data = run_scenario(extension_zip, tmp_path, "ok", MIRAGE_BACKEND_PYTHON=str(tmp_path / "no" / "python"))
    assert proc.returncode != 0
    assert "The backend Python does not exist or cannot run" in error_line(proc)
    assert data["after"] == data["before"]


@pytest.mark.parametrize("scenario", ["poll", "poll_moving"])
def test_ui_path_never_blocks(extension_zip, tmp_path, scenario):
    # the modal operator's work per timer tick: one export step (with a moving crate: a material bake, or a
    # frame's depth, ids, light and colour), or draining the backend's queue
    proc, data = run_scenario(extension_zip, tmp_path, scenario)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["finished"] and data["error"] is None
    assert data["longest_step"] < 0.25 and data["longest_poll"] < 0.1
    assert data["polls"] > 3  # the backend worked while the "UI" kept ticking
    assert data["segments_in_vse"] == 3 and len(data["after"]["strips"]) == 3


@pytest.mark.parametrize("how", ["cancel", "cancel_kill"])
def test_cancel_keeps_finished_segments_in_the_vse(extension_zip, tmp_path, how):
    proc, data = run_scenario(extension_zip, tmp_path, how)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["cancelled"] and not data["finished"] and data["error"] is None
    strips = data["after"]["strips"]
    assert 1 <= len(strips) < 24 and strips[0]["start"] == 1
    frames = set(os.listdir(os.path.join(data["out"], "frames")))
    for s in strips:
        assert all(f in frames for f in s["files"])
    assert not [f for f in frames if f.endswith(".part")]
    assert not os.path.exists(os.path.join(data["out"], "flythrough.mp4"))  # a partial run writes no video


def test_killed_backend_is_reported_and_segments_stay(extension_zip, tmp_path):
    proc, data = run_scenario(extension_zip, tmp_path, "kill")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["error"].startswith("The backend stopped unexpectedly (exit code -9)")
    strips = data["after"]["strips"]
    assert len(strips) >= 1 and strips[0]["name"] == "Mirage 001"
    frames = set(os.listdir(os.path.join(data["out"], "frames")))
    assert all(f in frames for f in strips[0]["files"])
