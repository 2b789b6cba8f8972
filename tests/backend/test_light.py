"""Light maps: the memory keeps the scene without its moving objects' shading and shadows, each frame gets its own."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.backend.test_objects import interior
from tests.conftest import run_backend
from tests.synth import make_job

W, H = 64, 48
GAMMA = 2.2
SHADOW = (slice(0, 12), slice(0, 16))  # static pixels in a moving object's shadow on the reference
NEW_SHADOW = (slice(36, 48), slice(48, 64))  # static pixels a moving object shades on frame 3


def maps():
    """Frame 1 (reference): a shadow on the static world, the box at light 3. Frame 2: the shadow gone, the box
    unchanged. Frame 3: the box turned to the sun (light 6) and a new shadow elsewhere."""
    m = [np.ones((H, W), np.float32) for _ in range(3)]
    m[0][SHADOW] = 0.5
    m[2][NEW_SHADOW] = 0.25
    return m


def lit_job(folder, light=None):
    path = make_job(str(folder), W=W, H=H, n=3, segment_length=1, model="patch", xs=[0.0] * 3, yaws=[0.0] * 3,
                    box_xs=[0.0] * 3)
    job = json.load(open(path))
    os.makedirs(os.path.join(folder, "inputs", "light"), exist_ok=True)
    light = light if light is not None else maps()
    for k, fr in enumerate(job["frames"]):
        box = np.load(os.path.join(folder, fr["ids"])) == 1
        g = light[k].copy()
        g[box] = {0: 3.0, 1: 3.0, 2: 6.0}[k]
        fr["light"] = f"inputs/light/{fr['frame']:06d}.npy"
        np.save(os.path.join(folder, fr["light"]), g.astype(np.float16))
    with open(path, "w") as f:
        json.dump(job, f)
    return path, job


def png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_frames_take_their_own_light(tmp_path):
    path, job = lit_job(tmp_path)
    proc, _ = run_backend(path)
    assert proc.returncode == 0, proc.stderr
    ref = png(tmp_path / "inputs" / "reference.png")
    out = {k: png(tmp_path / "frames" / f"{k:06d}.png") for k in (1, 2, 3)}
    assert np.array_equal(out[1], ref)  # the user's image on its own frame
    box = interior(np.load(tmp_path / "inputs" / "ids" / "000001.npy")) == 1
    static = interior(np.load(tmp_path / "inputs" / "ids" / "000001.npy") == 0) == 1

    def check(frame, where, gain):
        want = ref[where] * gain ** (1 / GAMMA)
        ok = want < 250  # not clipped
        assert ok.sum() > 50
        assert np.abs(out[frame][where][ok] - want[ok]).max() <= 2.0, frame

    shadow = np.zeros((H, W), bool)
    shadow[SHADOW] = True
    new_shadow = np.zeros((H, W), bool)
    new_shadow[NEW_SHADOW] = True
    rest = static & ~shadow & ~new_shadow
    check(2, shadow & static, 2.0)  # the reference's shadow is gone
    check(2, rest, 1.0)
    check(2, box, 1.0)  # same light as on the reference
    check(3, box, 2.0)  # twice the light
    check(3, new_shadow & static, 0.25)
    check(3, rest, 1.0)




# -- never-seen faces from the object's material ------------------------------------------------------

def with_albedo(folder, job, path, colours):
    """Give every frame a surface colour map: the box's pixels left of column 32 colours[0], the rest colours[1]."""
    os.makedirs(os.path.join(folder, "inputs", "albedo"), exist_ok=True)
    for fr in job["frames"]:
        box = np.load(os.path.join(folder, fr["ids"])) == 1
        a = np.zeros((H, W, 3), np.uint8)
        left = np.zeros((H, W), bool)
        left[:, :32] = True
        a[box & left], a[box & ~left] = colours
        fr["albedo"] = f"inputs/albedo/{fr['frame']:06d}.npy"
        np.save(os.path.join(folder, fr["albedo"]), a)
    with open(path, "w") as f:
        json.dump(job, f)


def test_never_seen_pixels_take_their_material_colour(tmp_path):
    from backend.pipeline import Run
    from backend.protocol import load_job
    from backend.step import material_cells
    path, job = lit_job(tmp_path, [np.ones((H, W), np.float32)] * 3)
    for fr in job["frames"]:  # the box at the same light on every frame
        np.save(tmp_path / fr["light"], np.ones((H, W), np.float16))
    mat = np.array([[200, 40, 40], [30, 60, 220]], np.uint8)
    with_albedo(tmp_path, job, path, mat)
    # the reference shows the material's colours through a look of its own: linear light * 0.5 + 0.1
    look = lambda a: ((a / 255.0) ** GAMMA * 0.5 + 0.1) ** (1 / GAMMA)  # noqa: E731
    ref = png(tmp_path / "inputs" / "reference.png")
    box = np.load(tmp_path / "inputs" / "ids" / "000001.npy") == 1
    left = np.zeros((H, W), bool)
    left[:, :32] = True
    ref[box & left], ref[box & ~left] = look(mat[0]) * 255, look(mat[1]) * 255
    Image.fromarray(np.rint(ref).astype(np.uint8)).save(tmp_path / "inputs" / "reference.png")
    run = Run.load(load_job(path)[0], str(tmp_path), lambda *a, **k: None)
    run.seed_memory()
    maps = run.view(2).maps
    ids = maps.ids
    drawn = torch.zeros(3, *ids.shape)
    covered = torch.ones(ids.shape, dtype=torch.bool)
    unseen = (ids == 1) & ~torch.from_numpy(np.pad(left, ((0, ids.shape[0] - H), (0, ids.shape[1] - W))))
    covered[unseen] = False  # the box's right half: nothing drew it
    out, now, painted = run.lighting.prefill(2, maps).paint(drawn, covered)
    assert now.all()
    want = torch.tensor(look(mat[1]), dtype=torch.float32)
    assert (out[:, unseen].T - want).abs().max() < 2 / 255  # the material's colour, in the reference's look
    assert not out[:, ~unseen].any()  # what was drawn stays as drawn
    cells = material_cells(painted, run.cell)
    assert cells.any() and cells.sum() < cells.numel() // 2


