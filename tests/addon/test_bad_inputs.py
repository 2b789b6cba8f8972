"""Bad inputs and faults through the real add-on: every case must end in one clear line and leave the
user's scene as it was. All cases share ONE bpy process (tests/addon/cases.py) to keep this fast; the
process exit code of a failing `blender -b` run is checked in test_generate.py (test_bad_input_fails_cleanly)."""
import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest

from backend import protocol
from tests.conftest import BACKEND_PYTHON, backend_has_cuda

CASES_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.py")
NOT_FOUND = "The backend Python does not exist or cannot run"

# name, setup (see cases.apply), argument, expected error (None: Generate must succeed)
CASES = [
    ("no_camera", "no_camera", None, "The scene has no camera"),
    ("camera_is_a_mesh", "camera_is_mesh", None, "Mirage needs a camera object; "),
    ("orthographic", "lens_type", "ORTHO", "Mirage needs a perspective camera; 'Camera' is orthographic"),
    ("panoramic", "lens_type", "PANO", "Mirage needs a perspective camera; 'Camera' is panoramic"),
    ("nan_camera", "nan_camera", None, "Camera 'Camera' has a non-finite transform at frame 1"),
    ("zero_scale_camera", "zero_scale_camera", None, "Camera 'Camera' has a degenerate (zero-scale) rotation"),
    ("mirrored_camera", "mirrored_camera", None, "Camera 'Camera' is mirrored (negative scale)"),
    ("no_reference", "reference", "", "No reference image is set"),
    ("missing_reference", "reference", "nope.png", "The reference image does not exist: "),
    ("reference_is_a_folder", "reference", "folder", "The reference image is a folder, not a file: "),
    ("corrupt_reference", "reference", "corrupt", "The reference image cannot be read: "),
    ("empty_reference", "reference", "empty", "The reference image is empty (0 bytes): "),
    ("reference_aspect", "reference", "square",
     "The reference image is 64x64, which does not have the render's aspect ratio (64x36)"),
    ("no_depth_map", "depth_map", "", "Depth is set to Depth Map, but no depth map is chosen"),
    ("missing_depth_map", "depth_map", "nope.exr", "The depth map does not exist: "),
    ("depth_map_is_a_folder", "depth_map", "folder", "The depth map is a folder, not a file: "),
    ("depth_map_wrong_size", "depth_map", "depth_small", "The depth map is 32x18, the render is 64x36"),
    ("depth_map_nan", "depth_map", "depth_nan", "The depth map holds NaN (not a number) depths"),
    ("depth_map_negative", "depth_map", "depth_negative", "The depth map holds negative depths"),
    ("depth_map_all_zero", "depth_map", "depth_zero", "The depth map is zero everywhere"),
    ("resolution_zero", "percentage", 1, "Resolution 1x1 is too small (at least 16x16)"),
    ("resolution_huge", "resolution", [20000, 20000],
     f"needs about {protocol.estimate_bytes(20000, 20000, 3) / 2**30:.1f} GiB of memory"),
    ("segment_too_long", "segment_length", 500, "Segment Length (500) is longer than the frame range (3 frames)"),
    ("output_under_a_file", "output", ["plain_file", "mirage"], "Cannot write to the output folder "),
    ("output_is_a_file", "output", ["plain_file"], "Cannot write to the output folder "),
    ("backend_python_missing", "python", "/nonexistent/bin/python", NOT_FOUND),
    ("backend_python_is_a_folder", "python", "folder", NOT_FOUND),
    ("backend_without_torch", "python", "BARE_VENV", "cannot import torch"),
    ("backend_crashes", "python", "crash", "The backend stopped unexpectedly (exit code 7): Segmentation fault in libfoo"),
    ("backend_speaks_another_protocol", "python", "proto99", "The backend speaks protocol 99, this add-on speaks 1"),
    ("backend_silent", "stall_timeout", 1, "The backend stopped responding for 1 s"),
    ("cuda_without_cuda", "device", "CUDA",
     "Device is CUDA, but this backend's torch sees no CUDA device: set Device to Auto or CPU"),
    ("no_image_datablock", "reference_datablock", None, "No reference image is chosen: pick an Image"),
    ("image_datablock_without_pixels", "reference_datablock", "missing_file", "The image 'reference.png' has no pixels"),
    ("render_frame_outside_the_range", "reference_render", 99, "Render Frame 99 is outside the frame range (1 to 3)"),
    # allowed: these must work
    ("still_camera", "still_camera", None, None),
    ("auto_device", "device", "AUTO", None),
    ("reference_packed_image", "reference_datablock", "packed", None),
    ("reference_image_from_a_file", "reference_datablock", "file", None),
    ("reference_painted_image", "reference_datablock", "painted", None),
    ("reference_render_frame", "reference_render", 2, None),
    ("monocular_with_geometry", "monocular", None, None),
    # faults: a backend frozen (SIGSTOP) after its first segment, then Generate again on that folder
    ("frozen_backend", "sigstop", 2, "The backend stopped responding for 2 s"),
    ("resume", "resume", None, None),
]


