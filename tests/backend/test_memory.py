import math

import numpy as np
import pytest
import torch

from backend.memory import (MAX_SPLAT, SPLAT_GROW, SURFACE_TOL, LatentMemory, cell_depth, cell_edges, latent_intrinsics,
                            zbuffer)


def grid(read):
    """A read's latent, hole and depth (the latent-grid part of a BankRead or MemoryRead)."""
    return read.latent, read.hole, read.depth


def rot(yaw=0.0, pitch=0.0, roll=0.0):
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    Rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
    return Ry @ Rx @ Rz


def cam(R=None, t=(0.0, 0.0, 0.0)):
    M = torch.eye(4, dtype=torch.float64)
    if R is not None:
        M[:3, :3] = R
    M[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return M


def intr(f, cx, cy):
    return torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=torch.float64)


def bumpy_depth(h, w):
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d = 4 + 6 * i / h + 5 * j / w + 1.5 * torch.sin(i / 3) * torch.cos(j / 4)
    d[h // 3:h // 2, w // 4:w // 3] = 2.5  # a foreground box with sharp edges
    return d.clamp(2, 20)


def plane_depth(K, c2w, h, w, cell, normal, offset):
    """Planar depth of the cells of a camera looking at the world plane normal . X = offset."""
    fx, fy, cx, cy = latent_intrinsics(K, cell)
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(j - cx) / fx, (i - cy) / fy, torch.ones_like(i)], -1) @ c2w[:3, :3].T
    n = torch.tensor(normal, dtype=torch.float64)
    t = (offset - n @ c2w[:3, 3]) / (ray @ n)
    return torch.where(t > 0, t, torch.full_like(t, float("inf")))


H_, W_, CELL = 144, 256, 4
K0 = intr(230.0, 120.3, 75.9)
C0 = cam(rot(0.3, -0.2, 0.1), (1.5, -0.7, 2.0))


def random_scene(seed=0, frames=4, h=12, w=16, C=8):
    g = torch.Generator().manual_seed(seed)
    K = intr(40.0, 31.0, 23.0)  # cell 4 -> 16 x 12 cells
    mem = LatentMemory(C, CELL)
    for f in range(frames):
        c2w = cam(rot(0.2 * f - 0.3, 0.1 * f, 0.0), (0.5 * f, 0.2, -0.3 * f))
        depth = 2 + 10 * torch.rand(h, w, generator=g, dtype=torch.float64)
        mask = torch.rand(h, w, generator=g) < 0.8
        mem.write(torch.randn(C, h, w, generator=g), depth, K, c2w, mask=mask)
    return mem, K


def test_round_trip_exact():
    h, w = H_ // CELL, W_ // CELL
    latent = torch.randn(48, h, w, generator=torch.Generator().manual_seed(1))
    depth = bumpy_depth(h, w)
    mem = LatentMemory(48, CELL)
    assert mem.write(latent, depth, K0, C0) == h * w
    assert len(mem) == h * w
    r = mem.read(K0, C0, h, w)
    lat, hole, d = r.latent, r.hole, r.depth
    assert lat.dtype == torch.float16 and d.dtype == torch.float32
    assert not hole.any()
    assert torch.equal(lat, latent.to(torch.float16))
    assert torch.allclose(d.double(), depth, rtol=1e-3, atol=0)


def test_latent_intrinsics_cell_centres():
    K = intr(211.0, 97.3, 61.8)
    for cell in (4, 8):
        fx, fy, cx, cy = latent_intrinsics(K, cell)
        for i, j, z in [(0, 0, 3.0), (5, 11, 7.5), (13, 2, 19.0)]:
            u, v = j * cell + (cell - 1) / 2, i * cell + (cell - 1) / 2  # pixel centre of the latent cell
            X, Y = (u - 97.3) / 211.0 * z, (v - 61.8) / 211.0 * z
            assert abs(fx * X / z + cx - j) < 1e-9 and abs(fy * Y / z + cy - i) < 1e-9
            # and through the memory: one cell written at (i, j) lands on (i, j), nowhere else
            mem = LatentMemory(2, cell)
            mask = torch.zeros(16, 24, dtype=torch.bool)
            mask[i, j] = True
            mem.write(torch.ones(2, 16, 24), torch.full((16, 24), z), K, cam(), mask=mask)
            hole = mem.read(K, cam(), 16, 24).hole
            assert (~hole).nonzero().tolist() == [[i, j]]