BAD = [
    (lambda d, fr: np.save(d / fr["light"], np.ones((5, 5), np.float16)), "light map of frame 2 is 5x5"),
    (lambda d, fr: np.save(d / fr["light"], np.full((H, W), np.nan, np.float32)), "light map of frame 2 holds NaN"),
    (lambda d, fr: np.save(d / fr["light"], -np.ones((H, W), np.float32)), "light map of frame 2 holds NaN, infinite or negative"),
    (lambda d, fr: fr.pop("light"), "either every frame has a light map or none does"),
    (lambda d, fr: np.save(d / fr["albedo"], np.zeros((H, W), np.uint8)), "surface colour map of frame 2 must be 64x48x3 uint8"),
    (lambda d, fr: fr.pop("albedo"), "either every frame has a surface colour map or none does"),
    (lambda d, fr: np.save(d / fr["shade"], np.ones((H, W), np.float16)), "shading map of frame 2 must be 64x48x2 floats"),
    (lambda d, fr: np.save(d / fr["shade"], -np.ones((H, W, 2), np.float16)), "shading map of frame 2 holds NaN, infinite or negative"),
    (lambda d, fr: (d / fr["shade"]).write_bytes(b"not a map"), "shading map of frame 2 cannot be read"),
    (lambda d, fr: fr.pop("shade"), "either every frame has a shading map or none does"),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_bad_light_or_surface_colour_map_is_a_clear_error(tmp_path, mutate, message):
    path, job = lit_job(tmp_path)
    with_albedo(tmp_path, job, path, np.array([[200, 40, 40], [30, 60, 220]], np.uint8))
    os.makedirs(tmp_path / "inputs" / "shade")
    for fr in job["frames"]:  # the still world's direct and all-around light
        fr["shade"] = f"inputs/shade/{fr['frame']:06d}.npy"
        np.save(tmp_path / fr["shade"], np.full((H, W, 2), 0.5, np.float16))
    mutate(tmp_path, job["frames"][1])
    with open(path, "w") as f:
        json.dump(job, f)
    proc, msgs = run_backend(path, "--jsonl")
    assert proc.returncode == 1
    assert msgs[-1]["type"] == "error" and message in msgs[-1]["message"], msgs[-1]
    assert not (tmp_path / "frames" / "000002.png").exists()


def test_object_the_reference_does_not_show_takes_its_material_as_is(tmp_path):
    # a car that drives in later: nothing to learn its look from, so its material's own colours (lit by the frame)
    from backend.pipeline import Run
    from backend.protocol import load_job
    path, job = lit_job(tmp_path, [np.ones((H, W), np.float32)] * 3)
    mat = np.array([[200, 40, 40], [30, 60, 220]], np.uint8)
    with_albedo(tmp_path, job, path, mat)
    ref_ids = tmp_path / job["frames"][0]["ids"]
    np.save(ref_ids, np.zeros((H, W), np.uint16))  # not in the reference's view
    np.save(tmp_path / job["frames"][0]["albedo"], np.zeros((H, W, 3), np.uint8))
    run = Run.load(load_job(path)[0], str(tmp_path), lambda *a, **k: None)
    run.seed_memory()
    maps = run.view(2).maps
    ids = maps.ids
    drawn = torch.zeros(3, *ids.shape)
    out, now, _ = run.lighting.prefill(2, maps).paint(drawn, torch.zeros(ids.shape, dtype=torch.bool))
    box = ids == 1
    left = torch.zeros(ids.shape, dtype=torch.bool)
    left[:, :32] = True
    assert (out[:, box & left].T * 255 - torch.tensor(mat[0], dtype=torch.float32)).abs().max() < 1.0
    assert (out[:, box & ~left].T * 255 - torch.tensor(mat[1], dtype=torch.float32)).abs().max() < 1.0
    assert not out[:, ~box].any() and torch.equal(now, box)  # only the object's pixels


def test_light_softens_only_between_faces_of_one_object():
    from backend.relight import soften_edges
    ids = torch.zeros(6, 8, dtype=torch.long)
    ids[:, 2:] = 1  # an object; columns 0-1 static
    g = torch.full((6, 8), 0.5)
    g[:, 2:5] = 1.0  # one face
    g[:, 5:] = 3.0  # the next
    out = soften_edges(g, ids)
    assert torch.equal(out[:, :2], g[:, :2])  # the static world as it was
    assert torch.allclose(out[:, 2:4], torch.ones(6, 2)) and torch.allclose(out[:, 6:], torch.full((6, 2), 3.0))
    assert torch.allclose(out[:, 4], torch.full((6,), 5 / 3)) and torch.allclose(out[:, 5], torch.full((6,), 7 / 3))