def _one_line(error):
    text = error.strip()
    return text[len("Error: "):] if text.startswith("Error: ") else text


@pytest.fixture(scope="module")
def results(extension_zip, tmp_path_factory, tiny_depth_cache):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    bare = tmp / "bare-venv"
    venv.create(bare, with_pip=False)
    cases = [{"name": n, "setup": s, "arg": str(bare / "bin" / "python") if a == "BARE_VENV" else a}
             for n, s, a, _ in CASES]
    (tmp / "cases.json").write_text(json.dumps(cases))
    result = tmp / "result.json"
    proc = subprocess.run([sys.executable, CASES_PY, extension_zip, str(tmp), str(tmp / "cases.json"), str(result)],
                          cwd=str(tmp), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": BACKEND_PYTHON, "HF_HUB_OFFLINE": "1",
                               "HF_HUB_CACHE": str(tiny_depth_cache)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = {r["name"]: r for r in json.loads(result.read_text())}
    assert list(data) == [c[0] for c in CASES]
    return tmp, data


def test_enough_distinct_bad_inputs():
    failing = [c for c in CASES if c[3] is not None]
    assert len(failing) >= 30 and len({c[3] for c in failing}) >= 28


@pytest.mark.parametrize("name, expected", [(c[0], c[3]) for c in CASES if c[3] is not None and c[0] != "frozen_backend"])
def test_bad_input_is_one_clear_line_and_scene_unchanged(results, name, expected):
    if name == "cuda_without_cuda" and backend_has_cuda():
        pytest.skip("this machine has CUDA")
    _, data = results
    r = data[name]
    assert r["error"] is not None and not r["error"].startswith("UNEXPECTED"), r["error"]
    line = _one_line(r["error"])
    assert expected in line and "\n" not in line and "Traceback" not in line, line
    assert line[0].isupper()
    assert expected in r["status"]  # the panel shows the same line
    assert r["after"] == r["before"]  # nothing added to the VSE, frame, camera and settings as they were
    assert r["backend_alive_after_close"] in (None, False)  # never a backend left running


def test_still_camera_is_a_still_shot(results):
    tmp, data = results
    r = data["still_camera"]
    assert r["error"] is None, r["error"]
    assert [s["name"] for s in r["after"]["strips"]] == ["Mirage 001", "Mirage 002"]
    assert sum(len(s["files"]) for s in r["after"]["strips"]) == 3


def test_auto_device_falls_back_with_a_notice(results):
    _, data = results
    r = data["auto_device"]
    assert r["error"] is None, r["error"]
    if backend_has_cuda():
        pytest.skip("this machine has CUDA")
    assert "no CUDA device found, running on the CPU" in r["notices"]
    assert len(r["after"]["strips"]) == 2


@pytest.mark.parametrize("name", ["reference_packed_image", "reference_image_from_a_file"])
def test_reference_from_an_image_datablock_is_its_own_file(results, name):
    tmp, data = results
    r = data[name]
    assert r["error"] is None, r["error"]
    job = json.loads((tmp / name / "job.json").read_text())
    assert job["reference"] == {"image": "inputs/reference.png", "frame": 1}
    # the packed bytes (its file was deleted) or the image's file, byte for byte
    assert (tmp / name / "inputs" / "reference.png").read_bytes() == (tmp / "reference.png").read_bytes()
    assert len(r["after"]["strips"]) == 2 and r["after"]["reference_datablock"] == r["before"]["reference_datablock"]


def test_reference_painted_in_blender_is_saved_from_its_pixels(results):
    from PIL import Image
    tmp, data = results
    assert data["reference_painted_image"]["error"] is None
    with Image.open(tmp / "reference_painted_image" / "inputs" / "reference.png") as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.shape == (36, 64, 3)
    assert px[:, -1, 0].mean() > 200 and px[:, 0, 0].mean() < 30 and px[..., 1:].max() < 30  # the red ramp


def _succeeded(results, name):
    """(the case's result, its output folder, its job.json) for a case that must succeed."""
    tmp, data = results
    assert data[name]["error"] is None, data[name]["error"]
    return data[name], tmp / name, json.loads((tmp / name / "job.json").read_text())


def test_reference_render_frame_renders_and_restores_the_render_settings(results):
    r, folder, job = _succeeded(results, "reference_render_frame")
    tmp = results[0]
    assert job["reference"]["frame"] == 2  # the reference shows the frame that was rendered
    assert (folder / "reference_render_000002.png").is_file()
    assert "The reference is frame 2 rendered with Cycles: " in " ".join(r["notices"])
    assert r["after"]["render"] == r["before"]["render"]
    assert r["before"]["render"]["filepath"] == "//my_renders/shot_" and "JPEG" in r["before"]["render"]["format"]
    assert r["after"]["frame_current"] == r["before"]["frame_current"]
    assert not (tmp / "my_renders").exists()
    from PIL import Image
    with Image.open(folder / "inputs" / "reference.png") as ref, Image.open(folder / "frames" / "000002.png") as out:
        a, b = (np.asarray(im.convert("RGB"), dtype=float) for im in (ref, out))
    assert a.std() > 5 and 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-10)) > 20  # frame 2 is the render