def test_zbuffer_nearer_wins_either_order():
    K, c2w = intr(40.0, 31.5, 23.5), cam()
    mask = torch.zeros(12, 16, dtype=torch.bool)
    mask[4, 7] = True
    near = (torch.full((3, 12, 16), 1.0), torch.full((12, 16), 3.0))
    far = (torch.full((3, 12, 16), 2.0), torch.full((12, 16), 9.0))
    for first, second in [(near, far), (far, near)]:
        mem = LatentMemory(3, CELL)
        mem.write(*first, K, c2w, mask=mask)
        mem.write(*second, K, c2w, mask=mask)
        assert len(mem) == 2
        r = mem.read(K, c2w, 12, 16)
        lat, hole, d = r.latent, r.hole, r.depth
        assert (~hole).sum() == 1 and not hole[4, 7]
        assert lat[:, 4, 7].eq(1).all() and abs(float(d[4, 7]) - 3.0) < 1e-5


def test_write_collision_keeps_nearest():
    # extreme off-axis rays (|x| ~ 1000) bring two neighbouring cells of one frame into one voxel; the nearer
    # one (always the more off-axis) must be kept, whether it is the first or the second cell
    mask = torch.zeros(2, 2, dtype=torch.bool)
    mask[0] = True
    latent = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    for cx_l, nearer in [(-1000.25, 1), (1001.25, 0)]:
        K = intr(4.0, cx_l * 4 + 1.5, 0.3)  # latent fx = fy = 1, cy = -0.3
        x = [abs(0 - cx_l), abs(1 - cx_l)]
        depth = torch.full((2, 2), 5.0, dtype=torch.float64)
        depth[0, 1 - nearer] = 1.1
        depth[0, nearer] = 1.1 * x[1 - nearer] / x[nearer]  # same world x as the other cell
        mem = LatentMemory(1, CELL)
        assert mem.write(latent, depth, K, cam(), mask=mask) == 1
        assert float(mem.lat[0, 0]) == float(latent[0, 0, nearer])


def test_zbuffer_ties_lowest_index():
    target = torch.tensor([2, 2, 2, 0, 0, 1])
    z = torch.tensor([5.0, 3.0, 3.0, 1.0, 1.0, 7.0])
    assert zbuffer(target, z, 4).tolist() == [3, 5, 1, 6]


@pytest.mark.parametrize("scale", [1, 4])
def test_zbuffer_matches_brute_force(scale):
    mem, K = random_scene()
    assert 300 < len(mem) < 800
    # scale > 1 reads a coarser grid so many cells compete for each target cell
    Kr = K.clone()
    Kr[:2] /= scale
    c2w = cam(rot(0.1, 0.05, 0.02), (0.4, 0.1, -2.0))
    h, w = 12 // scale, 16 // scale
    r = mem.read(Kr, c2w, h, w)
    lat, hole, depth = r.latent, r.hole, r.depth

    fx, fy, cx, cy = latent_intrinsics(Kr, CELL)
    w2c = np.linalg.inv(c2w.numpy())

    def span(c, size):  # target centres inside the splat, at least the nearest, at most MAX_SPLAT
        lo, hi = math.ceil(c - size / 2), math.ceil(c + size / 2) - 1
        if hi < lo:
            lo = hi = math.floor(c + 0.5)
        return range(lo, min(hi, lo + MAX_SPLAT - 1) + 1)

    cands = {}
    for n, p in enumerate(mem.pos.double().numpy()):
        x, y, z = w2c[:3, :3] @ p + w2c[:3, 3]
        if z <= 1e-4:
            continue
        foot = SPLAT_GROW * float(mem.foot[n]) / z
        for i in span(fy * y / z + cy, fy * foot):
            for j in span(fx * x / z + cx, fx * foot):
                if 0 <= i < h and 0 <= j < w:
                    cands.setdefault((i, j), []).append((z, int(mem.age[n]), n))
    best = {}
    for ij, cs in cands.items():  # nearest surface, then oldest, then lowest index
        zmin = min(c[0] for c in cs)
        z, _, n = min((c for c in cs if c[0] <= zmin * (1 + SURFACE_TOL)), key=lambda c: (c[1], c[2]))
        best[ij] = (z, n)
    assert len(best) > (h * w) // 2
    for i in range(h):
        for j in range(w):
            if (i, j) not in best:
                assert hole[i, j]
                continue
            z, n = best[(i, j)]
            assert not hole[i, j]
            assert torch.equal(lat[:, i, j], mem.lat[n])
            assert abs(float(depth[i, j]) - z) < 1e-4 * z


