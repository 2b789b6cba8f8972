"""Stored cells drawn as small tilted planes: slopes, pixel-precise drawing, cells shared by two banks, source
canvases and their cache, tiled encoder/decoder runs."""
import math

import pytest
import torch
from safetensors.torch import save_file

from backend import models
from backend.channels import Maps
from backend.memory import SPLAT_TENSORS, LatentMemory, SceneMemory, cell_bits, cell_slopes, member_depth
from backend.models.base import FrameNeeds
from backend.models.compact import CANVAS_FRAMES, tiled
from backend.models.patch import PatchModel
from backend.splats import canvas_fill, render_splats
from tests.backend.test_learned import held_out
from tests.backend.test_memory import cam, intr, rot

H, W = 96, 160


def test_cell_slopes_recover_a_plane_and_ignore_edges():
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    depth = 5 + 0.02 * x + 0.03 * y
    depth[8:, 8:] = 1.0 + 0 * x[8:, 8:]          # one cell is a nearer, flat surface
    depth[0:8, 8:12] = 9.0 + 0.05 * x[0:8, 8:12]  # a cell split by a jump into two surfaces
    depth[0:8, 12:16] = 5 + 0.02 * x[0:8, 12:16] + 0.03 * y[0:8, 12:16]
    sx, sy = cell_slopes(depth, 8)
    assert torch.allclose(sx[0, 0], torch.tensor(0.02), atol=1e-5) and torch.allclose(sy[0, 0], torch.tensor(0.03), atol=1e-5)
    assert sx[1, 1] == 0 and sy[1, 1] == 0
    # the split cell: the median of the pairs on either side (lower middle: 0.02 of 0.02 and 0.05; 0 of 0 and
    # 0.03), never the 4-unit jump between the two surfaces
    assert abs(float(sx[0, 1]) - 0.02) < 1e-4 and abs(float(sy[0, 1])) < 1e-5
    sky = torch.full((8, 8), float("inf"))
    assert cell_slopes(sky, 8)[0].item() == 0.0


def test_cell_bits_and_member_depth():
    mask = torch.zeros(8, 16, dtype=torch.bool)
    mask[0, 0] = mask[7, 7] = True
    mask[:, 8:] = True
    bits = cell_bits(mask, 8)
    assert int(bits[0, 0]) == 1 - 2 ** 63  # bit 0 (pixel 0, 0) and bit 63 (pixel 7, 7), the sign bit
    assert int(bits[0, 1]) == -1  # all 64 bits
    depth = torch.full((8, 16), 7.0)
    depth[mask] = 3.0
    d = member_depth(depth, mask, 8)
    assert d.tolist() == [[3.0, 3.0]]
    assert member_depth(depth, torch.zeros_like(mask), 8).isinf().all()


