"""Latent spatial memory: latent cells lifted into world space, fused by voxel, read back through a z-buffer.

Cameras are OpenCV (+Z forward, +Y down), K is in pixels of the full image, depth is planar camera z.
Everything a read or write decides is exact or uses order-independent reductions (amin, stable sorts), so
results are bit-identical across runs and thread counts. No bpy here: this runs in the backend process.
"""
import hashlib
import itertools
import json
import os
from collections import namedtuple
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from .files import atomic_write

FORMAT = "latent_memory"
VERSION = "4"
FIELDS = ("keys", "pos", "lat", "foot", "age", "src", "tan", "bits", "side")
NEAR = 1e-4          # cells closer than this to the camera plane are dropped (and behind it)
LEVEL_OFFSET = 32    # levels -32..31 -> voxels from 2**-32 to 2**31 world units
AXIS_HALF = 1 << 18  # voxel coordinates must lie in [-2**18, 2**18) per axis
BLOCK_BITS = 4       # a block is 16 x 16 x 16 voxels of one level
CULL_MARGIN = 1.0    # latent cells of slack around the frustum so float error never culls a visible cell
SPLAT_GROW = 1.3     # splats are a little wider than a cell so magnified surfaces stay closed (< 2 keeps
                     # a read at the writing camera exact: each cell still covers only its own centre)
MAX_SPLAT = 3        # at most 3 x 3 target cells per stored cell, which bounds the cost of a read
SURFACE_TOL = 0.03   # cells within 3 % of the nearest depth are the same surface: the oldest one wins
SLOPE_JUMP = 0.2     # neighbouring pixels further apart in depth than this (relative) are on different surfaces
VISIBLE_FACTOR = 3.0   # a cell within this factor of the nearest depth in a target cell is drawn (near the horizon
                     # one target cell spans a long stretch of floor); the per-pixel z-buffer decides the rest
SPLAT_REACH = 3    # a splat covers at most 3 cells' width of target pixels each way (bounds a read's cost)
FOOTPRINT_PART = 1 << 20  # box pixels of the splats whose footprints are worked out together
SPLAT_MARGIN = 0.25  # source pixels a splat reaches past its cell: closes cracks between neighbouring planes, but
                     # never reaches a neighbour's pixel centre when read back at the writing camera
OUTLINE = 1          # still-world pixels along a moving object's outline left out of the memory (the codec mixes them)
FIT_PIXELS = 6       # a cell placed by its pixels' surface addresses needs this many of them (an affine fit)
FIT_RESIDUAL = 0.5   # ... and the still world's, its pixels within this many of its longer pixel steps of that
                     # plane (RMS; perspective bends a grazing floor's rows off a linear fit, a little)
FIT_STRETCH = 3.0    # ... its shorter pixel step at most this many times what a pixel spans facing the camera
CREASE = 0.8         # pixels of one cell whose normals agree less than this (cos ~37 degrees) lie on two faces
ADDRESS_REACH = 0.25  # source pixels past its cell's edge that a pixel's address may fall and still read the cell
ADDRESS_TOL = 1.5    # a pixel's address off a stored cell's plane by more than this many of its pixels is elsewhere
PLANE_SLACK = 0.25   # ... plus this share of its distance from the cell's centre (the plane's tilt is an estimate)
DEPTH_MATCH = 0.1    # a still cell is drawn on a pixel only where its surface lies within this share of the pixel's depth
SAME_SIDE = 0.25     # a pixel reads a cell only when their normals agree at least this much (cos ~75 degrees): the
                     # other side of a thin surface (a flag, a door) is another surface
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


# A stored frame's latent grid, as far as the memory still holds it: `latent` [C, h, w] (zeros where `known`
# [h, w] is False), the splats it serves (`members`, positions in the read's splat list) and where each sits
# in this canvas (`source`: rows, cols). `key` names the canvas's content, so a decode of it can be reused.
Canvas = namedtuple("Canvas", "latent known members source key")

# Every cell a read sees, as a small plane in the target image: `lat` [N, C] its latent, `centre` [N, 2] the
# target pixel (x, y) of its centre, `jac` [N, 2, 2] target pixels per source pixel (columns: along the source
# row, along the source column), `depth` [N] its depth there and `slope` [N, 2] depth per source pixel,
# `age` [N] its write number, `bits` [N] which of its pixels it owns (bit y * cell + x), `bank` [N] the object
# id of its bank (0 = static world), `cell` [N] its key in its bank (with bank and age it names the stored cell),
# `canvases` its source frames (Canvas). A cell read by surface address is not drawn through its plane (its
# jac is zero): `pairs` (Pairs, or None) says which target pixels show it and where in it; `target` [H * W] (or
# None) the frame's own depth at each pixel, off which no still cell is drawn.
Splats = namedtuple("Splats", "lat centre jac depth slope age bits bank cell canvases pairs target",
                    defaults=(None, None))
SPLAT_TENSORS = Splats._fields[:9]  # the per-splat tensors

# Target pixels that read a cell by their surface address: `pixel` [M] (y * W + x), `splat` [M] its position in
# the read's splats, `a`, `b` [M] where the pixel's address falls in the cell (source pixels from its centre,
# along its row and column), `depth` [M] the pixel's own depth.
Pairs = namedtuple("Pairs", "pixel splat a b depth")
_TOKENS = itertools.count()


@dataclass
class BankRead:
    """One bank seen from a camera. `latent` [C, h, w] (zeros in holes), `hole` [h, w] bool, `depth` [h, w]
    (inf in holes), `geometry` [3, h, w]: where each returned cell really lands (u, v in latent cells, not
    snapped, and its size; nan in holes), `splats` every cell the camera sees as a small plane (Splats, bank 0,
    members counted from 0; None when not asked for), `touched` how many stored cells the read looked at, `cells`
    the stored cells of the splats (their rows in the bank; None without splats)."""
    latent: torch.Tensor
    hole: torch.Tensor
    depth: torch.Tensor
    geometry: Optional[torch.Tensor]
    splats: Optional[Splats]
    touched: int
    cells: Optional[torch.Tensor] = None


@dataclass
class MemoryRead:
    """What a memory holds as seen from a camera, on the latent grid and as splats. `latent` [C, h, w], `hole`
    [h, w] (True = nothing known), `depth` [h, w] (inf in holes); `geometry` [3, h, w] (see BankRead) and
    `splats` (every bank's cells, each tagged with its bank's object id) where the memory keeps them, else None."""
    latent: torch.Tensor
    hole: torch.Tensor
    depth: torch.Tensor
    geometry: Optional[torch.Tensor] = None
    splats: Optional[Splats] = None


class Memory(Protocol):
    """What the segment loop needs of a memory. SceneMemory is the product's; the bench plugs in others."""

    def write(self, latent, depth, K, cam_to_world, mask=None, ids=None, poses=None, maps=None) -> int: ...

    def read(self, K, cam_to_world, h, w, poses=None, ids=None, splats=True, maps=None) -> MemoryRead: ...

    def begin_segment(self) -> None: ...

    def save(self, path) -> None: ...

    @classmethod
    def load(cls, path, device="cpu", object_ids=()) -> "Memory": ...

    def nbytes(self) -> int: ...

    def __len__(self) -> int: ...


def per_cell(x, cell):
    """[H, W] -> [H//cell, W//cell, cell*cell]: each cell's pixels, row by row (pixel y * cell + x)."""
    h, w = x.shape[0] // cell, x.shape[1] // cell
    return x[:h * cell, :w * cell].reshape(h, cell, w, cell).permute(0, 2, 1, 3).reshape(h, w, -1)


def cell_depth(depth, cell, ids=None):
    """[H, W] planar depth -> [H//cell, W//cell] per-cell median of the valid (finite, > 0) pixels.

    A median keeps a cell on one surface where bilinear downsampling would invent a depth between a
    foreground edge and the background. Even counts take the lower middle value (torch.nanmedian).
    A cell is inf when more than half its pixels are invalid.

    With `ids` ([H, W] object ids, 0 = static world) each cell belongs to its most common id (ties: the
    smaller id), its depth is the median over that id's pixels only, and (depth, cell ids) is returned.
    """
    d = per_cell(depth.float(), cell)
    member = torch.ones_like(d, dtype=torch.bool)
    if ids is not None:
        px = per_cell(ids.long(), cell)
        present = torch.unique(px)
        counts = torch.stack([(px == k).sum(-1) for k in present.tolist()], -1)
        owner = present[counts.argmax(-1)]  # argmax takes the first maximum: the smaller id
        member = px == owner[..., None]
    valid = torch.isfinite(d) & (d > 0) & member
    med = torch.where(valid, d, torch.full_like(d, float("nan"))).nanmedian(dim=-1).values
    enough = 2 * valid.sum(-1) >= member.sum(-1)
    out = torch.where(enough, med, torch.full_like(med, float("inf")))
    return out if ids is None else (out, owner)


def cell_bits(mask, cell):
    """[H, W] bool -> [h, w] int64: bit y * cell + x set where the cell's pixel (x, y) is in the mask. A cell
    of more than 64 pixels owns them all (-1)."""
    m = per_cell(mask, cell).long()
    if cell * cell > 64:
        return torch.full(m.shape[:2], -1, dtype=torch.int64, device=mask.device)
    # distinct powers of two: their sum is their bitwise or (bit 63 wraps to the sign bit, as intended)
    return (m << torch.arange(cell * cell, device=mask.device)).sum(-1)


def member_depth(depth, member, cell):
    """[H, W] depth and pixel membership -> [h, w] median depth of each cell's valid member pixels (inf where
    it has none): where a cell is shared by two banks, each stores it at its own surface's depth."""
    d = per_cell(torch.where(member, depth.float(), torch.full_like(depth.float(), float("nan"))), cell)
    d = torch.where(torch.isfinite(d) & (d > 0), d, torch.full_like(d, float("nan")))
    return torch.nan_to_num(d.nanmedian(dim=-1).values, nan=float("inf"))


