"""Chart completion (backend.models.synth.complete): invented texels look like the place.

Stochastic textures (value noise, voronoi) are completed without a repeat they lack; periodic ones (checker,
bricks) continue in phase; structured stochastic ones (bricks laid at random offsets, cobbles) keep their units
whole; the boundary of a hole does not show; a surface nobody saw is synthesised from an exemplar, not pasted;
guidance steers what goes where. Textures are made here in numpy with fixed seeds."""
import numpy as np
import pytest
import torch

from backend.models.synth.complete import KEY, _NONE, _Pairs, _side_cut, _smooth_seams, complete, verified_repeat
from tools.metrics import detail_ratio, gaussian_blur, patches, psnr, sliced_wasserstein

SIZE = 128


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The charts here are small: on a shared 2-core machine a second intra-op thread mostly waits for the other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- textures [H, W, 3] in 0..1 ---------------------------------------------------------------------------------
def _smooth_grid(rng, h, w, cells):
    """Value noise: random values on a (cells + 2)^2 grid, bicubic-smooth (smoothstep) interpolated at a random
    phase."""
    g = rng.random((cells + 3, cells + 3))
    oy, ox = rng.random(2)
    y = (np.arange(h) + 0.5) / h * cells + oy
    x = (np.arange(w) + 0.5) / w * cells + ox
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    ty, tx = y - y0, x - x0
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    a = g[y0][:, x0] * (1 - tx) + g[y0][:, x0 + 1] * tx
    b = g[y0 + 1][:, x0] * (1 - tx) + g[y0 + 1][:, x0 + 1] * tx
    return a * (1 - ty)[:, None] + b * ty[:, None]