def floor_view(K, c2w, h, w, texture):
    """Ray-cast the floor plane Y = 1 (OpenCV: +Y is down): image, planar depth (inf where missed)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ray_cam = torch.stack([(x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1], torch.ones_like(x)], -1)
    ray = ray_cam @ c2w[:3, :3].T
    t = (1.0 - c2w[1, 3]) / ray[..., 1]
    ok = (ray[..., 1] > 1e-6) & (t < 40)
    P = c2w[:3, 3] + t[..., None] * ray
    image = texture(P[..., 0], P[..., 2])
    depth = torch.where(ok, t, torch.full_like(t, float("inf")))
    return torch.where(ok[None], image, torch.zeros_like(image)).float(), depth


def texture(X, Z):
    return torch.stack([0.5 + 0.3 * torch.sin(2 * math.pi * X / 1.3 + c) * torch.cos(2 * math.pi * Z / 1.7 + 2 * c)
                        for c in (0.0, 1.0, 2.0)])


def draw_floor(slopes):
    """The floor written from camera A (tilted down 20 degrees) and drawn from camera B, a step forward and
    turned: (drawn, covered, ground truth, pixels seen by both)."""
    K = intr(120.0, (W - 1) / 2, (H - 1) / 2)
    A = cam(rot(0.0, -0.35, 0.0), (0.0, 0.0, 0.0))
    B = cam(rot(0.25, -0.3, 0.0), (0.3, 0.1, 1.2))
    model = PatchModel("p", cell=8)  # the trained model's cell size
    img_a, depth_a = floor_view(K, A, H, W, texture)
    truth, depth_b = floor_view(K, B, H, W, texture)
    mem = LatentMemory(model.channels, 8, dtype=torch.float32)
    from backend.memory import cell_depth
    d = cell_depth(depth_a.float(), 8)
    mem.write(model.encode(img_a), torch.where(torch.isfinite(d), d, torch.full_like(d, 1e3)), K, A,
              pixel_depth=depth_a.float() if slopes else None)
    sp = mem.read(K, B, H // 8, W // 8).splats
    drawn, covered, _ = render_splats(model.patches(sp), sp, H, W)
    # pixels of B whose floor point A saw (inside A's image, in front of it)
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1], torch.ones_like(x)], -1) @ B[:3, :3].T
    P = B[:3, 3] + depth_b[..., None] * ray
    pa = (P - A[:3, 3]) @ A[:3, :3]
    u, v = pa[..., 0] / pa[..., 2] * K[0, 0] + K[0, 2], pa[..., 1] / pa[..., 2] * K[1, 1] + K[1, 2]
    both = torch.isfinite(depth_b) & (pa[..., 2] > 0) & (pa[..., 2] < 39) & (u > 2) & (u < W - 3) & (v > 2) & (v < H - 3)
    return drawn, covered, truth, both, depth_b


def psnr_on(a, b, m):
    return 10 * math.log10(1 / ((a - b)[:, m] ** 2).mean().item())


def test_tilted_floor_is_drawn_where_it_is_and_stays_closed():
    drawn, covered, truth, both, depth = draw_floor(slopes=True)
    assert both.float().mean() > 0.4
    # magnified near the bottom, minified far away: every pixel the reference saw is drawn, no cracks
    # (measured 99.91 %: a few pixels near the horizon)
    assert covered[both].float().mean() > 0.998
    # beyond a few metres both the truth and the memory alias the point-sampled texture: compare nearer
    near = both & (depth < 5)
    tilted = psnr_on(drawn, truth, near)
    upright = psnr_on(draw_floor(slopes=False)[0], truth, near)
    # measured: 30.4 dB as tilted planes; 11.7 dB as cards facing the camera that wrote them, which leave
    # cracks where the floor is magnified and overlap where it is foreshortened
    assert tilted >= 28.0 and tilted >= upright + 6.0, (tilted, upright)


def test_cell_on_an_outline_is_kept_by_both_banks():
    """A cell half crate, half wall: drawn at the reference pose it is the reference exactly; once the crate has
    moved away, the wall's copy draws only the wall's pixels, never the crate's."""
    K = intr(60.0, 31.5, 15.5)
    c2w = cam()
    model = PatchModel("p", cell=8)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 32, 64, generator=g)
    ids = torch.zeros(32, 64, dtype=torch.long)
    ids[8:24, 20:36] = 1  # the crate's outline cuts through cells (x = 20 and 36 are not multiples of 8)
    depth = torch.where(ids == 1, torch.full((32, 64), 3.0), torch.full((32, 64), 5.0))
    mem = SceneMemory(model.channels, 8)
    pose = {1: torch.eye(4, dtype=torch.float64)}
    mem.write(model.encode(image), torch.full((4, 8), 5.0), K, c2w, ids=torch.zeros(4, 8, dtype=torch.long),
              poses=pose, maps=Maps(depth=depth, ids=ids))
    r = mem.read(K, c2w, 4, 8, poses=pose, ids=ids[::8, ::8])
    out = model.render(r.latent, r, FrameNeeds(maps=Maps(ids=ids)))
    assert (out - image).abs().max() < 1e-3  # float16 storage: below half a grey level
    away = {1: cam(t=(100.0, 0.0, 0.0))}
    static = torch.zeros_like(ids)
    sp = mem.read(K, c2w, 4, 8, poses=away, ids=static[::8, ::8]).splats
    drawn, covered, _ = render_splats(model.patches(sp), sp, 32, 64, static)
    assert not covered[ids == 1].any()          # where the crate was: nothing drawn, left to the fill
    assert covered[ids == 0].all() and (drawn[:, ids == 0] - image[:, ids == 0]).abs().max() < 1e-3


def seeded_memory():
    """The compact model and a memory holding the held-out room written once from the origin, 4 units deep:
    (model, image, K, memory, pixel depth)."""
    model = models.load("compact")
    x = held_out()
    K = intr(180.0, 127.5, 71.5)
    mem = LatentMemory(model.channels, 8)
    depth = torch.full((144, 256), 4.0)
    mem.write(model.encode(x), torch.full((18, 32), 4.0), K, cam(), pixel_depth=depth)
    return model, x, K, mem, depth


