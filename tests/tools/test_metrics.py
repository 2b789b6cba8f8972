"""The bench's metrics and baseline memories on tiny cases with known answers (no bpy, fast)."""
import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import metrics  # noqa: E402

from baselines import NoMemory, PointCloudMemory  # noqa: E402
from backend.memory import LatentMemory  # noqa: E402
from backend.models.patch import PatchModel  # noqa: E402

H, W, F = 24, 32, 20.0


def K():
    return np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])


def cam(x=0.0, yaw=0.0):
    a = math.radians(yaw)
    c2w = np.eye(4)
    c2w[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    c2w[0, 3] = x
    return c2w


def texture(h=H, w=W, seed=0):
    return np.random.default_rng(seed).random((h, w, 3))


def test_psnr_identical_is_inf_and_constant_error_is_known():
    a = texture()
    assert metrics.psnr(a, a) == math.inf
    b = np.clip(a, 0.2, 0.8)
    b2 = b + 0.1  # MSE 0.01 -> 20 dB
    assert metrics.psnr(b2, b) == pytest.approx(20.0, abs=1e-9)
    mask = np.zeros((H, W), bool)
    mask[:4] = True
    b3 = b.copy()
    b3[4:] += 0.3  # outside the mask: ignored
    b3[:4] += 0.01
    assert metrics.psnr(b3, b, mask) == pytest.approx(40.0, abs=1e-6)
    assert math.isnan(metrics.psnr(a, b, np.zeros((H, W), bool)))


def test_ssim_identical_is_one_and_drops_for_noise():
    a = texture()
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 0.2, a.shape), 0, 1)
    assert metrics.ssim(noisy, a) < 0.9


def test_warp_of_a_translated_plane_is_exact():
    # fronto-parallel plane at z = 2; moving the camera by 0.2 shifts the image by f * 0.2 / 2 = 2 pixels
    depth = np.full((H, W), 2.0)
    big = texture(H, W + 2)
    prev, cur = big[:, 2:], big[:, :-2]  # camera moves -x: the content moves right by 2 pixels
    Kp = K()
    err = metrics.warp_error(prev, cur, depth, depth, Kp, cam(0.0), Kp, cam(-0.2))
    assert err == pytest.approx(0.0, abs=1e-12)
    wrong = metrics.warp_error(prev, prev, depth, depth, Kp, cam(0.0), Kp, cam(-0.2))
    assert wrong > 0.1
    # the forward warp (oracle) agrees where it lands
    img, hit, d = metrics.forward_warp(prev, depth, Kp, cam(0.0), Kp, cam(-0.2), H, W)
    assert hit[:, 2:].all() and not hit[:, :2].any()
    assert np.abs(img[hit] - cur[hit]).max() < 1e-12
    assert np.allclose(d[hit], 2.0)


def test_covisible_is_empty_when_the_camera_looks_away():
    depth = np.full((H, W), 2.0)
    assert metrics.covisible(depth, K(), cam(), depth, K(), cam()).all()
    back = metrics.covisible(depth, K(), cam(), depth, K(), cam(yaw=180.0))
    assert not back.any()
    half = metrics.covisible(depth, K(), cam(), depth, K(), cam(x=0.8))  # 8 pixels of 32 leave the view
    assert 0 < half.mean() < 1


def test_revisits_need_the_camera_to_leave_and_come_back():
    poses = [cam(0.0), cam(0.05), cam(1.0), cam(2.0), cam(1.0), cam(0.02)]
    assert metrics.revisits(poses) == {4: 2, 5: 0}  # x=1 again after x=2; x=0 again after x>=1
    assert metrics.revisits([cam(0.01 * i) for i in range(10)]) == {}


def _latent_frame(model, seed=0, depth=2.0):
    img = torch.from_numpy(texture(seed=seed)).permute(2, 0, 1).float()
    lat = model.encode(img)
    return lat, torch.full(lat.shape[1:], depth)


def test_point_cloud_grows_15_bytes_per_pixel_and_latent_memory_stays_smaller():
    model = PatchModel("patch", cell=4)
    Kt = torch.tensor(K())
    pc = PointCloudMemory.bind(model)(model.channels, model.cell)
    lm = LatentMemory(model.channels, model.cell)
    for i in range(3):
        lat, d = _latent_frame(model, i)
        c2w = torch.tensor(cam(0.05 * i))
        pc.write(lat, d, Kt, c2w)
        lm.write(lat, d, Kt, c2w)
        assert pc.nbytes() == 15 * H * W * (i + 1)
        assert lm.nbytes() < pc.nbytes()
    # reading at the first camera gives back pixels of the first frame (oldest wins on the surface)
    lat0, d0 = _latent_frame(model, 0)
    r = pc.read(Kt, torch.tensor(cam(0.0)), H // 4, W // 4)
    lat, hole, depth = r.latent, r.hole, r.depth
    assert not hole.any()
    assert torch.allclose(depth, d0.float(), rtol=1e-5)
    err = (model.render(lat) - model.render(lat0)).abs()
    assert err.max() <= 1 / 255 + 1e-3


def test_no_memory_forgets_earlier_segments():
    model = PatchModel("patch", cell=4)
    Kt = torch.tensor(K())
    mem = NoMemory(model.channels, model.cell)
    lat, d = _latent_frame(model, 0)
    mem.write(lat, d, Kt, torch.tensor(cam(0.0)))
    mem.begin_segment()  # keeps the last frame
    hole = mem.read(Kt, torch.tensor(cam(0.0)), H // 4, W // 4).hole
    assert not hole.any()
    # the segment looks away and ends there: its last frame is what it saw there
    lat2, d2 = _latent_frame(model, 1)
    away = torch.tensor(cam(yaw=180.0))
    mem.read(Kt, away, H // 4, W // 4)
    mem.write(lat2, d2, Kt, away)
    assert len(mem) > 0 and mem.mem.writes == 2  # within the segment both frames are kept
    mem.begin_segment()
    hole = mem.read(Kt, torch.tensor(cam(0.0)), H // 4, W // 4).hole
    assert hole.all()  # the next segment only has the look-away frame
    hole = mem.read(Kt, away, H // 4, W // 4).hole
    assert not hole.any()


def test_occluded_by_marks_what_an_object_hid():
    # a wall at z=5 seen by a camera at the origin; another camera saw object 1 in front of part of it
    H, W = 20, 30
    K = np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]])
    c2w = np.eye(4)
    wall = np.full((H, W), 5.0)
    other = wall.copy()
    ids = np.zeros((H, W), np.uint16)
    other[5:10, 10:20] = 2.0
    ids[5:10, 10:20] = 1
    hidden = metrics.occluded_by(wall, K, c2w, other, ids, 1, K, c2w)
    assert hidden[5:10, 10:20].all() and hidden.sum() == 50
    assert not metrics.occluded_by(wall, K, c2w, other, ids, 2, K, c2w).any()  # another object id
    assert not metrics.occluded_by(other, K, c2w, other, ids, 1, K, c2w).any()  # the object itself is not behind