def depth_layers(depth, member, cell, spread=0.3, min_pixels=16):
    """Split each cell's `member` pixels into a near and a far layer where their depths lie more than `spread`
    apart (a pillar's outline against the wall, geometry against sky), so that each layer can be stored at
    its own depth and owning only its own pixels: from another view the wall's pixels stay on the wall
    instead of riding along with the pillar. Returns (near, far) pixel masks; far is empty where no cell
    splits."""
    h, w = depth.shape[0] // cell, depth.shape[1] // cell
    d = per_cell(depth.float(), cell)
    m = per_cell(member, cell) & torch.isfinite(d) & (d > 0)
    lo = torch.where(m, d, torch.full_like(d, float("inf"))).amin(-1)
    hi = torch.where(m, d, torch.zeros_like(d)).amax(-1)
    threshold = torch.sqrt(lo * hi)  # between the two surfaces on a log scale
    near_count = (m & (d <= threshold[..., None])).sum(-1)
    # a sliver of a few pixels has no slope to speak of and draws as speckle: it stays with the other side
    split = m.any(-1) & (hi > lo * (1 + spread)) & (near_count >= min_pixels) & (m.sum(-1) - near_count >= min_pixels)

    def pixels(x):
        return x.repeat_interleave(cell, 0).repeat_interleave(cell, 1)

    split_px, thr_px = torch.zeros_like(member), torch.zeros_like(depth, dtype=torch.float32)
    split_px[:h * cell, :w * cell] = pixels(split)
    thr_px[:h * cell, :w * cell] = pixels(torch.where(split, threshold, torch.zeros_like(threshold)))
    far = member & split_px & (depth > thr_px)
    return member & ~far, far


def _pair_splats(bank, oid, px, ci, a, b, depth):
    """(Splats of the stored cells `ci` found for pixels `px` at (a, b), with their Pairs (each pixel's depth from
    `depth` [H * W]); the cells used; each pair's splat)."""
    mark = torch.zeros(len(bank), dtype=torch.bool)
    mark[ci] = True
    used = torch.nonzero(mark).squeeze(1)
    k = (torch.cumsum(mark.long(), 0) - 1)[ci]
    m = used.numel()
    sp = Splats(bank.lat[used], torch.zeros(m, 2), torch.zeros(m, 2, 2), torch.zeros(m), torch.zeros(m, 2),
                bank.age[used], bank.bits[used], torch.full((m,), oid, dtype=torch.long), bank.keys[used],
                bank.canvases(used), Pairs(px, k, a.float(), b.float(), depth[px].float()))
    return sp, used, k


def crease_layers(normal, member, cell):
    """Split each cell's `member` pixels where they lie on two faces (a box's edge): the face most of them agree
    with (normals within CREASE) and the rest, so that each is stored as its own plane. `normal` [3, H, W]. Returns
    (main, other) pixel masks."""
    h, w = normal.shape[1] // cell, normal.shape[2] // cell
    m = per_cell(member, cell)
    n = torch.stack([per_cell(x.float(), cell) for x in normal], -1)   # [h, w, c*c, 3]
    mean = (n * m[..., None]).sum(2)
    mean = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # only cells whose pixels do not all face one way need the pairwise look
    spread = (m & ((n * mean[:, :, None]).sum(-1) < CREASE)).any(-1)
    main = m.clone()
    ii, jj = torch.nonzero(spread, as_tuple=True)
    if ii.numel():
        ns, ms = n[ii, jj], m[ii, jj]                                     # [k, c*c, 3], [k, c*c]
        agree = (torch.einsum("kid,kjd->kij", ns, ns) >= CREASE) & ms[:, None, :]
        ref = torch.where(ms, agree.sum(-1), torch.full_like(ms, -1, dtype=torch.long)).argmax(-1)  # the majority
        nref = ns[torch.arange(ii.numel()), ref]
        main[ii, jj] = ms & ((ns * nref[:, None]).sum(-1) >= CREASE)
    out = torch.zeros_like(member)
    out[:h * cell, :w * cell] = main.reshape(h, w, cell, cell).permute(0, 2, 1, 3).reshape(h * cell, w * cell)
    return member & out, member & ~out


def _rigid(maps, member, K, c2w, tol=1e-3):
    """Whether the surface addresses of `member` [H, W] pixels are the frame's own points carried rigidly into the
    bank's space by the camera `c2w` (in that space): within `tol` of their depth."""
    m = member & torch.isfinite(maps.depth) & torch.isfinite(maps.rest).all(0)
    if not bool(m.any()):
        return False
    v, u = torch.nonzero(m, as_tuple=True)
    z = maps.depth[v, u].double()
    K = torch.as_tensor(K, dtype=torch.float64)
    cam = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    pts = rigid_apply(torch.as_tensor(c2w, dtype=torch.float64), cam)
    return bool(((pts - maps.rest[:, v, u].T.double()).norm(dim=1) <= tol * z).all())


def _near(mask, radius=OUTLINE):
    """[H, W] bool: the pixels within `radius` (a square) of `mask`."""
    k = 2 * radius + 1
    return F.max_pool2d(mask[None, None].float(), k, stride=1, padding=radius)[0, 0] > 0


def _addressed(maps, moving=True):
    """Whether a frame's maps give surface addresses (every pixel's rest position and normal; for moving objects,
    object ids too)."""
    return (maps is not None and maps.rest is not None and maps.normal is not None and maps.depth is not None
            and (maps.ids is not None or not moving))


def cell_slopes(depth, cell):
    """[H, W] planar depth -> ([h, w], [h, w]) depth change per pixel along x and along y inside each cell: the
    median over neighbouring pixel pairs on one surface (finite, and within SLOPE_JUMP of each other), 0 where
    a cell has none. With it a stored cell is a small tilted plane, not a card facing the camera that wrote it."""
    d = per_cell(depth.float(), cell)
    h, w = d.shape[:2]
    d = d.reshape(h, w, cell, cell)  # [h, w, y, x]

    def slope(a, b):
        ok = torch.isfinite(a) & torch.isfinite(b) & (a > 0) & (b > 0)
        ok &= (b - a).abs() <= SLOPE_JUMP * torch.minimum(a, b).clamp_min(1e-12)
        diff = torch.where(ok, b - a, torch.full_like(a, float("nan"))).reshape(h, w, -1)
        return torch.nan_to_num(diff.nanmedian(dim=-1).values, nan=0.0)

    return slope(d[..., :, :-1], d[..., :, 1:]), slope(d[..., :-1, :], d[..., 1:, :])


def cell_edges(depth, cell, ids=None, spread=0.3):
    """[H, W] depth -> [H//cell, W//cell] bool: cells that straddle an edge (depths more than `spread`
    apart, sky beside geometry, or several objects). Such a cell has no single place in 3D: stored, it
    would float in front of the background from other views or drag a fringe along with a moving object,
    so the memory leaves them out and the model fills them afresh on every frame."""
    d = per_cell(depth.float(), cell)
    ok = torch.isfinite(d) & (d > 0)
    lo = torch.where(ok, d, torch.full_like(d, float("inf"))).amin(-1)
    hi = torch.where(ok, d, torch.zeros_like(d)).amax(-1)
    edge = (ok.any(-1) & ~ok.all(-1)) | (ok.all(-1) & (hi > lo * (1 + spread)))
    if ids is not None:
        px = per_cell(ids.long(), cell)
        edge |= px.amin(-1) != px.amax(-1)
    return edge


def latent_intrinsics(K, cell):
    """(fx, fy, cx, cy) of the latent grid: cell (i, j) is centred on pixel (j*cell + (cell-1)/2, i*cell + ...)."""
    K = torch.as_tensor(K, dtype=torch.float64)
    off = (cell - 1) / 2
    return (float(K[0, 0]) / cell, float(K[1, 1]) / cell,
            (float(K[0, 2]) - off) / cell, (float(K[1, 2]) - off) / cell)