def test_canvas_decodes_do_not_depend_on_the_cache():
    model, x, K, mem, depth = seeded_memory()
    part = torch.zeros(18, 32, dtype=torch.bool)
    part[4:9, 10:20] = True
    mem.write(model.encode(x.flip(-1)), torch.full((18, 32), 3.0), K, cam(rot(0.1), (0.2, 0, 0)), mask=part)
    sp = mem.read(K, cam(rot(0.05), (0.1, 0.0, 0.3)), 18, 32).splats
    assert len(sp.canvases) == 2
    first = model.draw(sp, 144, 256)
    model._canvases.clear()
    again = model.draw(sp, 144, 256)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_tiled_runs_only_around_needed_cells():
    model = models.load("compact")
    x = held_out()
    lat = model.encode(x)
    everything = torch.ones(18, 32, dtype=torch.bool)
    with torch.no_grad():
        full = model.decoder(lat[None])[0]
        assert torch.equal(tiled(model.decoder, lat, everything, 1, 8), full)
        one = torch.zeros(18, 32, dtype=torch.bool)
        one[9, 17] = True
        part = tiled(model.decoder, lat, one, 1, 8)
        # the tile around the cell, seen with two cells of context, is within a grey level of the whole frame's
        assert (part[:, 72:80, 136:144] - full[:, 72:80, 136:144]).abs().max() < 1 / 255
        assert part[:, :64].abs().max() == 0  # tiles nobody needs are not run
        enc = tiled(model.encoder, x, one, 8, 1)
        assert (enc[:, 9, 17] - model.encoder(x[None])[0, :, 9, 17]).abs().max() < 0.02


def test_save_load_keeps_slopes_owners_and_sources(tmp_path):
    K = intr(40.0, 31.5, 23.5)
    mem = LatentMemory(4, 4)
    g = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    own = torch.rand(48, 64, generator=g) < 0.9
    mem.write(torch.randn(4, 12, 16, generator=g), torch.full((12, 16), 4.0), K, cam(), pixel_depth=4 + 0.01 * x,
              pixel_mask=own)
    mem.save(tmp_path / "m.safetensors")
    back = LatentMemory.load(tmp_path / "m.safetensors")
    for f in ("tan", "bits", "src", "side", "grids"):
        assert torch.equal(getattr(mem, f), getattr(back, f))
    assert torch.equal(mem.cameras.nan_to_num(), back.cameras.nan_to_num())  # row 0: no write, NaN
    assert back.grids[1].tolist() == [12, 16]
    view = cam(rot(0.1), (0.2, 0.0, 0.1))
    a, b = mem.read(K, view, 12, 16).splats, back.read(K, view, 12, 16).splats
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("centre", "jac", "depth", "slope", "bits"))


def test_memory_of_an_older_version_is_refused_clearly(tmp_path):
    """A resumed run whose memory was saved before cells had slopes and owners starts afresh (Run.resume_point
    treats the ValueError as 'nothing to resume')."""
    old = {"keys": torch.zeros(0, dtype=torch.int64), "pos": torch.zeros(0, 3), "lat": torch.zeros(0, 4, dtype=torch.float16),
           "foot": torch.zeros(0), "age": torch.zeros(0, dtype=torch.int32)}
    save_file(old, str(tmp_path / "m.safetensors"), metadata={"format": "latent_memory", "version": "2", "channels": "4",
                                                            "cell": "4", "dtype": "float16", "writes": "0"})
    with pytest.raises(ValueError, match="not a latent memory file: unsupported version '2'"):
        LatentMemory.load(tmp_path / "m.safetensors")


def test_outline_cells_of_the_reference_are_stored_as_two_layers():
    from backend.memory import depth_layers
    depth = torch.full((8, 24), 6.0)
    depth[:, 0:4] = 2.0    # cell 0: half pillar, half wall -> two layers
    depth[0:2, 8:9] = 2.0  # cell 1: a sliver of 2 pixels -> stays with the wall
    depth[:, 20:24] = float("inf")  # cell 2: half sky -> two layers (sky kept apart from geometry)
    depth = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, 120.0))
    member = torch.ones_like(depth, dtype=torch.bool)
    near, far = depth_layers(depth, member, 8)
    assert torch.equal(far[:, 0:8], depth[:, 0:8] > 4)
    assert not far[:, 8:16].any() and near[:, 8:16].all()
    assert torch.equal(far[:, 16:24], depth[:, 16:24] > 100)
    assert torch.equal(near | far, member) and not (near & far).any()
    # through the memory: the split cell is two stored cells, at 2 and at 6, each owning its half
    mem = SceneMemory(4, 8)
    K = intr(20.0, 11.5, 3.5)
    mem.write(torch.randn(4, 1, 3), torch.full((1, 3), 6.0), K, cam(), maps=Maps(depth=depth))
    bank = mem.static
    assert len(bank) == 5 and bank.writes == 1  # one write: the layers share the frame's source canvas
    first = {round(float(z), 1): int(b) for z, b, col in zip(bank.pos[:, 2], bank.bits, bank.src[:, 1]) if col == 0}
    left = sum(1 << (y * 8 + x) for y in range(8) for x in range(4))
    assert first[2.0] == left and first[6.0] == left ^ -1  # the pillar's half, and the wall's (the rest)