def test_deterministic_runs_and_threads():
    c2w = cam(rot(0.1, 0.05, 0.02), (0.4, 0.1, -2.0))
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            mem, K = random_scene(seed=3)
            outs.append(grid(mem.read(K / 2 * torch.tensor([[1], [1], [2]]), c2w, 6, 8)))
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other))


def test_bounded_growth_on_revisits():
    h, w = 18, 32
    K = intr(115.0, 63.5, 35.5)
    normal, offset = (0.0, -0.3, 1.0), 10.0  # slanted wall
    c2w = cam(rot(0.05, 0.0, 0.0))
    depth = plane_depth(K, c2w, h, w, CELL, normal, offset)
    latent = torch.randn(8, h, w)
    mem = LatentMemory(8, CELL)
    mem.write(latent, depth, K, c2w)
    n0, b0 = len(mem), mem.nbytes()
    assert n0 == h * w
    for _ in range(9):
        mem.write(latent, depth, K, c2w)
    assert (len(mem), mem.nbytes()) == (n0, b0)

    shift = 0.05 * float(depth.mean()) * CELL / 115.0  # 5% of a cell's footprint
    moved = cam(rot(0.05, 0.0, 0.0), (shift, 0.5 * shift, 0.0))
    mem.write(latent, plane_depth(K, moved, h, w, CELL, normal, offset), K, moved)
    assert n0 < len(mem) < 1.3 * n0
    hole = mem.read(K, moved, h, w).hole
    assert not hole.any()


def test_holes_when_looking_away_or_behind():
    h, w = H_ // CELL, W_ // CELL
    mem = LatentMemory(4, CELL)
    mem.write(torch.randn(4, h, w), bumpy_depth(h, w), K0, C0)
    away = C0.clone()
    away[:3, :3] = C0[:3, :3] @ rot(math.pi, 0, 0)
    for cull in (True, False):
        assert mem.read(K0, away, h, w, cull=cull).hole.all()
    # same orientation, moved forward past every surface: all cells are behind, none may be drawn mirrored
    ahead = C0.clone()
    ahead[:3, 3] += 30 * C0[:3, 2]
    for cull in (True, False):
        r = mem.read(K0, ahead, h, w, cull=cull)
        lat, hole, depth = r.latent, r.hole, r.depth
        assert hole.all() and torch.isinf(depth).all() and not lat.any()


def line_memory(frames=50):
    h, w = 18, 32
    K = intr(115.0, 63.5, 35.5)
    g = torch.Generator().manual_seed(5)
    mem = LatentMemory(8, CELL)
    for f in range(frames):
        c2w = cam(rot(0.0, 0.0, 0.0), (4.0 * f, 0.0, 0.0))
        mem.write(torch.randn(8, h, w, generator=g), plane_depth(K, c2w, h, w, CELL, (0.0, 0.0, 1.0), 10.0), K, c2w)
    return mem, K, h, w


