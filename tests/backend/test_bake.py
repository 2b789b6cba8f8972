"""Baking a finished run's memory into a texture (backend/bake.py): the real backend process on a synthetic job
whose still world is a textured wall addressed by its surface points."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import ROOT, backend_env, run_backend
from tests.synth import intrinsics, look_camera, texture

W, H, WALL = 64, 48, 6.0


def wall_maps(K, c2w):
    """Depth, surface address (the world point) and normal (facing the camera) of the wall at world z = WALL."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1) @ c2w[:3, :3].T
    t = (WALL - c2w[2, 3]) / d[..., 2]
    rest = c2w[:3, 3] + t[..., None] * d
    normal = np.zeros((H, W, 3), np.float16)
    normal[..., 2] = -1.0
    return t.astype(np.float32), rest.astype(np.float32), normal


def make_run(folder, model="patch", shade=False):
    """A three-frame job of the wall (the camera slides right) run to the end; returns (K, the reference image).
    With `shade`, the frames carry a shading map (the still world's direct and all-around light, even here)."""
    for sub in ("depth", "rest", "normal", "shade"):
        os.makedirs(os.path.join(folder, "inputs", sub), exist_ok=True)
    K = intrinsics(W, H)
    frames = []
    for i, x in enumerate((0.0, 0.1, 0.2)):
        c2w = look_camera(x)
        depth, rest, normal = wall_maps(K, c2w)
        entry = {"frame": i + 1, "K": K.tolist(), "cam_to_world": c2w.tolist()}
        maps = [("depth", depth), ("rest", rest), ("normal", normal)]
        if shade:
            maps.append(("shade", np.stack([np.full((H, W), 1.0), np.full((H, W), 0.5)], -1).astype(np.float16)))
        for name, a in maps:
            entry[name] = f"inputs/{name}/{i + 1:06d}.npy"
            np.save(os.path.join(folder, entry[name]), a)
        frames.append(entry)
    ref = texture(W, H, seed=3)
    Image.fromarray(ref).save(os.path.join(folder, "inputs", "reference.png"))
    job = {"version": 1, "model": model, "device": "CPU", "seed": 0, "segment_length": 3, "width": W, "height": H,
           "reference": {"image": "inputs/reference.png", "frame": 1}, "depth_source": "SCENE", "frames": frames}
    with open(os.path.join(folder, "job.json"), "w") as f:
        json.dump(job, f)
    proc, _ = run_backend(os.path.join(folder, "job.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return K, ref.astype(np.float64) / 255.0


def request(folder, size, x_range, y_range, mode="LOOK", bank=0, name="Wall", shade=None):
    """A bake request for a chart of the wall: texel (r, c) of a size x size texture at world x from x_range[0]
    (column 0) to x_range[1], y from y_range[0] (row 0) to y_range[1], every texel on the surface."""
    bake = os.path.join(folder, "bake")
    os.makedirs(bake, exist_ok=True)
    r, c = np.divmod(np.arange(size * size), size)
    x = x_range[0] + (c + 0.5) / size * (x_range[1] - x_range[0])
    y = y_range[0] + (r + 0.5) / size * (y_range[1] - y_range[0])
    points = np.stack([x, y, np.full_like(x, WALL)], 1).astype(np.float32)
    normals = np.tile(np.array([[0.0, 0.0, -1.0]], np.float32), (len(x), 1))  # outward: toward the cameras
    np.save(os.path.join(bake, "000_texels.npy"), np.arange(size * size, dtype=np.int64))
    np.save(os.path.join(bake, "000_points.npy"), points)
    np.save(os.path.join(bake, "000_normals.npy"), normals)
    entry = {"name": name, "bank": bank, "width": size, "height": size, "texels": "000_texels.npy",
             "points": "000_points.npy", "normals": "000_normals.npy"}
    if shade is not None:
        np.save(os.path.join(bake, "000_shade.npy"), np.tile(np.asarray([shade], np.float32), (len(x), 1)))
        entry["shade"] = "000_shade.npy"
    with open(os.path.join(bake, "request.json"), "w") as f:
        json.dump({"version": 1, "mode": mode, "objects": [entry]}, f)
    return bake, points


def run_bake(bake, *args):
    proc = subprocess.run([sys.executable, "-m", "backend", "bake", bake, *args], cwd=ROOT, env=backend_env(),
                          capture_output=True, text=True, timeout=120)
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def sample(image, K, points):
    """The reference image sampled bilinearly where its camera (at the origin) sees world points [M, 3]."""
    x = K[0, 0] * points[:, 0] / points[:, 2] + K[0, 2]
    y = K[1, 1] * points[:, 1] / points[:, 2] + K[1, 2]
    x0, y0 = np.clip(np.floor(x).astype(int), 0, W - 2), np.clip(np.floor(y).astype(int), 0, H - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return ((image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx) * (1 - fy)
            + (image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx) * fy), x, y


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_a_baked_wall_gives_back_its_texture(tmp_path):
    K, ref = make_run(str(tmp_path))
    # a chart inside what the reference saw: x in [-2, 2], y in [-1.5, 1.5] at 6 units (the view spans +-3.3 x 2.5)
    bake, points = request(str(tmp_path), 48, (-2.0, 2.0), (-1.5, 1.5))
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    types = [m["type"] for m in msgs]
    assert types[0] == "hello" and types[-1] == "done" and "progress" in types and "error" not in types
    assert msgs[-1]["stats"]["texels"] == 48 * 48 and msgs[-1]["stats"]["seen"] == 48 * 48
    colour = np.asarray(Image.open(os.path.join(bake, "result", "000_colour.png")).convert("RGB"), np.float64) / 255
    mask = np.asarray(Image.open(os.path.join(bake, "result", "000_mask.png")))
    assert colour.shape == (48, 48, 3) and mask.shape == (48, 48) and not mask.any()
    # the known answer: the reference where its camera saw each texel's point, exact cells (the codec adds nothing):
    # the same up to rounding wherever the point falls between pixel centres of one stored 4 x 4 cell; between two
    # cells the memory takes the nearer one's pixel where this takes their mean
    want, x, y = sample(ref, K, points)
    within = (x % 4 <= 3) & (y % 4 <= 3)
    assert within.mean() > 0.4  # (3 / 4)^2 of the chart
    assert np.abs(colour.reshape(-1, 3)[within] - want[within]).max() < 2.5 / 255
    assert psnr(colour.reshape(-1, 3), want) > 24.0  # a sharp checker resampled across cells
    report = json.load(open(os.path.join(bake, "result", "result.json")))
    assert report["objects"][0]["seen"] == 48 * 48 and report["mode"] == "LOOK"


def test_texels_nothing_saw_take_the_nearest_known_colour_and_the_mask(tmp_path):
    K, ref = make_run(str(tmp_path))
    # x from 0 to 8: the right half of the chart lies beyond anything any frame saw (the view ends near x = 3.5)
    bake, points = request(str(tmp_path), 32, (0.0, 8.0), (-1.0, 1.0))
    proc, msgs = run_bake(bake)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "baking Wall" in proc.stderr  # the human-readable progress without --jsonl
    colour = np.asarray(Image.open(os.path.join(bake, "result", "000_colour.png")).convert("RGB"), np.float64) / 255
    mask = np.asarray(Image.open(os.path.join(bake, "result", "000_mask.png"))) > 0
    cols = np.arange(32)
    seen_cols = cols[~mask.all(0)]
    assert 8 <= len(seen_cols) <= 20 and (mask[:, 24:]).all()  # the far right: never seen
    # the mask is exactly where nothing was seen: its texels are the same colour as the last seen column's
    last = seen_cols.max()
    assert not mask[:, :last + 1].any()
    np.testing.assert_array_equal(colour[:, last + 1:], np.repeat(colour[:, last:last + 1], 31 - last, axis=1))
    # and where seen, the reference's colours
    want, x, y = sample(ref, K, points)
    seen = ~mask.reshape(-1) & (x % 4 <= 3) & (y % 4 <= 3)
    assert seen.sum() > 100 and np.abs(colour.reshape(-1, 3)[seen] - want[seen]).max() < 2.5 / 255


def test_bake_errors_are_one_line(tmp_path):
    # no finished run in the folder
    os.makedirs(tmp_path / "empty")
    bake, _ = request(str(tmp_path / "empty"), 8, (0, 1), (0, 1))
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 1 and msgs[-1]["type"] == "error"
    assert msgs[-1]["message"].startswith("there is no finished run in "), msgs[-1]
    # a bank the run does not have, and a bad request
    make_run(str(tmp_path / "run"))
    bake, _ = request(str(tmp_path / "run"), 8, (0, 1), (0, 1), bank=3)
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 1 and "names memory bank 3, which the run does not have" in msgs[-1]["message"]
    bake, _ = request(str(tmp_path / "run"), 8, (0, 1), (0, 1), mode="SHINY")
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 1 and msgs[-1]["message"].startswith("the bake mode must be one of LOOK, ALBEDO")
    proc, _ = run_bake(str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: bake request not found")


def test_albedo_divides_the_light_at_each_texel_out(tmp_path):
    make_run(str(tmp_path), shade=True)
    bake, _ = request(str(tmp_path), 24, (-2.0, 2.0), (-1.5, 1.5))
    proc, _ = run_bake(bake)
    assert proc.returncode == 0, proc.stderr[-2000:]
    look = np.asarray(Image.open(os.path.join(bake, "result", "000_colour.png")).convert("RGB"), np.float64)
    # the same chart where each texel gets twice the light the references' frames got (all of it direct): half
    bake, _ = request(str(tmp_path), 24, (-2.0, 2.0), (-1.5, 1.5), mode="ALBEDO", shade=(2.0, 0.0))
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    albedo = np.asarray(Image.open(os.path.join(bake, "result", "000_colour.png")).convert("RGB"), np.float64)
    assert np.abs(albedo - look / 2).max() <= 1.0
    # without a shading map on the references, ALBEDO is one line
    make_run(str(tmp_path / "plain"))
    bake, _ = request(str(tmp_path / "plain"), 8, (0, 1), (0, 1), mode="ALBEDO", shade=(1.0, 1.0))
    proc, msgs = run_bake(bake, "--jsonl")
    assert proc.returncode == 1 and msgs[-1]["message"].startswith("ALBEDO needs the still world's light on the "
                                                                   "references"), msgs[-1]