def test_pixels_between_source_pixels_are_interpolated():
    """A camera moved by half a pixel sees points between the source's pixel centres: a ramp comes back as
    the ramp, not as steps (nearest-pixel sampling shimmered from frame to frame)."""
    K = intr(64.0, 31.5, 15.5)
    x = torch.arange(64.0)
    image = (0.2 + 0.01 * x).expand(3, 32, 64).clone()
    model = PatchModel("p", cell=8)
    mem = LatentMemory(model.channels, 8, dtype=torch.float32)
    mem.write(model.encode(image), torch.full((4, 8), 4.0), K, cam(), pixel_depth=torch.full((32, 64), 4.0))
    half_pixel = 0.5 * 4.0 / 64.0  # world units of half a pixel at depth 4
    sp = mem.read(K, cam(t=(half_pixel, 0.0, 0.0)), 4, 8).splats
    drawn, covered, _ = render_splats(model.patches(sp), sp, 32, 64)
    inner = covered.clone()
    inner[:, :2] = inner[:, -2:] = False
    expected = 0.2 + 0.01 * (x + 0.5)  # the camera moved right: each pixel sees half a pixel further right
    err = (drawn[0] - expected)[inner].abs()
    # inside a cell the ramp is exact; at a cell's last pixel there is no right neighbour to blend with
    # (measured: mean error 0.0006; nearest-pixel sampling is off by 0.005 everywhere)
    assert err.max() < 0.0051 and err.mean() < 0.001, (err.max(), err.mean())


def grow_rings(latent, known):
    """canvas_fill's definition: the stored cells grow one ring at a time, a cell taking the first of its
    neighbours below, above, to the right, to the left that was already filled."""
    lat, have = latent.clone(), known.clone()
    h, w = have.shape
    while not bool(have.all()):
        grown = have.clone()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            for r in range(h):
                for c in range(w):
                    rr, cc = r + dr, c + dc
                    if not grown[r, c] and 0 <= rr < h and 0 <= cc < w and have[rr, cc]:
                        lat[:, r, c] = lat[:, rr, cc]
                        grown[r, c] = True
        have = grown
    return lat


def test_canvas_fill_is_growing_rings():
    g = torch.Generator().manual_seed(3)
    for trial in range(40):
        h, w = (int(x) for x in torch.randint(1, 14, (2,), generator=g))
        known = torch.rand(h, w, generator=g) < float(torch.rand(1, generator=g)) ** 3
        known.view(-1)[int(torch.randint(0, h * w, (1,), generator=g))] = True
        lat = torch.randn(3, h, w, generator=g)
        assert torch.equal(canvas_fill(lat, known), grow_rings(lat, known)), (h, w, known)
    # ties between directions: the cell between two stored cells takes the one below it
    known = torch.zeros(3, 1, dtype=torch.bool)
    known[0, 0] = known[2, 0] = True
    lat = torch.tensor([[[1.0], [0.0], [2.0]]])
    assert canvas_fill(lat, known)[0, 1, 0] == 2.0


def test_canvas_cache_keeps_what_its_bound_allows():
    """The decoded canvases kept never take more than the cells of CANVAS_FRAMES whole frames, whatever the frame
    size; a canvas holding a few cells costs those cells, not a frame."""
    model = models.load("compact")
    K = intr(180.0, 127.5, 71.5)
    mem = LatentMemory(model.channels, 8)
    g = torch.Generator().manual_seed(0)
    few = torch.zeros(18, 32, dtype=torch.bool)
    few[2:4, 3:6] = True
    mem.write(torch.randn(model.channels, 18, 32, generator=g), torch.full((18, 32), 4.0), K, cam())
    for i in range(2 * CANVAS_FRAMES):
        mem.write(torch.randn(model.channels, 18, 32, generator=g), torch.full((18, 32), 4.0 - 0.1 * (i + 1)), K,
                  cam(), mask=few)
    sp = mem.read(K, cam(), 18, 32).splats
    assert len(sp.canvases) == 2 * CANVAS_FRAMES + 1
    cache = model._canvases
    cache.clear()
    model.draw(sp, 144, 256)
    whole = 18 * 32 * (3 * 64 * 2 + 4)  # float16 pixels and the row map of every cell of one frame
    assert cache.limit == CANVAS_FRAMES * whole
    assert len(cache) == 2 * CANVAS_FRAMES + 1 and cache.nbytes < 2 * whole  # one whole canvas, the rest small
    assert cache.nbytes == sum(c.nbytes() for c in cache._hits.values())
    for i in range(3 * CANVAS_FRAMES):  # whole frames, one after the other: the oldest go
        mem2 = LatentMemory(model.channels, 8)
        mem2.write(torch.randn(model.channels, 18, 32, generator=g), torch.full((18, 32), 4.0), K, cam())
        model.draw(mem2.read(K, cam(), 18, 32).splats, 144, 256)
        assert cache.nbytes <= cache.limit
    assert len(cache) == CANVAS_FRAMES