def test_depth_from_the_image_is_scaled_by_the_scene_where_it_has_geometry(results):
    _, folder, job = _succeeded(results, "monocular_with_geometry")
    assert job["depth_source"] == "MONOCULAR" and "depth" not in job["frames"][0]
    scene = np.load(folder / job["reference"]["scene_depth"])
    assert scene.shape == (36, 64) and np.isfinite(scene).mean() > 0.9 and (scene[np.isfinite(scene)] > 0).all()
    assert sorted(os.listdir(folder / "frames")) == ["000001.png", "000002.png", "000003.png"]


def test_frozen_backend_is_stopped_and_finished_segments_stay(results):
    tmp, data = results
    r = data["frozen_backend"]
    assert r["error"] is not None
    line = _one_line(r["error"])
    assert line.startswith("The backend stopped responding for 2 s and was stopped; finished segments are kept"), line
    assert r["seconds"] < 30
    assert not r["stopped_pid_exists"] and r["backend_alive_after_close"] is False
    strips = r["after"]["strips"]
    assert 1 <= len(strips) < 24 and strips[0]["name"] == "Mirage 001" and strips[0]["start"] == 1
    frames = set(os.listdir(tmp / "mirage" / "frames"))
    assert all(f in frames for s in strips for f in s["files"])
    assert not [f for f in frames if f.endswith(".part")]


def test_generate_resumes_a_partial_run_into_the_vse(results):
    tmp, data = results
    stopped, r = data["frozen_backend"], data["resume"]
    assert r["error"] is None, r["error"]
    assert r["resumed"] >= len(stopped["after"]["strips"]) >= 1  # the frozen run's segments were kept
    strips = sorted(r["after"]["strips"], key=lambda s: s["start"])
    assert len(strips) == 24 and [s["start"] for s in strips] == list(range(1, 25))
    run = json.loads((tmp / "mirage" / "run.json").read_text())
    assert run["resumed_segments"] == r["resumed"] and run["frames"] == 24