def zbuffer(target, z, size, age=None, tol=0.0):
    """Winner per target slot: the nearest surface, and on it the oldest cell (smallest `age`), then the
    smallest position in the input. A candidate is on the nearest surface when z <= zmin * (1 + tol).
    Returns [size] int64 positions, len(z) where nothing landed. Only amin reductions, so the winner never
    depends on scheduling (duplicate-index assignment would leave it undefined)."""
    n = z.numel()
    zmin = torch.full((size,), float("inf"), dtype=z.dtype, device=z.device)
    zmin = zmin.scatter_reduce(0, target, z, "amin")
    near = z <= zmin[target] * (1 + tol)
    rank = torch.arange(n, device=z.device)
    if age is not None:
        rank = age.long() * max(n, 1) + rank
    best = torch.full((size,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=z.device)
    best = best.scatter_reduce(0, target[near], rank[near], "amin")
    return torch.where(best == torch.iinfo(torch.int64).max, torch.full_like(best, n), best % max(n, 1))


def pack_keys(level, q):
    """(level, ix, iy, iz) -> int64, laid out as level | block xyz | voxel-in-block xyz so sorting by key also
    groups cells by block (key >> 12 is the block)."""
    u = q + AXIS_HALF
    hi, lo = u >> BLOCK_BITS, u & ((1 << BLOCK_BITS) - 1)
    return ((level + LEVEL_OFFSET) << 57 | hi[:, 0] << 42 | hi[:, 1] << 27 | hi[:, 2] << 12
            | lo[:, 0] << 8 | lo[:, 1] << 4 | lo[:, 2])


def footprints(sp, c, H, W, only=None):
    """Every (target pixel, splat) pair where the pixel's centre lies inside the splat's footprint (its cell plus
    SPLAT_MARGIN, mapped through the splat's plane), the footprint cut to SPLAT_REACH cells' width each way and
    to the image (`only` [N] bool: for these splats alone). Yields, a part of the splats at a time, (pixel [M]
    (y * W + x), splat [M], source offsets a, b [M] from the splat's centre in source pixels, order [N]: each
    splat's place when splats are taken by reach (rounded up to a few sizes), then as listed)."""
    N = sp.age.numel()
    J = sp.jac.float()
    det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
    good = det > 1e-6  # edge-on or seen from behind: nothing to draw
    drawn = good if only is None else good & only
    inv = torch.stack([torch.stack([J[:, 1, 1], -J[:, 0, 1]], 1), torch.stack([-J[:, 1, 0], J[:, 0, 0]], 1)], 1)
    inv = inv / torch.where(good, det, torch.ones_like(det))[:, None, None]
    half = c / 2 + SPLAT_MARGIN
    extent = torch.stack([J[:, 0].abs().sum(1), J[:, 1].abs().sum(1)], 1) * half  # footprint half-size, x and y
    reach = torch.ceil(extent.clamp(max=SPLAT_REACH * c)).long().amax(1)
    levels = torch.tensor(sorted({int(c // 2 + 1), c, int(1.5 * c), 2 * c, SPLAT_REACH * c}))
    level = torch.searchsorted(levels, reach).clamp(max=levels.numel() - 1)
    reach = levels[level]
    order = level * N + torch.arange(N)
    cx, cy = sp.centre[:, 0].float(), sp.centre[:, 1].float()
    xc, yc = torch.floor(cx + 0.5).long(), torch.floor(cy + 0.5).long()
    # the square of `reach` around the centre pixel, cut to the footprint's box with half a pixel of slack (far
    # more than rounding moves a, b; a nearly edge-on splat, whose inverse is large, keeps its whole square)
    loose = inv.abs().flatten(1).amax(1) > 1e3
    x0 = torch.maximum(xc - reach, torch.where(loose, xc - reach, torch.ceil(cx - extent[:, 0] - 0.5).long())).clamp(min=0)
    x1 = torch.minimum(xc + reach, torch.where(loose, xc + reach, torch.floor(cx + extent[:, 0] + 0.5).long())).clamp(max=W - 1)
    y0 = torch.maximum(yc - reach, torch.where(loose, yc - reach, torch.ceil(cy - extent[:, 1] - 0.5).long())).clamp(min=0)
    y1 = torch.minimum(yc + reach, torch.where(loose, yc + reach, torch.floor(cy + extent[:, 1] + 0.5).long())).clamp(max=H - 1)
    ny = torch.where(drawn, (y1 - y0 + 1).clamp(min=0), torch.zeros_like(y0))
    # a few thousand splats at a time, by the area of their boxes: what one part needs stays small at any size
    area = (ny * (x1 - x0 + 1).clamp(min=0)).cumsum(0)
    total = int(area[-1]) if N else 0
    parts = max(1, -(-total // FOOTPRINT_PART))
    cuts = [0] + torch.searchsorted(area, torch.arange(1, parts) * FOOTPRINT_PART).tolist() + [N]
    for s0, s1 in zip(cuts[:-1], cuts[1:]):
        if s1 > s0 or s0 == 0:  # the first part even when empty: there is always one
            yield _rows(s0, s1, ny, x0, x1, y0, inv, cx, cy, loose, half, W) + (order,)


def _rows(s0, s1, ny, x0, x1, y0, inv, cx, cy, loose, half, W):
    """_footprints for the splats s0 .. s1 - 1: each row of its box, cut to where the footprint crosses it (|a|
    and |b| <= half are two bands along the row), then the pixels of those rows that pass."""
    ny = ny[s0:s1]
    local = torch.repeat_interleave(torch.arange(s1 - s0), ny)
    kr = local + s0
    Y = y0[kr] + (torch.arange(kr.numel()) - (ny.cumsum(0) - ny)[local])
    dy = Y - cy[kr]
    lo, hi = _band(inv[kr, 0, 0], inv[kr, 0, 1] * dy, half)
    lo_b, hi_b = _band(inv[kr, 1, 0], inv[kr, 1, 1] * dy, half)
    lo, hi = torch.maximum(lo, lo_b), torch.minimum(hi, hi_b)
    whole = loose[kr]
    xs0 = torch.where(whole, x0[kr], torch.maximum(x0[kr], torch.ceil(cx[kr] + lo - 0.5).clamp(-1, W).long()))
    xs1 = torch.where(whole, x1[kr], torch.minimum(x1[kr], torch.floor(cx[kr] + hi + 0.5).clamp(-1, W).long()))
    nx = (xs1 - xs0 + 1).clamp(min=0)
    r = torch.repeat_interleave(torch.arange(kr.numel()), nx)
    k = kr[r]
    X, Y = xs0[r] + (torch.arange(r.numel()) - (nx.cumsum(0) - nx)[r]), Y[r]
    dx, dy = X - cx[k], Y - cy[k]
    a = inv[k, 0, 0] * dx + inv[k, 0, 1] * dy
    b = inv[k, 1, 0] * dx + inv[k, 1, 1] * dy
    i = torch.nonzero((a.abs() <= half) & (b.abs() <= half)).squeeze(1)
    return Y[i] * W + X[i], k[i], a[i], b[i]


def _band(m, offset, half):
    """Where along a row m * dx + offset lies within [-half, half]: (lo, hi) in dx, empty when lo > hi."""
    inf = torch.full_like(offset, float("inf"))
    safe = torch.where(m == 0, torch.ones_like(m), m)
    e0, e1 = (-half - offset) / safe, (half - offset) / safe
    inside = offset.abs() <= half  # m == 0: the whole row or none of it
    lo = torch.where(m == 0, torch.where(inside, -inf, inf), torch.minimum(e0, e1))
    hi = torch.where(m == 0, torch.where(inside, inf, -inf), torch.maximum(e0, e1))
    return lo, hi


def _voxel_key(level, v):
    """(level, voxel [n, 3]) -> [n] int64 for the address index: 20 bits per axis (clamped: a clash between far
    voxels only costs a few candidates, which the exact test then drops) and the level above them."""
    u = (v + (1 << 19)).clamp(0, (1 << 20) - 1)
    return ((min(level, 7) << 60) | u[:, 0] << 40 | u[:, 1] << 20 | u[:, 2]) if v.numel() else v[:, 0]


def projection(K, cam_to_world):
    """[3, 4] float64: world (or a bank's space) -> homogeneous pixels (x, y, depth) of an OpenCV camera."""
    w2c = torch.linalg.inv(torch.as_tensor(cam_to_world, dtype=torch.float64))
    return torch.as_tensor(K, dtype=torch.float64) @ w2c[:3]


def rigid_apply(M, p):
    # explicit sums rather than matmul: BLAS may change the summation order with the thread count
    return p[:, 0:1] * M[:3, 0] + p[:, 1:2] * M[:3, 1] + p[:, 2:3] * M[:3, 2] + M[:3, 3]


class LatentMemory:
    """One bank: latent cells in one space (the world's, or a moving object's own)."""

    def __init__(self, channels, cell, dtype=torch.float16, device="cpu"):
        self.channels, self.cell, self.dtype, self.device = int(channels), int(cell), dtype, torch.device(device)
        self.keys = torch.zeros(0, dtype=torch.int64, device=self.device)      # sorted, unique
        self.pos = torch.zeros(0, 3, dtype=torch.float32, device=self.device)  # exact world positions
        self.lat = torch.zeros(0, self.channels, dtype=dtype, device=self.device)
        self.foot = torch.zeros(0, dtype=torch.float32, device=self.device)   # world size of the cell
        self.age = torch.zeros(0, dtype=torch.int32, device=self.device)      # write number, for "oldest wins"
        # where each cell sat in the frame that wrote it (row, col; -1 unknown): with `age` this finds a
        # cell's neighbours in that frame, so a model can decode it in the context it was encoded in
        self.src = torch.zeros(0, 2, dtype=torch.int16, device=self.device)
        # the cell's surface: world displacement per pixel of the writing camera along its x and y, in units
        # of that pixel's world size (foot / cell), so it keeps its precision in float16 at any scale
        self.tan = torch.zeros(0, 6, dtype=torch.float16, device=self.device)
        # which pixels of the cell are this surface's (bit y * cell + x): a cell on an object's outline is
        # stored in the object's bank and in the world's, each drawing only its own pixels, so the floor
        # keeps no crate-coloured fringe once the crate has moved on
        self.bits = torch.zeros(0, dtype=torch.int64, device=self.device)
        # the side of the surface the cell shows: its front normal is -(tan_x x tan_y) times this (-1 where the
        # object's transform mirrors its own space), so a pixel on the far side of a thin surface does not read it
        self.side = torch.zeros(0, dtype=torch.int8, device=self.device)
        # (h, w) of each write's latent grid (row = write number): a frame's, or a surface chart's of its own size
        self.grids = torch.zeros(1, 2, dtype=torch.int32, device=self.device)
        self.writes = 0
        self.notes = {}  # what save() kept beside the bank (SceneMemory.notes, on its static bank)
        # each write's camera as a [3, 4] projection from this bank's space to pixels (row = write number; NaN for
        # a write placed by surface addresses alone, a deforming object's): a point's source pixel is then exact,
        # so neighbouring cells of one write tile the surface without cracks when read by address
        self.cameras = torch.full((1, 3, 4), float("nan"), dtype=torch.float64, device=self.device)
        self._lookup = None
        self._index = None  # the cells' planes and footprint hash (read_surface), kept while the cells are the same
        self._hashed = self._index32 = None
        self.token = next(_TOKENS)  # names this memory in canvas keys (an id() could be reused)
        self._rebuild_blocks()

    def __len__(self):
        return self.keys.numel()

    def nbytes(self):
        return sum(t.numel() * t.element_size()
                   for t in (self.keys, self.pos, self.lat, self.foot, self.age, self.src, self.tan, self.bits,
                             self.side, self.block_start, self.block_min, self.block_max))

    def _rebuild_blocks(self):
        self._lookup = None
        self._index = self._hashed = self._index32 = None
        # cells are sorted by key, so every block is one contiguous range
        block = self.keys >> (3 * BLOCK_BITS)
        _, counts = torch.unique_consecutive(block, return_counts=True)
        self.block_start = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        inv = torch.repeat_interleave(torch.arange(counts.numel(), device=self.device), counts)[:, None].expand(-1, 3)
        inf = torch.full((counts.numel(), 3), float("inf"), device=self.device)
        self.block_min = inf.scatter_reduce(0, inv, self.pos, "amin")
        self.block_max = (-inf).scatter_reduce(0, inv, self.pos, "amax")

    def write(self, latent, depth, K, cam_to_world, mask=None, pixel_depth=None, pixel_mask=None, same_write=False):
        """Store the valid (finite depth > 0, and mask) cells of a [C, h, w] latent. `pixel_depth` [h*cell,
        w*cell] gives each cell its surface's tilt (without it a cell faces the camera); `pixel_mask` (same
        size) the pixels that are this memory's (without it, all). `same_write`: more layers of the frame
        the previous call wrote, stored under its write number (one source canvas). Returns cells stored."""
        C, h, w = latent.shape
        if C != self.channels or tuple(depth.shape) != (h, w):
            raise ValueError(f"expected latent [{self.channels}, h, w] and depth [h, w], got "
                             f"{tuple(latent.shape)} and {tuple(depth.shape)}")
        d = depth.to(self.device, torch.float64)
        ok = torch.isfinite(d) & (d > 0)
        if mask is not None:
            ok &= mask.to(self.device, torch.bool)
        ii, jj = torch.nonzero(ok, as_tuple=True)
        z = d[ii, jj]
        fx, fy, cx, cy = latent_intrinsics(K, self.cell)
        cam = torch.stack([(jj - cx) / fx * z, (ii - cy) / fy * z, z], 1)
        pos = rigid_apply(torch.as_tensor(cam_to_world, dtype=torch.float64, device=self.device), cam).float()

        # voxel <= half the cell's footprint, so neighbouring cells of one frame never share a key
        foot = z / max(fx, fy)
        # the surface through the cell centre, per pixel of this camera: d(X, Y, Z)/dx and d/dy in camera space
        gx = gy = torch.zeros_like(z)
        full = (h * self.cell, w * self.cell)
        pm = None if pixel_mask is None or tuple(pixel_mask.shape) != full else pixel_mask.to(self.device, torch.bool)
        if pixel_depth is not None and tuple(pixel_depth.shape) == full:
            pd = pixel_depth.to(self.device)
            if pm is not None:
                pd = torch.where(pm, pd, torch.full_like(pd, float("inf")))
            sx, sy = cell_slopes(pd, self.cell)
            gx, gy = sx.double()[ii, jj], sy.double()[ii, jj]
        bits = torch.full((ii.numel(),), -1, dtype=torch.int64, device=self.device)
        if pm is not None:
            bits = cell_bits(pm, self.cell)[ii, jj]
        Kd = torch.as_tensor(K, dtype=torch.float64, device=self.device)
        fxp, fyp, cxp, cyp = Kd[0, 0], Kd[1, 1], Kd[0, 2], Kd[1, 2]
        xr = (jj.double() * self.cell + (self.cell - 1) / 2 - cxp) / fxp
        yr = (ii.double() * self.cell + (self.cell - 1) / 2 - cyp) / fyp
        du = torch.stack([z / fxp + xr * gx, yr * gx, gx], 1)
        dv = torch.stack([xr * gy, z / fyp + yr * gy, gy], 1)
        R = torch.as_tensor(cam_to_world, dtype=torch.float64, device=self.device)[:3, :3]
        unit = (foot / self.cell)[:, None]
        tan = torch.cat([rigid_apply(torch.cat([R, R.new_zeros(3, 1)], 1), t) / unit for t in (du, dv)], 1)
        return self._store(latent, ii, jj, z, pos, foot, tan, bits, torch.ones_like(z, dtype=torch.int8), same_write,
                           camera=projection(K, cam_to_world))

    def _store(self, latent, ii, jj, rank, pos, foot, tan, bits, side, same_write, key_at=None, camera=None,
               placed=None):
        """Store the cells (ii, jj) of `latent` [C, h, w]: pos [n, 3] float32, foot [n] (size of a cell), tan
        [n, 6] (the surface's displacement per source pixel along x and y, in units of foot / cell), bits [n],
        side [n]; `rank` [n]: where two cells share a key, the smaller keeps it; `key_at` [n, 3]: the point a cell
        is keyed by (default: pos); `camera` [3, 4]: the write's projection (None: placed by addresses alone).
        `placed` [h, w] bool: set where a cell was stored. Returns cells stored."""
        C, h, w = latent.shape
        tan = tan.clamp(-1000, 1000)
        level = torch.floor(torch.log2(foot / 2)).long().clamp(-LEVEL_OFFSET, LEVEL_OFFSET - 1)
        at = pos if key_at is None else key_at
        q = torch.floor(at.double() * torch.pow(2.0, -level.double())[:, None]).long()
        inside = ((q >= -AXIS_HALF) & (q < AXIS_HALF)).all(1)  # too far out to pack: not stored
        key = pack_keys(level[inside], q[inside])
        z, pos, foot, tan, bits = rank[inside], pos[inside], foot[inside].float(), tan[inside].to(torch.float16), bits[inside]
        side = side[inside]
        lat = latent.to(self.device)[:, ii[inside], jj[inside]].T.to(self.dtype)
        src = torch.stack([ii[inside], jj[inside]], 1).to(torch.int16)
        if max(h, w) > 32767:
            src = torch.full_like(src, -1)

        # one cell per key: nearest (or finest), then lowest cell index (stable sorts keep the earlier order on ties)
        order = torch.sort(z, stable=True).indices
        order = order[torch.sort(key[order], stable=True).indices]
        ks = key[order]
        first = torch.ones_like(ks, dtype=torch.bool)
        first[1:] = ks[1:] != ks[:-1]
        sel = order[first]
        new_keys = key[sel]
        n = new_keys.numel()
        if n == 0:
            return 0
        if placed is not None:
            placed[ii[inside][sel], jj[inside][sel]] = True

        # a key already stored is replaced: revisits refresh cells instead of adding copies
        keep = torch.ones_like(self.keys, dtype=torch.bool)
        if len(self):
            at = torch.searchsorted(new_keys, self.keys).clamp(max=n - 1)
            keep = new_keys[at] != self.keys
        keys = torch.cat([self.keys[keep], new_keys])
        order = torch.sort(keys, stable=True).indices
        if not same_write or self.writes == 0:
            self.writes += 1
            row = torch.full((1, 3, 4), float("nan"), dtype=torch.float64, device=self.device)
            if camera is not None:
                row[0] = camera.to(self.device, torch.float64)
            self.cameras = torch.cat([self.cameras[:self.writes], row])
            self.grids = torch.cat([self.grids[:self.writes], torch.tensor([[h, w]], dtype=torch.int32)])
        self.keys = keys[order]
        self.pos = torch.cat([self.pos[keep], pos[sel]])[order]
        self.lat = torch.cat([self.lat[keep], lat[sel]])[order]
        self.foot = torch.cat([self.foot[keep], foot[sel]])[order]
        self.age = torch.cat([self.age[keep], torch.full((n,), self.writes, dtype=torch.int32, device=self.device)])[order]
        self.src = torch.cat([self.src[keep], src[sel]])[order]
        self.tan = torch.cat([self.tan[keep], tan[sel]])[order]
        self.bits = torch.cat([self.bits[keep], bits[sel]])[order]
        self.side = torch.cat([self.side[keep], side[sel]])[order]
        self._rebuild_blocks()
        return n

    def write_surface(self, latent, rest, normal, mask, pixel_mask, same_write=False, camera=None, placed=None,
                      pixel_size=None):
        """Store the cells of a [C, h, w] latent where `mask` [h, w] (and its pixels `pixel_mask` [H, W]) at their
        pixels' surface addresses: `rest` [3, H, W] (this bank's space; NaN where nothing) and `normal` [3, H, W]
        (facing the camera). Each cell is the plane that best fits its own pixels' addresses (least squares, so a
        deforming surface's cell keeps the shape it has at rest), owning only those pixels. `camera` [3, 4]: the
        projection from this bank's space to the frame's pixels, where the addresses are a rigid image of the frame
        (None for a deforming surface). `placed` [h, w] bool: set where a cell was stored; `pixel_size` [h, w]:
        how much surface a pixel of each cell spans facing the camera, given where a cell that fits its pixels
        badly must not be stored (FIT_RESIDUAL, FIT_STRETCH). Returns cells stored."""
        C, h, w = latent.shape
        c = self.cell
        full = (h * c, w * c)
        if tuple(rest.shape[-2:]) != full or tuple(pixel_mask.shape) != full:
            raise ValueError(f"expected rest [3, {full[0]}, {full[1]}] and a pixel mask of that size, got "
                             f"{tuple(rest.shape)} and {tuple(pixel_mask.shape)}")
        own = pixel_mask.to(self.device, torch.bool) & torch.isfinite(rest).all(0)
        count = per_cell(own, c).sum(-1)
        ok = count >= FIT_PIXELS
        if mask is not None:
            ok &= mask.to(self.device, torch.bool)
        ii, jj = torch.nonzero(ok, as_tuple=True)
        if ii.numel() == 0:
            return 0
        wgt = per_cell(own, c)[ii, jj].double()                            # [n, c*c]
        P = torch.stack([per_cell(torch.nan_to_num(r.to(self.device)), c)[ii, jj] for r in rest], -1).double()
        off = torch.arange(c, dtype=torch.float64, device=self.device) - (c - 1) / 2
        dx, dy = off.repeat(c), off.repeat_interleave(c)                   # pixel y * c + x
        basis = torch.stack([torch.ones_like(dx), dx, dy], -1)              # [c*c, 3]
        A = torch.einsum("nk,ki,kj->nij", wgt, basis, basis)
        A = A + 1e-9 * torch.eye(3, dtype=torch.float64, device=self.device)
        rhs = torch.einsum("nk,ki,nkd->nid", wgt, basis, P)                # [n, 3, 3 coords]
        good = torch.linalg.det(A).abs() > 1e-6 * wgt.sum(-1) ** 3         # pixels not all on one line
        ii, jj, A, rhs, wgt, P = ii[good], jj[good], A[good], rhs[good], wgt[good], P[good]
        if ii.numel() == 0:
            return 0
        fit = torch.linalg.solve(A, rhs)                                    # [n, 3 (P, Tx, Ty), 3]
        if pixel_size is not None:
            # pixels on no one plane (two objects, an edge the crease split missed) give a plane through none of
            # them, far off its pixels or stretched far beyond what a pixel spans there: such a cell is left to
            # the caller (placed stays False)
            miss = P - torch.einsum("ki,nid->nkd", basis, fit)
            rms = ((miss ** 2).sum(-1) * wgt).sum(-1) / wgt.sum(-1).clamp_min(1)
            a, b = fit[:, 1].norm(dim=1), fit[:, 2].norm(dim=1)
            flat = (rms.sqrt() <= FIT_RESIDUAL * torch.maximum(a, b)) \
                & (torch.minimum(a, b) <= FIT_STRETCH * pixel_size.to(self.device, torch.float64)[ii, jj])
            ii, jj, fit, wgt = ii[flat], jj[flat], fit[flat], wgt[flat]
            if ii.numel() == 0:
                return 0
        pos, tx, ty = fit[:, 0], fit[:, 1], fit[:, 2]
        cross = torch.linalg.cross(tx, ty)
        # the surface's length per pixel along its narrower side: the size a cell shows across the view (one seen
        # at a grazing angle is long and narrow, and as wide on screen as any other), which the read's footprints
        # and the key's grid go by (by the mean size, a grazing floor's cells would spread over the wall behind it
        # in a read, and two neighbours across one would share a key)
        unit = torch.minimum(tx.norm(dim=1), ty.norm(dim=1))
        good = (unit > 0) & (cross.norm(dim=1) > 0)
        ii, jj, pos, tx, ty, cross, unit = ii[good], jj[good], pos[good], tx[good], ty[good], cross[good], unit[good]
        wgt = wgt[good]
        if ii.numel() == 0:
            return 0
        nrm = torch.stack([per_cell(x.to(self.device), c)[ii, jj] for x in normal], -1).double()
        seen = (nrm * wgt[:, :, None]).sum(1)
        side = torch.where((seen * -cross).sum(1) >= 0, 1, -1).to(torch.int8)
        tan = torch.cat([tx, ty], 1) / unit[:, None]
        # keyed half a cell in front of its surface: the two faces of an edge, or the two sides of a thin surface,
        # never share a key, while the same patch of surface seen again does
        front = -cross / cross.norm(dim=1, keepdim=True) * side.double()[:, None]
        # keyed at its own pixels' centre (two parts of one cell on one plane, a near and a far layer of a floor,
        # share the plane's point at the cell's centre, and one key would keep only one of them)
        mid = (wgt[:, :, None] * basis[None, :, 1:]).sum(1) / wgt.sum(1, keepdim=True).clamp_min(1)
        at = pos + mid[:, :1] * tx + mid[:, 1:] * ty
        return self._store(latent, ii, jj, unit, pos.float(), c * unit, tan, cell_bits(own, c)[ii, jj], side,
                           same_write, key_at=at + 0.5 * c * unit[:, None] * front, camera=camera, placed=placed)

    def _planes(self):
        """Each cell's plane as the address read uses it (once per content): centre P [N, 3], axes Tx, Ty [N, 3] per
        source pixel, the inverse of their Gram matrix [N, 2, 2], front normal [N, 3], length per pixel [N]."""
        if self._index is not None:
            return self._index
        unit = (self.foot / self.cell)[:, None].double()
        tx, ty = self.tan[:, :3].double() * unit, self.tan[:, 3:].double() * unit
        gram = torch.stack([torch.stack([(tx * tx).sum(1), (tx * ty).sum(1)], 1),
                            torch.stack([(tx * ty).sum(1), (ty * ty).sum(1)], 1)], 1)
        det = gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] ** 2
        inv = torch.stack([torch.stack([gram[:, 1, 1], -gram[:, 0, 1]], 1),
                           torch.stack([-gram[:, 1, 0], gram[:, 0, 0]], 1)], 1) / det.clamp_min(1e-30)[:, None, None]
        front = -torch.linalg.cross(tx, ty)
        front = front / front.norm(dim=1, keepdim=True).clamp_min(1e-30) * self.side.double()[:, None]
        self._index = (self.pos.double(), tx, ty, inv, front, unit[:, 0])
        return self._index

    def _hash(self, subset=None):
        """A hash of the grid voxels each cell's footprint box meets, per level of voxel size (base size, levels,
        sorted keys [E], cell [E]), built once per content; for the cells `subset` alone, built anew."""
        if subset is None and self._hashed is not None:
            return self._hashed
        pos, tx, ty, _, _, unit = self._planes()
        if subset is not None:
            pos, tx, ty, unit = pos[subset], tx[subset], ty[subset], unit[subset]
        half = self.cell / 2 + ADDRESS_REACH
        extent = half * (tx.abs() + ty.abs()) + ADDRESS_TOL * unit[:, None]  # the footprint's box, half size per axis
        size = 2 * extent.amax(1)
        base = float(size.median())
        level = torch.ceil(torch.log2((size / base).clamp_min(1.0))).long()  # voxels at least as large as the box
        keys, cells = [], []
        for lv in torch.unique(level).tolist():
            k = torch.nonzero(level == lv).squeeze(1)
            g = base * 2.0 ** lv
            lo = torch.floor((pos[k] - extent[k]) / g).long()
            hi = torch.floor((pos[k] + extent[k]) / g).long()
            for corner in range(8):  # a box no larger than a voxel meets at most 2 x 2 x 2 of them
                bit = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=self.device)
                v = lo + bit
                take = (v <= hi).all(1)
                keys.append(_voxel_key(lv, v[take]))
                cells.append(k[take])
        keys, cells = torch.cat(keys), torch.cat(cells)
        order = torch.argsort(keys, stable=True)
        cells = cells[order] if subset is None else subset[cells[order]]
        hashed = (base, sorted(torch.unique(level).tolist()), keys[order], cells)
        if subset is None:
            self._hashed = hashed
        return hashed

    def read_surface(self, points, normals, plane=None):
        """The stored cells that points on this bank's surfaces show: `points` [M, 3] surface addresses in this
        bank's space, `normals` [M, 3] facing their camera. Returns (point [P], cell [P], a [P], b [P]): every pair of
        a point and a cell that holds it (surface_check), found through a hash of the cells' footprints; with
        `plane` = (unit normal [3], offset d), the points all on that plane, among its cells only (those facing
        its way within a few of their pixels of it)."""
        empty = torch.zeros(0, dtype=torch.long, device=self.device)
        if not len(self) or not points.shape[0]:
            return empty, empty, empty.float(), empty.float()
        subset = None
        if plane is not None:
            pos, _, _, _, front, unit = self._planes()
            n, d = plane
            n = n.to(self.device, torch.float64)
            subset = torch.nonzero(((pos @ n - d).abs() <= 4 * self.cell * unit) & (front @ n >= SAME_SIDE)).squeeze(1)
            if not subset.numel():
                return empty, empty, empty.float(), empty.float()
        base, levels, keys, cells = self._hash(subset)
        p = points.to(self.device, torch.float64)
        found_p, found_c = [], []
        for lv in levels:
            pk = _voxel_key(lv, torch.floor(p / (base * 2.0 ** lv)).long())
            lo = torch.searchsorted(keys, pk)
            hi = torch.searchsorted(keys, pk, right=True)
            n = hi - lo
            which = torch.repeat_interleave(torch.arange(p.shape[0], device=self.device), n)
            at = torch.repeat_interleave(lo - (n.cumsum(0) - n), n) + torch.arange(which.numel(), device=self.device)
            found_p.append(which)
            found_c.append(cells[at])
        return self.surface_check(points, normals, torch.cat(found_p), torch.cat(found_c))

    def surface_check(self, points, normals, pi, ci):
        """Which candidate pairs (point pi [P], cell ci [P]) hold: the point lies inside the cell (where the cell's
        write has a camera, the point's own pixel in that frame is one of the cell's, so the cells of one write tile
        the surface exactly; else within the cell plus ADDRESS_REACH source pixels, by its plane), on its plane (off
        it by at most a few of its pixels, more as the point lies further from the cell's centre: the plane's tilt
        is an estimate), seen from the same side. Returns (point, cell, a, b) of those: a, b where in the cell
        (source pixels from its centre along its row and column)."""
        pos, tx, ty, inv, front, unit = self._planes32()
        c = self.cell
        p64 = points.to(self.device, torch.float64)
        # coordinates relative to each cell's centre are small: float32 keeps them to well below a pixel
        p = p64.float()
        # the cheap tests first: most candidates of a point (cells of other faces, other sides, other writes' cells
        # whose footprint boxes only overlap it) fail them. Each is implied by the full test below (off the plane by
        # at most the residual it allows, the in-plane offset at most the cell's half size along each axis), with a
        # margin for rounding, so the pairs that hold are the same, in the same order
        nf = normals.to(self.device, torch.float32)
        keep = torch.nonzero((nf[pi] * front[ci]).sum(1) >= SAME_SIDE).squeeze(1)
        pi, ci = pi[keep], ci[keep]
        d = p[pi] - pos[ci]
        txc, tyc = tx[ci], ty[ci]
        reach = (c / 2 + ADDRESS_REACH) * (txc.norm(dim=1) + tyc.norm(dim=1))
        keep = torch.nonzero((d * front[ci]).sum(1).abs()
                             <= 1.01 * (ADDRESS_TOL * unit[ci] + PLANE_SLACK * reach) + 1e-5 * d.norm(dim=1)).squeeze(1)
        pi, ci, d, txc, tyc = pi[keep], ci[keep], d[keep], txc[keep], tyc[keep]
        a = torch.empty(pi.numel(), device=self.device)
        b = torch.empty_like(a)
        inside = torch.zeros(pi.numel(), dtype=torch.bool, device=self.device)
        age = self.age[ci].long()
        exact = self._has_camera[age]
        for w in torch.unique(age[exact]).tolist():  # one camera per write
            e = torch.nonzero(age == w).squeeze(1)
            P = self.cameras[w]
            x = p64[pi[e]] @ P[:, :3].T + P[:, 3]
            centre = self.src[ci[e]].double() * c + (c - 1) / 2
            ae, be = (x[:, 0] / x[:, 2] - centre[:, 1]).float(), (x[:, 1] / x[:, 2] - centre[:, 0]).float()
            a[e], b[e] = ae, be
            inside[e] = ((x[:, 2] > 0) & (self.src[ci[e], 0] >= 0) & (ae >= -c / 2) & (ae < c / 2)
                         & (be >= -c / 2) & (be < c / 2))
        f = torch.nonzero(~exact).squeeze(1)
        if f.numel():  # placed by addresses alone: where the point falls on the cell's plane
            u, v = (d[f] * txc[f]).sum(1), (d[f] * tyc[f]).sum(1)
            g = inv[ci[f]]
            a[f] = g[:, 0, 0] * u + g[:, 0, 1] * v
            b[f] = g[:, 1, 0] * u + g[:, 1, 1] * v
            half = c / 2 + ADDRESS_REACH
            inside[f] = (a[f].abs() <= half) & (b[f].abs() <= half)
        along = a[:, None] * txc + b[:, None] * tyc
        ok = inside & ((d - along).norm(dim=1) <= ADDRESS_TOL * unit[ci] + PLANE_SLACK * along.norm(dim=1))
        ok &= (normals.to(self.device, torch.float32)[pi] * front[ci]).sum(1) >= SAME_SIDE
        i = torch.nonzero(ok).squeeze(1)
        return pi[i], ci[i], a[i], b[i]

    def _planes32(self):
        """_planes in float32, and which writes have a camera."""
        if self._index32 is None:
            self._index32 = tuple(x.float() for x in self._planes())
            self._has_camera = torch.isfinite(self.cameras[:, 0, 0])
        return self._index32

    def _visible_blocks(self, R, t, fx, fy, cx, cy, h, w):
        # frustum planes a . p_cam >= 0 moved into world space; a block is dropped only when even its
        # bbox corner farthest along a plane's normal is outside that plane (conservative)
        m = 0.5 + CULL_MARGIN
        a = torch.tensor([[0, 0, 1], [fx, 0, cx + m], [-fx, 0, w - 1 + m - cx],
                          [0, fy, cy + m], [0, -fy, h - 1 + m - cy]], dtype=torch.float32, device=self.device)
        normal, offset = a @ R, a @ t  # rounding here cannot change a read: the test has a whole-cell margin
        offset[0] -= NEAR / 2
        centre, half = (self.block_max + self.block_min) / 2, (self.block_max - self.block_min) / 2
        reach = (centre[:, None, :] * normal).sum(-1) + (half[:, None, :] * normal.abs()).sum(-1) + offset
        return (reach >= 0).all(-1)

    @staticmethod
    def _span(centre, size):
        """Integer cell centres inside [centre - size/2, centre + size/2), at least the nearest one."""
        lo = torch.ceil(centre - size / 2)
        hi = torch.ceil(centre + size / 2) - 1
        near = torch.floor(centre + 0.5)
        empty = hi < lo
        lo = torch.where(empty, near, lo).long()
        hi = torch.where(empty, near, hi).long()
        # a span wider than MAX_SPLAT keeps the cells around its centre (not its first ones: a large near cell would
        # land beside itself, over the surfaces there)
        wide = hi - lo + 1 > MAX_SPLAT
        lo = torch.where(wide, near.long() - (MAX_SPLAT - 1) // 2, lo)
        hi = torch.where(wide, lo + MAX_SPLAT - 1, hi)
        return lo, hi

    def _splats(self, K, R, cells, pc, src, target, z, size, border):
        """The read's cells on or near the nearest surface of some target cell (within VISIBLE_FACTOR: a
        minified surface puts several cells in one target cell, and all of them are seen), and those that
        reach into the image without covering a target cell's centre (`border`), each as a small tilted
        plane in target pixels. Returns (stored-cell indices, Splats without bank and canvases)."""
        zmin = torch.full((size,), float("inf"), device=self.device).scatter_reduce(0, target, z, "amin")
        near = (z <= zmin[target] * VISIBLE_FACTOR).to(torch.uint8)
        seen = torch.zeros(cells.numel(), dtype=torch.uint8, device=self.device).scatter_reduce(0, src, near, "amax")
        hits = torch.zeros(cells.numel(), dtype=torch.uint8, device=self.device).scatter_reduce(
            0, src, torch.ones_like(near), "amax")
        keep = seen.bool() | (border & ~hits.bool())
        cells, P = cells[keep], pc[keep]
        Kf = torch.as_tensor(K, dtype=torch.float32, device=self.device)
        fxp, fyp, cxp, cyp = Kf[0, 0], Kf[1, 1], Kf[0, 2], Kf[1, 2]
        unit = (self.foot[cells] / self.cell)[:, None]
        rot = torch.cat([R, R.new_zeros(3, 1)], 1)
        du = rigid_apply(rot, self.tan[cells, :3].float() * unit)
        dv = rigid_apply(rot, self.tan[cells, 3:].float() * unit)
        X, Y, Z = P.unbind(1)

        def image_step(d):  # target pixels moved by one step d of the surface (derivative of the projection)
            return torch.stack([fxp * (d[:, 0] * Z - X * d[:, 2]), fyp * (d[:, 1] * Z - Y * d[:, 2])], 1) / (Z * Z)[:, None]

        centre = torch.stack([fxp * X / Z + cxp, fyp * Y / Z + cyp], 1)
        return cells, Splats(self.lat[cells], centre, torch.stack([image_step(du), image_step(dv)], 2), Z,
                             torch.stack([du[:, 2], dv[:, 2]], 1), self.age[cells], self.bits[cells], None,
                             self.keys[cells], None)

    def read(self, K, cam_to_world, h, w, cull=True, splats=True):
        """Project the memory into a camera (BankRead; depth float32). With `splats` also every cell it sees as
        a small plane, with the canvases of the frames that wrote them."""
        w2c = torch.linalg.inv(torch.as_tensor(cam_to_world, dtype=torch.float64)).float().to(self.device)
        R, t = w2c[:3, :3], w2c[:3, 3]
        fx, fy, cx, cy = latent_intrinsics(K, self.cell)

        starts, ends = self.block_start[:-1], self.block_start[1:]
        if cull and len(self):
            vis = self._visible_blocks(R, t, fx, fy, cx, cy, h, w)
            starts, ends = starts[vis], ends[vis]
        counts = ends - starts
        # concatenated index ranges of the surviving blocks, still ascending (keeps the tie-break order)
        base = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
        idx = base + torch.arange(base.numel(), device=self.device)
        touched = idx.numel()

        pc = rigid_apply(torch.cat([R, t[:, None]], 1), self.pos[idx])
        z = pc[:, 2]
        front = z > NEAR
        idx, pc, z = idx[front], pc[front], z[front]
        cells, cells_pc = idx, pc
        # each cell covers the target cells whose centres fall inside its projected footprint
        u, v, size = fx * pc[:, 0] / z + cx, fy * pc[:, 1] / z + cy, fx * self.foot[idx] / z
        j0, j1 = self._span(u, SPLAT_GROW * size)
        i0, i1 = self._span(v, SPLAT_GROW * fy / fx * size)
        off = torch.arange(MAX_SPLAT, device=self.device)
        jj = (j0[:, None, None] + off[None, None, :]).expand(-1, MAX_SPLAT, -1)
        ii = (i0[:, None, None] + off[None, :, None]).expand(-1, -1, MAX_SPLAT)
        ok = (jj <= j1[:, None, None]) & (ii <= i1[:, None, None]) & (jj >= 0) & (jj < w) & (ii >= 0) & (ii < h)
        src = torch.arange(idx.numel(), device=self.device)[:, None, None].expand(-1, MAX_SPLAT, MAX_SPLAT)[ok]
        target = ii[ok] * w + jj[ok]
        idx, z = idx[src], z[src]
        # cells hitting no target cell centre but reaching into the image (along its border) are splats too
        border = (u > -size) & (u < w - 1 + size) & (v > -size) & (v < h - 1 + size)
        seen, seen_cells = None, None
        if splats:
            seen_cells, sp = self._splats(K, R, cells, cells_pc, src, target, z, h * w, border)
            seen = sp._replace(bank=torch.zeros(seen_cells.numel(), dtype=torch.long, device=self.device),
                               canvases=self.canvases(seen_cells))

        best = zbuffer(target, z, h * w, self.age[idx], SURFACE_TOL)
        hit = best < idx.numel()
        out = torch.zeros(h * w, self.channels, dtype=self.dtype, device=self.device)
        out[hit] = self.lat[idx[best[hit]]]
        depth = torch.full((h * w,), float("inf"), device=self.device)
        depth[hit] = z[best[hit]]
        # where each winner really lands (latent grid units, not snapped) and how large: a model can
        # place its pixels with sub-cell precision from this
        geo = torch.full((3, h * w), float("nan"), device=self.device)
        won = src[best[hit]]
        geo[:, hit] = torch.stack([u[won], v[won], size[won]]).float()
        return BankRead(out.T.reshape(self.channels, h, w), ~hit.reshape(h, w), depth.reshape(h, w),
                        geo.reshape(3, h, w), seen, touched, seen_cells)

    def canvases(self, cells, offset=0):
        """Canvases for the stored cells `cells` [N]: the whole latent grid of each frame that wrote some of
        them (members: positions in `cells`, plus `offset`). A convolutional decoder sees a cell's neighbours;
        decoded among the cells it was encoded with, a cell looks as it did when written, not as whatever
        the reprojection happened to put beside it. A write's cells never change (later writes can only
        replace them), so which of them are still here names a canvas's content, and its decode can be
        reused from frame to frame."""
        if cells.numel() == 0:
            return []
        s = self.src[cells].long()
        member = torch.nonzero(s[:, 0] >= 0).squeeze(1)
        if self._lookup is None:
            # (write, row, col) packed: each write's grid has its own size
            keys = self.age.long() << 32 | self.src[:, 0].long() << 16 | self.src[:, 1].long()
            keys = torch.where(self.src[:, 0] >= 0, keys, torch.full_like(keys, -1))
            order = torch.argsort(keys)
            self._lookup = (keys[order], order)
        skeys, sidx = self._lookup
        ages = self.age[cells[member]].long()
        out = []
        for a in torch.unique(ages).tolist():
            m = member[ages == a]
            gh, gw = (int(x) for x in self.grids[a])
            r = torch.arange(gh * gw, device=self.device)
            want = a << 32 | (r // gw) << 16 | r % gw
            at = torch.searchsorted(skeys, want).clamp(max=skeys.numel() - 1)
            found = skeys[at] == want
            lat = torch.zeros(self.channels, gh * gw, device=self.device)
            lat[:, found] = self.lat[sidx[at[found]]].T.float()
            key = (self.token, a, hashlib.blake2b(found.cpu().numpy().tobytes(), digest_size=16).hexdigest())
            out.append(Canvas(lat.reshape(self.channels, gh, gw), found.reshape(gh, gw), m + offset,
                              (s[m, 0], s[m, 1]), key))
        return out

    def save(self, path, notes=None):
        """The bank at `path`; `notes`: JSON-able values kept beside it (what a model made of the memory)."""
        meta = {"format": FORMAT, "version": VERSION, "channels": str(self.channels), "cell": str(self.cell),
                "dtype": str(self.dtype).replace("torch.", "")}
        meta["writes"] = str(self.writes)
        if notes:
            meta["notes"] = json.dumps(notes)
        # write then rename: a crash or a full disk mid-save never leaves a torn memory file behind
        tensors = {k: getattr(self, k).contiguous().cpu() for k in FIELDS}
        tensors["cameras"] = self.cameras[:self.writes + 1].contiguous().cpu()
        tensors["grids"] = self.grids[:self.writes + 1].contiguous().cpu()
        atomic_write(str(path), lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path, device="cpu"):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError("no latent memory format tag")
                if meta.get("version") != VERSION:
                    raise ValueError(f"unsupported version {meta.get('version')!r}")
                tensors = {k: f.get_tensor(k) for k in FIELDS + ("cameras", "grids")}
            mem = cls(int(meta["channels"]), int(meta["cell"]), DTYPES[meta["dtype"]], device)
            mem.notes = json.loads(meta.get("notes", "{}"))
        except ValueError as e:
            raise ValueError(f"{path} is not a latent memory file: {e}") from None
        except Exception as e:  # safetensors reports a corrupt header with its own error types
            raise ValueError(f"{path} is not a latent memory file ({type(e).__name__}: {e})") from None
        keys, pos, lat, foot, age, src, tan, bits, side = (tensors[k] for k in FIELDS)
        n = keys.numel()
        if (keys.dtype != torch.int64 or pos.shape != (n, 3) or lat.shape != (n, mem.channels)
                or foot.shape != (n,) or age.shape != (n,) or age.dtype != torch.int32
                or src.shape != (n, 2) or src.dtype != torch.int16 or tan.shape != (n, 6) or tan.dtype != torch.float16
                or bits.shape != (n,) or bits.dtype != torch.int64 or side.shape != (n,) or side.dtype != torch.int8
                or lat.dtype != mem.dtype or (n > 1 and not bool((keys[1:] > keys[:-1]).all()))):
            raise ValueError(f"{path} is not a consistent latent memory file")
        mem.keys, mem.pos, mem.lat = keys.to(mem.device), pos.float().to(mem.device), lat.to(mem.device)
        mem.foot, mem.age, mem.src = foot.float().to(mem.device), age.to(mem.device), src.to(mem.device)
        mem.tan, mem.bits, mem.side = tan.to(mem.device), bits.to(mem.device), side.to(mem.device)
        cameras = tensors["cameras"]
        mem.writes = int(meta.get("writes", "0"))
        grids = tensors["grids"]
        if (cameras.shape != (mem.writes + 1, 3, 4) or cameras.dtype != torch.float64
                or grids.shape != (mem.writes + 1, 2) or grids.dtype != torch.int32):
            raise ValueError(f"{path} is not a consistent latent memory file (its cameras and grids)")
        mem.cameras, mem.grids = cameras.to(mem.device), grids.to(mem.device)
        mem._rebuild_blocks()
        return mem


class SceneMemory:
    """A static bank in world space plus one bank per moving object in that object's own space.

    Blender knows every object's transform on every frame, so an object's cells ride along with it: a
    crate that slides keeps its look, and the static world it uncovers is never overwritten by it.
    `poses` maps object id -> 4x4 object-to-world matrix at the frame being read or written.
    """

    def __init__(self, channels, cell, device="cpu"):
        self.channels, self.cell, self.device = channels, cell, device
        self.static = LatentMemory(channels, cell, device=device)
        self.objects = {}
        # what a model made of the memory and must find again with it (the synthesis model's surface charts):
        # JSON-able, saved with the static bank, so a resumed run and the next shot use the same
        self.notes = {}

    def _bank(self, oid):
        if oid == 0:
            return self.static
        if oid not in self.objects:
            self.objects[oid] = LatentMemory(self.channels, self.cell, device=self.device)
        return self.objects[oid]

    @staticmethod
    def _local_camera(pose, cam_to_world):
        # the camera as seen from the object's own space
        return torch.linalg.inv(torch.as_tensor(pose, dtype=torch.float64)) @ torch.as_tensor(cam_to_world, dtype=torch.float64)

    def write(self, latent, depth, K, cam_to_world, mask=None, ids=None, poses=None, maps=None):
        """Split the frame's cells by object id, each into its own bank. With the frame's maps (channels.Maps padded
        to whole cells, depth with sky at the memory's far distance), a cell goes into every bank that has pixels in
        it (by maps.ids), and where its pixels lie on two surfaces, once per surface: each copy at its own pixels'
        depth, owning only those; a moving object's cells at their pixels' surface addresses where the maps have
        them (maps.rest, maps.normal: its bank then follows its surface however it moves or deforms). Without pixel
        depth, whole cells by the cell's id (`ids`) at the cell's `depth`. Returns cells stored."""
        if mask is not None and not bool(mask.any()):
            return 0
        pixel_depth = None if maps is None else maps.depth
        pixel_ids = None if maps is None else maps.ids
        if pixel_depth is None:
            if ids is None or not poses:
                return self.static.write(latent, depth, K, cam_to_world, mask)
            stored = 0
            for oid in [0] + sorted(poses):
                sel = ids == oid if mask is None else (ids == oid) & mask
                if sel.any():
                    c2w = cam_to_world if oid == 0 else self._local_camera(poses[oid], cam_to_world)
                    stored += self._bank(oid).write(latent, depth, K, c2w, sel)
            return stored
        stored = 0
        for oid in [0] + sorted(poses or {}):
            member = torch.ones_like(pixel_depth, dtype=torch.bool) if pixel_ids is None else pixel_ids == oid
            if pixel_ids is None and oid != 0:
                continue
            if oid == 0 and pixel_ids is not None and _addressed(maps, moving=False):
                # the still world's pixel next to a moving object's is left out: the codec blurs the two into each
                # other there, and kept, a crate's rim would stay on the floor as a ghost once the crate has moved
                member = member & ~_near(~member & torch.isfinite(pixel_depth))
            # with surface addresses a cell is the plane of its own pixels' points, keyed on the surface; a moving
            # object's always so (its bank follows its surface), the still world's where its pixels have addresses
            # (sky has none: it keeps the cell at the depth the camera gives it)
            addressed = _addressed(maps, moving=oid != 0)
            c2w = cam_to_world if oid == 0 else self._local_camera(poses[oid], cam_to_world)
            # a surface that moves rigidly on this frame keeps the frame's camera in its bank's space: its cells then
            # read back crack-free; a deforming one is placed by its addresses alone
            camera = projection(K, c2w) if addressed and (oid == 0 or _rigid(maps, member, K, c2w)) else None
            has = torch.isfinite(maps.rest).all(0) if addressed else None
            wrote = 0
            for layer in depth_layers(pixel_depth, member, self.cell):
                # a cell on two faces (a wall and the floor) is stored once per face
                for part in (crease_layers(maps.normal, layer, self.cell) if addressed else (layer,)):
                    for by_address in ((True, False) if addressed else (False,)):
                        px = part if has is None else part & (has if by_address else ~has)
                        if not px.any():
                            continue
                        d = member_depth(pixel_depth, px, self.cell)
                        sel = torch.isfinite(d) if mask is None else torch.isfinite(d) & mask
                        if not sel.any():
                            continue
                        bank = self._bank(oid)
                        if by_address:
                            placed = torch.zeros_like(sel) if oid == 0 else None
                            wrote += bank.write_surface(latent, maps.rest, maps.normal, sel, px, same_write=wrote > 0,
                                                        camera=camera, placed=placed,
                                                        pixel_size=d / float(K[0][0]) if oid == 0 else None)
                            if oid == 0:
                                # a cell whose pixels give no plane (a strip one pixel high at a crease, a few
                                # pixels) is stored at its pixels' depth instead: left out, it is a hole the fill
                                # paints on every frame
                                left = sel & ~placed
                                if bool(left.any()):
                                    wrote += bank.write(latent, d, K, c2w, left, pixel_depth=pixel_depth,
                                                        pixel_mask=px, same_write=wrote > 0)
                        else:
                            wrote += bank.write(latent, d, K, c2w, sel, pixel_depth=pixel_depth, pixel_mask=px,
                                                same_write=wrote > 0)
            stored += wrote
        return stored

    def banks(self, poses, cam_to_world):
        """(object id, bank, camera in the bank's space) for the static world and each object with a pose."""
        out = [(0, self.static, cam_to_world)]
        for oid in sorted(poses or {}):
            if oid in self.objects:
                out.append((oid, self.objects[oid], self._local_camera(poses[oid], cam_to_world)))
        return out

    def read(self, K, cam_to_world, h, w, poses=None, ids=None, splats=True, maps=None):
        """Read every bank at its current pose and keep the nearest cell (MemoryRead). With the target frame's
        ids, a cell is only taken from the bank that owns it there (an object's unseen side is a hole, not a
        view through it). With the frame's maps (channels.Maps padded to whole cells) holding surface addresses,
        each moving object's pixels fetch what its bank holds at their own addresses (read_surface): visibility is
        the frame's own, and a limb or a rolling ball shows the same texture at the same point of its surface.
        With `splats`, every bank's cells as splats, each tagged with its object id."""
        first = self.static.read(K, cam_to_world, h, w, splats=splats)
        latent, hole, depth, geo = first.latent, first.hole, first.depth, first.geometry
        owner = torch.zeros(h, w, dtype=torch.long)
        if splats and maps is not None and maps.depth is not None:
            # the still world is drawn where the frame's own depth says: a cell whose surface lies off a pixel's
            # depth (an occluder's edge, the far side of what stood in front of it) is not drawn on that pixel
            first.splats = first.splats._replace(target=maps.depth.reshape(-1))
        parts = [(0, first.splats)]
        if splats and _addressed(maps, moving=False):
            # what projection leaves uncovered (a cell seen much closer than it was written reaches past a splat's
            # bounds) is looked up at the pixels' own addresses, so no stored content is missed
            found = self._uncovered(first, maps, h, w)
            if found is not None:
                hole = hole & ~found.hole
                latent = torch.where(found.hole[None], latent, found.latent.to(latent.dtype))
                depth = torch.where(found.hole, depth, found.depth)
                parts.append((0, found.splats))
        for oid, bank, cam in self.banks(poses, cam_to_world)[1:]:
            if _addressed(maps):
                r = self._read_surface(bank, oid, maps, h, w, splats)
            else:
                r = bank.read(K, cam, h, w, splats=splats)
            parts.append((oid, r.splats))
            nearer = ~r.hole & (r.depth < depth)
            if ids is not None:
                nearer = ~r.hole & (ids == oid)
            latent = torch.where(nearer[None], r.latent, latent)
            depth = torch.where(nearer, r.depth, depth)
            geo = torch.where(nearer[None], r.geometry, geo)
            hole = hole & ~nearer
            owner = torch.where(nearer, torch.full_like(owner, oid), owner)
        if ids is not None:
            wrong = ~hole & (owner != ids.long())
            hole = hole | wrong
            latent = torch.where(wrong[None], torch.zeros_like(latent), latent)
            depth = torch.where(wrong, torch.full_like(depth, float("inf")), depth)
        geo = torch.where(hole[None], torch.full_like(geo, float("nan")), geo)
        return MemoryRead(latent, hole, depth, geo, self._joined(parts) if splats else None)

    def write_chart(self, oid, latent, rest, normal, cells, pixels, camera):
        """Store a surface chart's cells into bank `oid` (0: the still world): `latent` [C, h, w] the chart's
        encoded texels, `rest` [3, H, W] and `normal` [3, H, W] their addresses (bank space), `cells` [h, w] the
        cells to store, `pixels` [H, W] the texels they own, `camera` [3, 4] the chart's projection. Returns cells
        stored."""
        return self._bank(oid).write_surface(latent, rest, normal, cells, pixels, camera=camera)

    def read_points(self, oid, points, normals, plane=None):
        """What the bank of object `oid` (0: the still world) holds at surface addresses `points` [N, 3] (in that
        bank's space) seen from the side of `normals` [N, 3]: Splats whose Pairs name the points as the pixels of
        a 1 x N image (draw them with a model's drawing), or None where the bank holds nothing. `plane`: (normal,
        offset) when the points all lie on one plane (read_surface)."""
        bank = self.static if oid == 0 else self.objects.get(oid)
        if bank is None or not len(bank):
            return None
        pi, ci, a, b = bank.read_surface(points, normals, plane)
        return _pair_splats(bank, oid, pi, ci, a, b, torch.ones(points.shape[0]))[0]

    def _uncovered(self, first, maps, h, w):
        """The still world read at the addresses of its pixels in the cells of the grid that no projected cell of
        `first` (its BankRead) reaches (BankRead, or None where there are none)."""
        H, W = maps.depth.shape
        mine = torch.isfinite(maps.rest).all(0)
        if maps.ids is not None:
            mine &= maps.ids == 0
        c = self.cell
        holes = first.hole.repeat_interleave(c, 0).repeat_interleave(c, 1)
        missing = mine & holes[:H, :W]
        if not bool(missing.any()):
            return None
        pix = torch.nonzero(missing.reshape(-1)).squeeze(1)
        pi, ci, a, b = self.static.read_surface(maps.rest.reshape(3, -1)[:, pix].T, maps.normal.reshape(3, -1)[:, pix].T)
        if not pi.numel():
            return None
        return self._surface_read(self.static, 0, maps, missing, (pix[pi], ci, a, b), h, w, True)

    def _read_surface(self, bank, oid, maps, h, w, splats):
        """A moving object's bank read at its pixels' surface addresses (BankRead on the latent grid, _surface_read),
        its cells found through the bank's hash of their footprints."""
        mine = torch.isfinite(maps.rest).all(0) & (maps.ids == oid)
        pix = torch.nonzero(mine.reshape(-1)).squeeze(1)
        pi, ci, a, b = bank.read_surface(maps.rest.reshape(3, -1)[:, pix].T, maps.normal.reshape(3, -1)[:, pix].T)
        return self._surface_read(bank, oid, maps, mine, (pix[pi], ci, a, b), h, w, splats)

    def _surface_read(self, bank, oid, maps, mine, found, h, w, splats):
        """A bank read at its pixels' surface addresses (BankRead on the latent grid): `mine` [H, W] the pixels that
        read it, `found` = (pixel, cell, a, b) the pairs that hold. A cell of the grid is known where most of its
        pixels of this bank found a stored cell, and takes the one found at its most central pixel; its depth is the
        frame's own. The splats are every stored cell some pixel found, with their Pairs."""
        c = self.cell
        H, W = mine.shape
        px, ci, a, b = found
        sp, used, k = _pair_splats(bank, oid, px, ci, a, b, maps.depth.reshape(-1))
        n = max(used.numel(), 1)
        # each grid cell takes the stored cell found at its most central pixel (ties: the earlier stored cell)
        y, x = px // W, px % W
        tcell = (y // c) * w + x // c
        centre = ((y % c).double() - (c - 1) / 2).abs() + ((x % c).double() - (c - 1) / 2).abs()
        best = torch.full((h * w,), n * (2 * c + 1), dtype=torch.long)
        best = best.scatter_reduce(0, tcell, centre.long() * n + k, "amin")
        best = torch.where(best < n * (2 * c + 1), best % n, torch.full_like(best, -1))
        hit = torch.zeros(H * W, dtype=torch.bool)
        hit[px] = True
        have = per_cell(hit.reshape(H, W) & mine, c).sum(-1).reshape(-1)
        need = per_cell(mine, c).sum(-1).reshape(-1)
        known = (have * 2 >= need) & (need > 0) & (best >= 0)
        latent = torch.zeros(h * w, self.channels, dtype=bank.dtype)
        latent[known] = bank.lat[used[best[known]]]
        depth = torch.where(known, member_depth(maps.depth, mine, c).reshape(-1), torch.full((h * w,), float("inf")))
        return BankRead(latent.T.reshape(self.channels, h, w), ~known.reshape(h, w), depth.reshape(h, w),
                        torch.full((3, h, w), float("nan")), sp if splats else None, int(ci.numel()), used)

    @staticmethod
    def _joined(parts):
        """The banks' splats as one Splats: each tagged with its bank's object id, canvas members and pairs
        renumbered."""
        out, pairs, n = [], [], 0
        for oid, sp in parts:
            k = sp.age.numel()
            out.append(sp._replace(bank=torch.full((k,), oid, dtype=torch.long, device=sp.age.device),
                                   canvases=[c._replace(members=c.members + n) for c in sp.canvases]))
            if sp.pairs is not None:
                pairs.append(sp.pairs._replace(splat=sp.pairs.splat + n))
            n += k
        targets = [sp.target for _, sp in parts if sp.target is not None]
        return Splats(*[torch.cat([getattr(p, f) for p in out]) for f in SPLAT_TENSORS],
                      [c for p in out for c in p.canvases],
                      Pairs(*[torch.cat(x) for x in zip(*pairs)]) if pairs else None,
                      target=targets[0] if targets else None)

    def nbytes(self):
        return self.static.nbytes() + sum(b.nbytes() for b in self.objects.values())

    def __len__(self):
        return len(self.static) + sum(len(b) for b in self.objects.values())

    def begin_segment(self):
        """Nothing to do: the memory keeps everything across segments (the bench's no-memory baseline does not)."""

    @staticmethod
    def _bank_path(path, oid):
        path = str(path)
        return path if oid == 0 else f"{path[:-len('.safetensors')]}.object{oid}.safetensors"

    def save(self, path):
        """The static bank at `path`, each object's bank beside it (<name>.object<id>.safetensors)."""
        self.static.save(self._bank_path(path, 0), notes=self.notes)
        for oid, bank in self.objects.items():
            bank.save(self._bank_path(path, oid))

    @classmethod
    def load(cls, path, device="cpu", object_ids=()):
        static = LatentMemory.load(str(path), device=device)
        mem = cls(static.channels, static.cell, device)
        mem.static = static
        mem.notes = static.notes
        for oid in object_ids:
            p = cls._bank_path(path, oid)
            if os.path.isfile(p):
                mem.objects[oid] = LatentMemory.load(p, device=device)
        return mem