def test_a_frame_drawn_again_after_its_write_is_the_whole_drawing(tmp_path, monkeypatch):
    """After a frame writes its new cells, its read is drawn again only where the new (or replaced) cells reach:
    on every frame of a job with a moving object, exactly the drawing of the whole read."""
    from backend import protocol
    from backend import splats as splats_module
    from backend.models import compact
    from backend.pipeline import Run
    from tests.synth import make_job
    job, _ = protocol.load_job(make_job(str(tmp_path), n=8, segment_length=4, box_xs=[0.12 * i for i in range(8)]))
    run = Run.load(job, str(tmp_path), lambda *a, **k: None)
    redraw, whole = compact.redraw, splats_module.draw_splats
    calls = {"redraw": 0, "whole": 0}

    def counted_whole(*args, **kw):
        calls["whole"] += 1
        return whole(*args, **kw)

    def checked(before, patches, sp, H, W, pixel_ids=None):
        calls["redraw"] += 1
        out = redraw(before, patches, sp, H, W, pixel_ids)
        again = whole(patches, sp, H, W, pixel_ids)
        assert all(torch.equal(x, y) for x, y in zip(out.result(), again.result()))
        return out

    monkeypatch.setattr(splats_module, "draw_splats", counted_whole)
    monkeypatch.setattr(compact, "redraw", checked)
    run.run()
    assert calls["redraw"] > 8 and calls["whole"] < calls["redraw"] - 3  # several frames drawn again in part


def test_drawing_again_follows_replaced_cells_and_their_canvas(monkeypatch):
    """A write that replaces stored cells changes their frame's canvas (its other cells decode anew): the read
    drawn again from the drawing before the write is still exactly the whole read's drawing."""
    from backend import splats as splats_module
    from backend.splats import canvas_pixels, draw_splats, redraw
    model, x, K, mem, depth = seeded_memory()
    view = cam(rot(0.05), (0.1, 0.0, 0.3))
    p1, s1 = canvas_pixels(mem.read(K, view, 18, 32).splats, model.canvas_patches)
    before = draw_splats(p1, s1, 144, 256)
    part = torch.zeros(18, 32, dtype=torch.bool)
    part[5:8, 10:14] = True
    mem.write(model.encode(x.flip(-1)), torch.full((18, 32), 4.0), K, cam(), mask=part, pixel_depth=depth)
    p2, s2 = canvas_pixels(mem.read(K, view, 18, 32).splats, model.canvas_patches)
    ident1 = {(int(c), int(a)): i for i, (c, a) in enumerate(zip(s1.cell, s1.age))}
    shared = [(ident1[(int(c), int(a))], j) for j, (c, a) in enumerate(zip(s2.cell, s2.age)) if (int(c), int(a)) in ident1]
    assert len(shared) > s2.age.numel() // 2  # most cells are the same stored cells ...
    i1, j2 = (torch.tensor(t) for t in zip(*shared))
    assert (p1[i1] != p2[j2]).any()  # ... and some of them decode differently now
    whole = []
    monkeypatch.setattr(splats_module, "draw_splats", lambda *a: whole.append(1) or draw_splats(*a))
    again = redraw(before, p2, s2, 144, 256)
    assert not whole  # drawn again in part, not as a whole
    assert all(torch.equal(a, b) for a, b in zip(again.result(), draw_splats(p2, s2, 144, 256).result()))
    # cells gone from a read (without others in their place): their pixels are resolved again too
    keep = torch.ones(s1.age.numel(), dtype=torch.bool)
    keep[::7] = False
    fewer = s1._replace(**{f: getattr(s1, f)[keep] for f in SPLAT_TENSORS if getattr(s1, f) is not None})
    again = redraw(before, p1[keep], fewer, 144, 256)
    assert not whole
    assert all(torch.equal(a, b) for a, b in zip(again.result(), draw_splats(p1[keep], fewer, 144, 256).result()))