def test_culling_touches_only_visible_cells():
    mem, K, h, w = line_memory()
    assert len(mem) > 10 * h * w
    c2w = cam(rot(0.2, 0.0, 0.0), (100.0, 0.0, 0.0))
    culled = mem.read(K, c2w, h, w)
    touched = culled.touched
    full = mem.read(K, c2w, h, w, cull=False)
    assert full.touched == len(mem)
    assert touched < len(mem) / 5
    assert not culled.hole.all()
    assert all(torch.equal(a, b) for a, b in zip(grid(culled), grid(full)))


def test_mask_writes_only_masked_cells():
    h, w = H_ // CELL, W_ // CELL
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(2)) < 0.3
    latent = torch.randn(6, h, w)
    mem = LatentMemory(6, CELL)
    assert mem.write(latent, bumpy_depth(h, w), K0, C0, mask=mask) == int(mask.sum())
    assert len(mem) == int(mask.sum())
    r = mem.read(K0, C0, h, w)
    lat, hole = r.latent, r.hole
    assert torch.equal(hole, ~mask)
    assert torch.equal(lat[:, mask], latent.half()[:, mask])
    assert not lat[:, ~mask].any()


def test_invalid_depth_not_written():
    depth = torch.full((4, 4), 5.0)
    depth[0, 0], depth[1, 1], depth[2, 2] = float("inf"), 0.0, float("nan")
    mem = LatentMemory(2, CELL)
    assert mem.write(torch.ones(2, 4, 4), depth, intr(8.0, 7.5, 7.5), cam()) == 13


def test_cell_depth_median_and_sky():
    inf = float("inf")
    blocks = [[list(range(1, 17)),                # plain median (lower middle of an even count)
               [50.0] * 6 + [2.0] * 10,           # object edge: stays on the foreground, no 20-ish blend
               [3.0] * 7 + [inf] * 9],            # 9 of 16 are sky
              [[6.0] * 8 + [inf] * 8,             # exactly half are sky: still a surface
               [float("nan")] + [1.0] * 15,
               [0.0] * 2 + [1.0] * 14]]           # depth <= 0 counts as missing
    d = torch.tensor(blocks, dtype=torch.float32).reshape(2, 3, 4, 4).permute(0, 2, 1, 3).reshape(8, 12)
    out = cell_depth(d, 4)
    assert out.shape == (2, 3)
    assert out[0].tolist()[:2] == [8.0, 2.0] and math.isinf(out[0, 2])
    assert out[1].tolist() == [6.0, 1.0, 1.0]
    assert cell_depth(torch.rand(10, 13) + 1, 4).shape == (2, 3)


def test_save_load_round_trip(tmp_path):
    mem, K = random_scene(seed=7)
    path = tmp_path / "memory.safetensors"
    mem.save(path)
    back = LatentMemory.load(path)
    assert (len(back), back.nbytes(), back.channels, back.cell, back.dtype) == \
        (len(mem), mem.nbytes(), mem.channels, mem.cell, mem.dtype)
    c2w = cam(rot(0.1, 0.05, 0.02), (0.4, 0.1, -2.0))
    assert all(torch.equal(a, b) for a, b in zip(grid(mem.read(K, c2w, 12, 16)), grid(back.read(K, c2w, 12, 16))))


def test_load_rejects_other_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError):
        LatentMemory.load(junk)
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError):
        LatentMemory.load(other)


def test_cell_edges_marks_cells_without_one_place_in_3d():
    depth = torch.full((8, 12), 5.0)
    depth[:, 6:] = 5.2            # a gentle slope within 10 %: one surface
    assert not cell_edges(depth, 4).any()
    depth[0:4, 1:3] = 2.0         # a foreground edge inside cell (0, 0)
    depth[4:8, 9] = float("inf")  # sky beside geometry in cell (1, 2)
    ids = torch.zeros(8, 12, dtype=torch.long)
    ids[5, 5] = 3                 # one pixel of a moving object in cell (1, 1)
    assert cell_edges(depth, 4).nonzero().tolist() == [[0, 0], [1, 2]]
    assert cell_edges(depth, 4, ids).nonzero().tolist() == [[0, 0], [1, 1], [1, 2]]
    assert not cell_edges(torch.full((8, 12), float("inf")), 4).any()  # all sky is one place: far away
