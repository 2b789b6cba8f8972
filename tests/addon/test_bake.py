"""Bake to Materials in real bpy: the built zip installed in a fresh session, a real Generate on a small room, then
the bake headless (bake_scenario.py), its result rendered with Cycles from the reference camera."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BACKEND_PYTHON, ROOT

SCENARIO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bake_scenario.py")
BAKED = ["Block", "Crate", "Floor", "Pillar", "Sheet", "WallE", "WallN", "WallW"]  # WallS: behind every camera


def run_scenario(extension_zip, tmp_path, name):
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, SCENARIO, extension_zip, str(tmp_path), name, str(result)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": BACKEND_PYTHON})
    return proc, json.loads(result.read_text()) if result.exists() else None


def error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("RuntimeError: ")]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def baked(extension_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bake")
    proc, data = run_scenario(extension_zip, tmp, "bake")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, data


def image(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def codec(reference, model):
    """The reference through the run's model's codec alone (encoded, decoded): the error a memory of it has."""
    code = ("import sys, numpy as np, torch; from PIL import Image; from backend import models\n"
            "m = models.load(sys.argv[2])\n"
            "x = torch.from_numpy(np.asarray(Image.open(sys.argv[1]).convert('RGB'), np.float32) / 255).permute(2, 0, 1)\n"
            "y = m.render(m.encode(x)).clamp(0, 1)\n"
            "np.save(sys.argv[3], y.permute(1, 2, 0).numpy())\n")
    out = os.path.join(os.path.dirname(reference), "codec.npy")
    proc = subprocess.run([BACKEND_PYTHON, "-c", code, reference, model, out], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out).astype(np.float64)


def test_a_headless_bake_without_a_run_is_one_line_and_a_non_zero_exit(extension_zip, tmp_path):
    proc, _ = run_scenario(extension_zip, tmp_path, "no_run")
    assert proc.returncode != 0
    line = error_line(proc)
    assert line.startswith("RuntimeError: Error: Nothing to bake: there is no finished run of the flythrough ("), \
        proc.stderr[-2000:]
    assert "press Generate Flythrough first" in line


def test_errors_before_the_bake_leave_the_scene_as_it_was(baked):
    _, data = baked
    assert data["no_run"].startswith("Error: Nothing to bake: there is no finished run of the flythrough")
    assert data["changed"].startswith("Error: The scene changed since the last Generate (")
    assert data["changed"].endswith("Generate again, then bake")
    assert data["after_changed"] == data["before"]
    assert data["backend_failed"] == "Error: The memory cannot be read: test; the scene is as it was"
    assert data["after_failed"] == data["before"]
    assert data["albedo"].startswith("Error: Albedo is not available yet (")


def test_cancel_leaves_the_scene_as_it_was(baked):
    _, data = baked
    c = data["cancel"]
    assert c["started"] and c["cancelled"] and not c["finished"] and c["error"] is None
    assert data["after_cancel"] == data["before"]
    assert c["longest_tick"] < 5.0  # one object read per tick at most: the UI keeps breathing


def test_the_bake_makes_new_materials_and_leaves_the_users_alone(baked):
    tmp, data = baked
    assert data["bake"] is None and data["status"].startswith(f"Baked {len(BAKED)} object(s) in ")
    assert "UNDO" in data["undo_flag"]  # one undo step (Blender's undo does not run in background mode)
    before, after = data["before"], data["after"]
    # every material of the user's, node for node and link for link, and every mesh's own material list
    for name, nodes in before["materials"].items():
        assert after["materials"][name] == nodes, name
    for name, mesh in before["meshes"].items():
        got = after["meshes"][name]
        assert got["materials"] == mesh["materials"], name
        # the user's UV maps, value for value, and the active one; the sheet had none: it gets the added map
        assert {k: v for k, v in got["uv"].items() if k in mesh["uv"]} == mesh["uv"], name
        assert set(got["uv"]) - set(mesh["uv"]) == ({"Mirage Bake"} if name == "Sheet" else set()), name
        if mesh["active_uv"] is not None:
            assert got["active_uv"] == mesh["active_uv"]
    assert after["objects"] == before["objects"] and after["frame"] == before["frame"]
    # a new material per baked object, on its object's slots; WallS, which no frame saw, keeps its own
    for name in BAKED:
        made = data["made"][name]
        assert made["slots"] and all(s == ["OBJECT", f"{name} Mirage Look"] for s in made["slots"]), made
        assert "ShaderNodeEmission" in made["nodes"] and "ShaderNodeBsdfPrincipled" not in made["nodes"]
        assert made["uv_node"] == ["Mirage Bake" if name == "Sheet" else "UVMap"]
        (look, size, packed, space), (mask, _, mpacked, mspace) = made["images"]
        assert look == f"{name} Mirage Look" and mask == f"{name} Mirage Unseen"
        assert packed and mpacked and space == "sRGB" and mspace == "Non-Color" and size[0] == size[1] >= 64
    assert data["made"]["WallS"]["slots"] == [["DATA", "WallS"]]
    # the textures are in the output folder too, and packed textures come back with the saved file
    assert sorted(os.listdir(tmp / "mirage" / "baked")) == sorted(
        [f"{n}_look.png" for n in BAKED] + [f"{n}_unseen.png" for n in BAKED])
    assert not (tmp / "mirage" / "bake").exists()  # the request's files are gone
    assert len(data["reopened_images"]) == 2 * len(BAKED) and all(p for _, p, _ in data["reopened_images"])


def test_the_baked_scene_renders_as_the_reference_within_the_codecs_error(baked):
    tmp, data = baked
    job = json.loads((tmp / "mirage" / "job.json").read_text())
    ref = image(tmp / "reference.png")
    first = job["frames"][0]
    geometry = np.isfinite(np.load(tmp / "mirage" / first["depth"]))
    render = image(tmp / "baked_000001.png")
    got = psnr(render[geometry], ref[geometry])
    allowed = psnr(codec(str(tmp / "reference.png"), job["model"])[geometry], ref[geometry])
    last = job["frames"][-1]
    seen = np.isfinite(np.load(tmp / "mirage" / last["depth"]))
    frames = psnr(image(tmp / f"baked_{last['frame']:06d}.png")[seen],
                  image(tmp / "mirage" / "frames" / f"{last['frame']:06d}.png")[seen])
    print(f"baked render vs reference {got:.2f} dB (codec alone {allowed:.2f} dB); vs the last frame {frames:.2f} dB; "
          f"Generate {data['generate_seconds']:.1f} s, bake {data['bake_seconds']:.1f} s")
    # the texture resampled by Cycles (its pixel filter) and the 8-bit round trip cost a little beyond the codec
    assert got >= allowed - 1.5, (got, allowed)
    assert frames >= 20.0, frames
