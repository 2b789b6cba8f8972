"""The classical patch model: exact round trip, and pixels placed with sub-cell precision on a read."""
import numpy as np
import torch

from backend.memory import LatentMemory
from backend.models import PatchModel, depth_aware_fill
from tests.synth import intrinsics, look_camera, texture


def image(W=64, H=48):
    return torch.from_numpy(texture(W, H, seed=5).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def test_round_trip_is_exact():
    m = PatchModel("patch", cell=4)
    x = image()
    assert torch.equal(m.decode(m.encode(x)), x)


def test_a_one_pixel_move_moves_pixels_by_one_pixel():
    # a wall at z = 4 facing the camera; the camera slides so the wall moves exactly 1 pixel left, a quarter
    # of a cell: pixel placement must reproduce that shift, the cell grid alone cannot
    m, x = PatchModel("patch", cell=4), image()
    K = intrinsics(64, 48)
    z = 4.0
    mem = LatentMemory(m.channels, m.cell)
    mem.write(m.encode(x), torch.full((12, 16), z), K, look_camera(0.0))
    moved = look_camera(z / K[0, 0])  # 1 pixel of parallax at depth z
    latent, hole, depth = mem.read(K, moved, 12, 16)
    geometry = mem.last_read_geometry
    assert geometry.shape == (3, 12, 16) and torch.isnan(geometry[:, hole]).all()
    placed = m.decode(m.fill(latent, hole, depth), geometry, depth)
    snapped = m.decode(m.fill(latent, hole, depth))
    inner = (slice(None), slice(4, 44), slice(4, 56))
    want = torch.roll(x, -1, dims=2)[inner]
    assert (placed[inner] - want).abs().max() < 1e-3
    assert (snapped[inner] - want).abs().mean() > 0.05


def test_geometry_at_the_writing_camera_changes_nothing():
    m, x = PatchModel("patch", cell=4), image()
    K, cam = intrinsics(64, 48), look_camera(0.3, yaw_deg=10)
    mem = LatentMemory(m.channels, m.cell)
    mem.write(m.encode(x), torch.full((12, 16), 5.0), K, cam)
    latent, hole, depth = mem.read(K, cam, 12, 16)
    assert not hole.any()
    assert torch.equal(m.decode(latent, mem.last_read_geometry, depth), m.decode(latent))


def test_fill_borrows_from_the_same_depth_and_object():
    # a hole at the floor's depth (2) beside floor cells and a far wall (9): it must take the floor's colour
    C, h, w = 3, 8, 8
    lat = torch.zeros(C, h, w)
    depth = torch.full((h, w), float("inf"))
    lat[:, :4], depth[:4] = 1.0, 9.0      # wall, top half
    lat[:, 4:, :4], depth[4:, :4] = 0.2, 2.0  # floor, bottom left
    hole = torch.isinf(depth)
    target = torch.where(hole, torch.tensor(2.0), depth)
    out = depth_aware_fill(lat, hole, depth, target)
    assert (out[:, 4:, 4:] - 0.2).abs().max() < 0.05
    # the same hole, marked as another object whose only known cell is wall-coloured, fills from that object
    ids = torch.zeros(h, w, dtype=torch.long)
    ids[4:, 4:] = 1
    ids[0, 7] = 1
    out = depth_aware_fill(lat, hole, depth, target, ids)
    assert (out[:, 4:, 4:] - 1.0).abs().max() < 0.05