def noise_texture(seed, h=SIZE, w=SIZE):
    """fBm of value noise: 5 octaves, the coarsest with 32-texel cells, each octave half the cell and 0.55 the
    amplitude of the one before, mapped between two colours."""
    rng = np.random.default_rng(seed)
    v = sum(0.55 ** o * _smooth_grid(rng, h, w, max(2, (w // 32) * 2 ** o)) for o in range(5))
    v = (v - v.min()) / (v.max() - v.min())
    lo, hi = np.array([0.25, 0.18, 0.1]), np.array([0.85, 0.75, 0.55])
    return (lo + (hi - lo) * v[..., None]).astype(np.float32)


def voronoi_texture(seed, h=SIZE, w=SIZE, cell=14.0, border=1.5):
    """Cells around random points (dart throwing: no two closer than 0.6 cell) with random colours and dark
    borders."""
    rng = np.random.default_rng(seed)
    n = int(h * w / cell ** 2)
    pts = []
    while len(pts) < n:
        c = rng.random(2) * [h, w]
        if all((c[0] - y) ** 2 + (c[1] - x) ** 2 >= (0.6 * cell) ** 2 for y, x in pts):
            pts.append((c[0], c[1]))
    pts = np.array(pts)
    cols = rng.random((n, 3)) * 0.7 + 0.25
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    order = np.argsort(d, -1)[..., :2]
    d1 = np.sqrt(np.take_along_axis(d, order[..., :1], -1)[..., 0])
    d2 = np.sqrt(np.take_along_axis(d, order[..., 1:2], -1)[..., 0])
    img = cols[order[..., 0]]
    # distance to the cell edge ~ (d2^2 - d1^2) / (2 |p2 - p1|)
    gap = np.linalg.norm(pts[order[..., 1]] - pts[order[..., 0]], axis=-1)
    edge = np.clip((d2 ** 2 - d1 ** 2) / (2 * gap) / border, 0, 1)[..., None]
    return (img * (0.15 + 0.85 * edge)).astype(np.float32)


def random_phase_tiling(seed, h=SIZE, w=SIZE, tile=32):
    """One noise tile repeated, each copy rolled by a random phase: repeats inside a tile, not across tiles."""
    rng = np.random.default_rng(seed)
    t = noise_texture(seed, tile, tile)
    out = np.zeros((h, w, 3), np.float32)
    for by in range(0, h, tile):
        for bx in range(0, w, tile):
            out[by:by + tile, bx:bx + tile] = np.roll(t, tuple(rng.integers(tile, size=2)), (0, 1))[:h - by, :w - bx]
    return out


def checker_texture(h=SIZE, w=SIZE, square=12, phase=(3, 5)):
    yy, xx = np.mgrid[0:h, 0:w]
    on = (((yy + phase[0]) // square + (xx + phase[1]) // square) % 2).astype(bool)
    a, b = np.array([0.85, 0.82, 0.75]), np.array([0.2, 0.25, 0.35])
    return np.where(on[..., None], a, b).astype(np.float32)


def brick_texture(h=SIZE, w=SIZE, bw=24, bh=12, mortar=2):
    """Running bond: courses bh high, bricks bw long, every other course shifted by half a brick; a periodic
    shading inside each brick."""
    yy, xx = np.mgrid[0:h, 0:w]
    course = yy // bh
    xs = xx + (course % 2) * (bw // 2)
    u, v = xs % bw, yy % bh
    is_mortar = (u < mortar) | (v < mortar)
    brick = np.array([0.62, 0.28, 0.2]) * (0.85 + 0.15 * np.sin(np.pi * u / bw))[..., None]
    return np.where(is_mortar[..., None], np.array([0.78, 0.76, 0.7]), brick).astype(np.float32)


def random_bricks(seed, h=SIZE, w=SIZE, bh=12, lo=16, hi=34, mortar=2):
    """Courses bh high of bricks of random lengths (each course at its own offset), each brick its own colour and a
    shading along it, grey mortar, a little noise: no repeat, but units that must stay whole."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3))
    for y0 in range(0, h, bh):
        x = -int(rng.integers(0, hi))
        while x < w:
            n = int(rng.integers(lo, hi))
            col = np.array([0.62, 0.28, 0.2]) * (0.75 + 0.4 * rng.random()) + rng.normal(0, 0.03, 3)
            a, b = max(x, 0), min(x + n, w)
            if b > a:
                u = (np.arange(a, b) - x) / n
                out[y0:y0 + bh, a:b] = col * (0.9 + 0.1 * np.sin(np.pi * u))[None, :, None]
                if x >= 0:
                    out[y0:y0 + bh, a:min(a + mortar, b)] = [0.78, 0.76, 0.7]
            x += n
        out[y0:y0 + mortar] = [0.78, 0.76, 0.7]
    out += rng.normal(0, 0.015, out.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def cobbles(seed, h=SIZE, w=SIZE, cell=18.0):
    """Rounded stones: voronoi cells (dart throwing, no two closer than 0.7 cell) with a domed shading and dark gaps,
    grey-brown colours, a fine noise."""
    rng = np.random.default_rng(seed)
    n = int(h * w / cell ** 2)
    pts = []
    while len(pts) < n:
        c = rng.random(2) * [h, w]
        if all((c[0] - y) ** 2 + (c[1] - x) ** 2 >= (0.7 * cell) ** 2 for y, x in pts):
            pts.append((c[0], c[1]))
    pts = np.array(pts)
    cols = (rng.random((n, 1)) * 0.35 + 0.4) * np.array([1.0, 0.93, 0.82]) + rng.normal(0, 0.03, (n, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    order = np.argsort(d, -1)[..., :2]
    d1 = np.sqrt(np.take_along_axis(d, order[..., :1], -1)[..., 0])
    d2 = np.sqrt(np.take_along_axis(d, order[..., 1:2], -1)[..., 0])
    gap = np.linalg.norm(pts[order[..., 1]] - pts[order[..., 0]], axis=-1)
    dome = np.sqrt(np.clip((d2 ** 2 - d1 ** 2) / (2 * gap) / 4.0, 0, 1))
    img = cols[order[..., 0]] * (0.25 + 0.75 * dome)[..., None] + rng.normal(0, 0.02, (h, w, 1))
    return np.clip(img, 0, 1).astype(np.float32)


_TEXTURES = {}


def texture(make, seed, n):
    """make(seed, n, n), made once per test session (the voronoi and cobble makers take a second or two)."""
    key = (make.__name__, seed, n)
    if key not in _TEXTURES:
        _TEXTURES[key] = make(seed, n, n)
    return _TEXTURES[key]


# -- measures -----------------------------------------------------------------------------------------------------
def _down(img, mask, s):
    """s x s block means of the image; a block is in the mask when all its texels are."""
    if s == 1:
        return img, mask
    H, W = img.shape[0] // s * s, img.shape[1] // s * s
    a = img[:H, :W].reshape(H // s, s, W // s, s, 3).mean((1, 3))
    m = mask[:H, :W].reshape(H // s, s, W // s, s).all((1, 3))
    return a, m


def texture_swd(img, ref, mask, scale, limit=4096):
    """Texture sliced Wasserstein distance (x100, 128 fixed directions) between the 7x7 patches of img and of ref
    centred in the mask, each patch's mean colour removed, on the scale x scale averaged images."""
    a, m = _down(np.asarray(img, np.float64), mask, scale)
    b, _ = _down(np.asarray(ref, np.float64), mask, scale)
    m = m.copy()
    m[:3], m[-3:], m[:, :3], m[:, -3:] = False, False, False, False
    v, u = np.nonzero(m)
    if len(v) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(v), limit, replace=False))
        v, u = v[keep], u[keep]
    return sliced_wasserstein(patches(a, v, u, remove_mean=True), patches(b, v, u, remove_mean=True))


def swd3(img, ref, mask):
    return [texture_swd(img, ref, mask, s) for s in (1, 2, 4)]


def outline_step(img, truth, mask):
    """Mean colour step between each seen texel and its neighbours in the mask, over the same in the truth: about 1
    where the boundary of the hole does not show, well above where the invented content meets the seen along it
    without continuing it (a straight seam along the outline)."""
    def steps(x):
        out = []
        for axis in (0, 1):
            for s in (slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1)):
                sa = (slice(None), s[0]) if axis else (s[0], slice(None))
                sb = (slice(None), s[1]) if axis else (s[1], slice(None))
                out.append(np.linalg.norm(x[sa] - x[sb], axis=-1)[~mask[sa] & mask[sb]])
        return np.concatenate(out).mean()
    return steps(np.asarray(img, np.float64)) / steps(np.asarray(truth, np.float64))


def to_t(img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()


def to_np(t):
    return t.permute(1, 2, 0).numpy()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def hole(n=256):
    q = n // 4
    m = np.zeros((n, n), bool)
    m[q:3 * q, q:3 * q] = True
    return m


def copied_blocks(out, src, block=16, tol=1e-3):
    """How many block x block squares of `out` equal (within tol) a square of `src`. Candidate offsets come from
    texels whose 2x2 neighbourhoods match exactly after quantisation; each is then checked texel by texel."""
    def keys(a):
        q = np.round(np.asarray(a, np.float64) * 64).astype(np.int64)
        w = np.random.default_rng(7).integers(1, 1 << 20, size=12)
        nb = np.concatenate([q[:-1, :-1], q[1:, :-1], q[:-1, 1:], q[1:, 1:]], -1)  # [h - 1, w - 1, 12]
        return nb @ w
    ko, ks = keys(out), keys(src)
    order = np.argsort(ks, axis=None)
    sk = ks.flatten()[order]
    fo = ko.flatten()
    lo, hi = np.searchsorted(sk, fo, "left"), np.searchsorted(sk, fo, "right")
    offsets = {}
    Wo, Ws = ko.shape[1], ks.shape[1]
    for i in np.nonzero(hi > lo)[0]:
        y, x = divmod(i, Wo)
        for j in order[lo[i]:min(hi[i], lo[i] + 4)]:
            sy, sx = divmod(j, Ws)
            offsets[(sy - y, sx - x)] = offsets.get((sy - y, sx - x), 0) + 1
    H, W = out.shape[:2]
    h, w = src.shape[:2]
    found = 0
    for (dy, dx), n in offsets.items():
        if n < block * block // 2:
            continue
        y0, y1, x0, x1 = max(0, -dy), min(H, h - dy), max(0, -dx), min(W, w - dx)
        if y1 - y0 < block or x1 - x0 < block:
            continue
        eq = (np.abs(out[y0:y1, x0:x1] - src[y0 + dy:y1 + dy, x0 + dx:x1 + dx]).max(-1) < tol).astype(np.int64)
        S = np.pad(eq.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        box = S[block:, block:] - S[:-block, block:] - S[block:, :-block] + S[:-block, :-block]
        found += int((box == block * block).sum())
    return found


# -- 1. a hole in a stochastic texture ------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [noise_texture, voronoi_texture], ids=["noise", "voronoi"])
def test_stochastic_hole_is_completed_without_a_false_repeat(make):
    N = 256
    q = N // 4
    H = hole(N)
    truth, other = texture(make, 1, N), texture(make, 2, N)
    seen = torch.from_numpy(~H)
    out = to_np(complete(to_t(truth) * seen, seen, torch.from_numpy(H), generator=gen()))
    ours = swd3(out, truth, H)
    two = swd3(other, truth, H)  # another true sample of the texture, in the same place
    # what the product must not do: a forced repeat (a known 16-texel tile, tiled over the hole) and a blur
    tiled = truth.copy()
    tiled[q:3 * q, q:3 * q] = np.tile(truth[q - 16:q, q - 16:q], (2 * q // 16, 2 * q // 16, 1))
    blur = truth.copy()
    blur[H] = gaussian_blur(truth, 2.0)[H]
    for s, a, b in zip((1, 2, 4), ours, two):
        assert a <= 2.5 * b, f"scale 1/{s}: texture SWD {a:.2f} vs two true samples {b:.2f}"
    worst = max(a / b for a, b in zip(ours, two))
    assert worst < 0.5 * max(t / b for t, b in zip(swd3(tiled, truth, H), two))  # a repeat shows at some scale
    assert ours[0] < 0.5 * texture_swd(blur, truth, H, 1)  # a blur shows at full resolution
    assert 0.6 <= detail_ratio(out, truth, H) <= 1.6


# -- 2. a hole in a periodic texture -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [checker_texture, brick_texture], ids=["checker", "bricks"])
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_periodic_hole_continues_in_phase(make, noise):
    N = 128
    truth = make(N, N)
    seen = truth + np.random.default_rng(3).normal(0, noise, truth.shape).astype(np.float32)
    H = np.zeros((N, N), bool)
    H[30:90, 40:128] = True  # reaches the chart's edge
    out = to_np(complete(to_t(seen) * torch.from_numpy(~H), torch.from_numpy(~H), torch.from_numpy(H), generator=gen()))
    assert psnr(out, truth, H) >= 30.0


# -- 3. the repeat is verified, never forced -----------------------------------------------------------------------
def _ring(n=128):
    return torch.from_numpy(~hole(n))


def test_verified_repeat_finds_the_period():
    rng = np.random.default_rng(4)
    for tex, lattice in ((checker_texture(), {(12, 12), (12, -12), (0, 24), (24, 0)}),
                         (brick_texture(), {(12, 12), (12, -12), (0, 24)})):
        for sigma in (0.0, 0.03):
            noisy = tex + rng.normal(0, sigma, tex.shape).astype(np.float32)
            got = verified_repeat(to_t(noisy), _ring())
            assert got is not None and (tuple(got) in lattice or (-got[0], -got[1]) in lattice), (got, sigma)


@pytest.mark.parametrize("tex", [voronoi_texture(3), noise_texture(3), random_phase_tiling(3)],
                         ids=["voronoi", "noise", "random-phase tiling"])
def test_verified_repeat_is_none_without_a_repeat(tex):
    assert verified_repeat(to_t(tex), _ring()) is None


# -- 4. a surface nobody saw ---------------------------------------------------------------------------------------
def test_unseen_surface_is_synthesised_not_pasted():
    N = 128
    src, other = voronoi_texture(5, N, N), voronoi_texture(6, N, N)
    ones = torch.ones(N, N, dtype=torch.bool)
    out = to_np(complete(torch.zeros(3, N, N), ~ones, ones, sources=[(to_t(src), ones, None)], generator=gen()))
    pasted = src.copy()
    pasted[20:60, 30:70] = src[70:110, 10:50]
    assert copied_blocks(pasted, src) > 0  # the check does see a pasted block
    assert copied_blocks(out, src) == 0
    everywhere = np.ones((N, N), bool)
    for s, a, b in zip((1, 2, 4), swd3(out, src, everywhere), swd3(other, src, everywhere)):
        assert a <= 2.5 * b, f"scale 1/{s}: texture SWD {a:.2f} vs two true samples {b:.2f}"


# -- 5. determinism, seen texels kept, outside never read ------------------------------------------------------------
def test_deterministic_and_seen_texels_unchanged():
    N = 96
    truth = voronoi_texture(8, N, N)
    yy, xx = np.mgrid[0:N, 0:N]
    surface = (yy - 48) ** 2 + (xx - 48) ** 2 < 44 ** 2
    H = surface & ((yy - 40) ** 2 + (xx - 55) ** 2 < 22 ** 2)
    known = surface & ~H
    image = np.where(known[..., None], truth, 0.0).astype(np.float32)
    image[~surface] = 7.0  # outside the surface: never read, never written
    args = (to_t(image), torch.from_numpy(known), torch.from_numpy(H))
    a = complete(*args, generator=gen(11))
    b = complete(*args, generator=gen(11))
    assert torch.equal(a, b)
    out = to_np(a)
    assert np.array_equal(out[known], image[known])
    assert np.all(out[~surface] == 7.0)
    assert out[H].max() <= 1.0 and out[H].min() >= 0.0  # nothing of the outside leaked in


# -- 6. structured stochastic textures: units stay whole, the hole's outline does not show ----------------------------
def test_hole_outline_does_not_show():
    """Voronoi cells cut by the outline of a hole go on into it (or meet a border): the colour steps across the
    outline are about those of the truth there, not a straight seam (about 2.9 times the truth's where the invented
    cells start afresh at the outline)."""
    N = 256
    H = hole(N)
    truth = texture(voronoi_texture, 1, N)
    seen = torch.from_numpy(~H)
    out = to_np(complete(to_t(truth) * seen, seen, torch.from_numpy(H), generator=gen()))
    assert outline_step(out, truth, H) <= 2.2


@pytest.mark.parametrize("make", [random_bricks, cobbles], ids=["random bricks", "cobbles"])
def test_structured_hole_is_completed_like_the_texture(make):
    N = 256
    H = hole(N)
    truth, other = texture(make, 1, N), texture(make, 2, N)
    seen = torch.from_numpy(~H)
    out = to_np(complete(to_t(truth) * seen, seen, torch.from_numpy(H), generator=gen()))
    for s, a, b in zip((1, 2, 4), swd3(out, truth, H), swd3(other, truth, H)):
        assert a <= 2.0 * b, f"scale 1/{s}: texture SWD {a:.2f} vs two true samples {b:.2f}"
    assert 0.7 <= detail_ratio(out, truth, H) <= 1.4
    assert outline_step(out, truth, H) <= 2.0


@pytest.mark.parametrize("make", [random_bricks, cobbles, noise_texture], ids=["random bricks", "cobbles", "noise"])
def test_unseen_structured_surface_is_synthesised_not_pasted(make):
    N = 128
    src, other = texture(make, 5, N), texture(make, 6, N)
    ones = torch.ones(N, N, dtype=torch.bool)
    out = to_np(complete(torch.zeros(3, N, N), ~ones, ones, sources=[(to_t(src), ones, None)], generator=gen()))
    assert copied_blocks(out, src) == 0
    everywhere = np.ones((N, N), bool)
    for s, a, b in zip((1, 2, 4), swd3(out, src, everywhere), swd3(other, src, everywhere)):
        assert a <= 2.5 * b, f"scale 1/{s}: texture SWD {a:.2f} vs two true samples {b:.2f}"


def test_cut_runs_where_the_copies_agree():
    """Old and new content differ everywhere but on a winding path: the minimum-error cut takes that path, also where
    it steps sideways between rows."""
    h, w = 24, 12
    rng = np.random.default_rng(0)
    old = rng.random((3, h, w)).astype(np.float32)
    new = rng.random((3, h, w)).astype(np.float32)
    path = (5 + 3 * np.sin(np.arange(h) / 3)).round().astype(int)  # per row: the first column of the new content
    for i, j in enumerate(path):
        new[:, i, j - 1:j + 1] = old[:, i, j - 1:j + 1]  # the two texels either side of the cut agree
    state = np.full((h, w), 2, np.int8)  # invented before...
    state[:, -2:] = 3                    # ... and still to invent
    pairs = _Pairs(torch.from_numpy(old), torch.ones(h, w, dtype=torch.bool), gen())
    mask, cost = _side_cut(old, new, state, np.zeros((h, w), np.float32), w - 2, pairs)
    assert np.array_equal((~mask).sum(1), path) and cost < 1e-6


def test_seam_steps_are_smoothed_out():
    """A smooth ramp copied from two places meets with a step; the seam smoothing leaves the ramp's own slope there,
    and the seen texels as they are."""
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] / n
    canvas = torch.from_numpy(np.stack([xx, yy, 0.5 + 0 * xx]).astype(np.float32))
    H = W = 32
    lab = torch.full((H, W), 0 * KEY + 5, dtype=torch.long)
    lab[:, 16:] = 3 * KEY + 9  # another copy, 3 rows down and 4 columns on
    out = torch.stack([canvas[:, y + 3 * (x >= 16), x + 5 + 4 * (x >= 16)] for y in range(H) for x in range(W)], 1)
    out = out.view(3, H, W)
    known = torch.zeros(H, W, dtype=torch.bool)
    known[:, :2] = True
    lab[known] = _NONE
    res = _smooth_seams(out, lab, known, ~known, canvas, torch.ones(n, n, dtype=torch.bool), float("inf"))
    before = (out[:2, :, 16] - out[:2, :, 15]).abs().max()
    after = (res[:2, :, 16] - res[:2, :, 15] - torch.tensor([1 / n, 0.0])[:, None]).abs().max()
    assert before > 0.05 and after < 0.01
    assert torch.equal(res[:, known], out[:, known])


# -- 7. guidance ---------------------------------------------------------------------------------------------------
PALETTE = np.array([[0.8, 0.3, 0.25], [0.3, 0.7, 0.35], [0.25, 0.35, 0.8], [0.85, 0.8, 0.3]], np.float32)


def banded_stripes(height, seed, n=96):
    """Vertical stripes of random widths whose colour is a function of the height guide (four bands)."""
    rng = np.random.default_rng(seed)
    edges = np.cumsum(rng.integers(2, 7, n))
    stripe = (np.searchsorted(edges, np.arange(n), side="right") % 2).astype(np.float32)
    band = np.minimum((height * 4).astype(int), 3)
    col = PALETTE[band][:, None, :] * (0.7 + 0.3 * stripe)[None, :, None]
    return (col * (0.9 + 0.2 * noise_texture(seed, n, n)[..., :1])).astype(np.float32)


def test_guide_steers_the_invented_texture():
    n = 96
    ys = np.arange(n) / (n - 1)
    h_src, h_tgt = ys, 1 - np.abs(2 * ys - 1)  # the exemplar's height runs up; the target's up, then down
    src, truth = banded_stripes(h_src, 1, n), banded_stripes(h_tgt, 2, n)
    weight = 2.0
    g_src = torch.from_numpy(np.broadcast_to(h_src[:, None] * weight, (n, n)).astype(np.float32))[None]
    g_tgt = torch.from_numpy(np.broadcast_to(h_tgt[:, None] * weight, (n, n)).astype(np.float32))[None]
    ones = torch.ones(n, n, dtype=torch.bool)

    def layout(img, b=8):  # the colour layout: 8 x 8 block means (stripes have no phase to keep)
        return img.reshape(n // b, b, n // b, b, 3).mean((1, 3))
    guided = to_np(complete(torch.zeros(3, n, n), ~ones, ones, guide=g_tgt, sources=[(to_t(src), ones, g_src)],
                            generator=gen()))
    unguided = to_np(complete(torch.zeros(3, n, n), ~ones, ones, sources=[(to_t(src), ones, None)], generator=gen()))
    p_guided, p_unguided = psnr(layout(guided), layout(truth)), psnr(layout(unguided), layout(truth))
    assert p_guided >= 24.0 and p_guided >= p_unguided + 8.0, (p_guided, p_unguided)
