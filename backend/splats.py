"""Drawing what a memory read saw: each stored cell's pixels put where it really lands in the target image.

Torch only. Used by the models (patch, compact, wan): the memory decides what is visible (memory.Splats), these
functions turn it into pixels with a per-pixel z-buffer, deterministic for any thread count. Models whose cells
are learned codes decode each stored frame's canvas (memory.Canvas) once and draw its cells from it
(`draw_canvases`, `CanvasCache`, `canvas_fill`).
"""
from collections import OrderedDict
from typing import Callable, Optional

import torch

from .memory import SURFACE_TOL, zbuffer

SPLAT_REACH = 3    # a splat covers at most 3 cells' width of target pixels each way (bounds a read's cost)
SPLAT_MARGIN = 0.25  # source pixels a splat reaches past its cell: closes cracks between neighbouring planes, but
                     # never reaches a neighbour's pixel centre when read back at the writing camera


def place_pixels(patches, image, geometry, depth, c):
    """`patches` [3*c*c, h, w] holds each read cell's pixels: put them where the cell really lands (at pixel
    precision, scaled by its size, from the read's geometry) instead of on the cell grid, nearest pixel first.
    Pixels no patch reaches keep `image`'s grid-aligned value, so magnified surfaces stay closed."""
    _, H, W = image.shape
    i, j = torch.nonzero(torch.isfinite(geometry[0]), as_tuple=True)
    if i.numel() == 0:
        return image
    u, v, size = geometry[0, i, j], geometry[1, i, j], geometry[2, i, j]
    off = torch.arange(c, dtype=torch.float32) - (c - 1) / 2
    # pixel centres of the patch: centre of the cell in pixels, plus offsets scaled by the cell's size
    X = (u * c + (c - 1) / 2)[:, None, None] + off[None, None, :] * size[:, None, None]
    Y = (v * c + (c - 1) / 2)[:, None, None] + off[None, :, None] * size[:, None, None]
    X, Y = torch.floor(X + 0.5).long(), torch.floor(Y + 0.5).long()
    X, Y = X.expand(-1, c, c), Y.expand(-1, c, c)
    ok = (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
    # only inside cells the memory filled: the model's own fill decides the rest
    ok &= torch.isfinite(geometry[0])[Y.clamp(0, H - 1) // c, X.clamp(0, W - 1) // c]
    cell_of = torch.arange(i.numel())[:, None, None].expand(-1, c, c)[ok]
    target = Y[ok] * W + X[ok]
    best = zbuffer(target, depth[i, j][cell_of].float(), H * W)
    hit = best < target.numel()
    cells = patches[:, i, j].float().reshape(3, c, c, -1).permute(3, 0, 1, 2)  # [N, 3, dy, dx]
    dy, dx = torch.nonzero(ok, as_tuple=True)[1:]
    colours = cells[cell_of, :, dy, dx]  # [M, 3]
    flat = image.reshape(3, -1).clone()
    flat[:, hit] = colours[best[hit]].T
    return flat.reshape(3, H, W)


def render_splats(patches, sp, H, W, pixel_ids=None):
    """Draw each splat's pixels (`patches` [N, 3, c, c]) as the small tilted plane it is (memory.Splats): every
    target pixel inside a splat's footprint maps back through the plane to the source pixel it shows (so a
    magnified surface stays closed and a slanted floor is not a row of upright cards), and a per-pixel
    z-buffer picks the nearest surface, on it the oldest cell, then the cell the pixel is most inside of.
    With `pixel_ids` [H, W] a pixel only shows splats of its own bank. Returns (image [3, H, W], covered [H, W],
    depth [H, W], inf where uncovered)."""
    N, _, c, _ = patches.shape
    image = torch.zeros(3, H * W)
    if N == 0:
        return image.reshape(3, H, W), torch.zeros(H, W, dtype=torch.bool), torch.full((H, W), float("inf"))
    J = sp.jac.float()
    det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
    good = det > 1e-6  # edge-on or seen from behind: nothing to draw
    inv = torch.stack([torch.stack([J[:, 1, 1], -J[:, 0, 1]], 1), torch.stack([-J[:, 1, 0], J[:, 0, 0]], 1)], 1)
    inv = inv / torch.where(good, det, torch.ones_like(det))[:, None, None]
    half = c / 2 + SPLAT_MARGIN
    reach = torch.stack([J[:, 0].abs().sum(1), J[:, 1].abs().sum(1)], 1) * half  # footprint half-size, x and y
    reach = torch.ceil(reach.clamp(max=SPLAT_REACH * c)).long().amax(1)
    # a few window sizes, so the loop below runs a handful of times rather than once per distinct reach
    levels = torch.tensor(sorted({int(c // 2 + 1), c, int(1.5 * c), 2 * c, SPLAT_REACH * c}))
    reach = levels[torch.searchsorted(levels, reach).clamp(max=levels.numel() - 1)]
    cx, cy = sp.centre[:, 0].float(), sp.centre[:, 1].float()
    px_all, splat_all, a_all, b_all = [], [], [], []
    # splats grouped by reach, so the common unit-scale ones do not pay for the few magnified ones
    for r in torch.unique(reach[good]).tolist():
        sel = torch.nonzero(good & (reach == r)).squeeze(1)
        off = torch.arange(-r, r + 1)
        X = torch.floor(cx[sel] + 0.5).long()[:, None, None] + off[None, None, :]
        Y = torch.floor(cy[sel] + 0.5).long()[:, None, None] + off[None, :, None]
        X, Y = X.expand(-1, 2 * r + 1, -1), Y.expand(-1, -1, 2 * r + 1)
        dx, dy = X - cx[sel, None, None], Y - cy[sel, None, None]
        m = inv[sel]
        a = m[:, 0, 0, None, None] * dx + m[:, 0, 1, None, None] * dy
        b = m[:, 1, 0, None, None] * dx + m[:, 1, 1, None, None] * dy
        ok = (a.abs() <= half) & (b.abs() <= half) & (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
        px_all.append((Y * W + X)[ok])
        splat_all.append(sel[:, None, None].expand_as(X)[ok])
        a_all.append(a[ok])
        b_all.append(b[ok])
    if not px_all:
        return image.reshape(3, H, W), torch.zeros(H, W, dtype=torch.bool), torch.full((H, W), float("inf"))
    px, k, a, b = torch.cat(px_all), torch.cat(splat_all), torch.cat(a_all), torch.cat(b_all)
    ia = torch.floor(a + (c - 1) / 2 + 0.5).long().clamp(0, c - 1)
    ib = torch.floor(b + (c - 1) / 2 + 0.5).long().clamp(0, c - 1)
    own = ((sp.bits[k] >> (ib * c + ia)) & 1).bool()  # only the pixels the stored cell owns
    if pixel_ids is not None:
        own &= pixel_ids.reshape(-1).long()[px] == sp.bank[k]
    px, k, a, b = px[own], k[own], a[own], b[own]
    z = sp.depth[k].float() + a * sp.slope[k, 0].float() + b * sp.slope[k, 1].float()
    front = z > 0
    px, k, a, b, z = px[front], k[front], a[front], b[front], z[front]
    # rank on one surface: oldest write first, then how far inside its own cell the pixel lies (0..15)
    inside = (torch.maximum(a.abs(), b.abs()) / half * 15).clamp(0, 15).long()
    best = zbuffer(px, z, H * W, sp.age[k].long() * 16 + inside, SURFACE_TOL)
    hit = best < px.numel()
    w = best[hit]
    image[:, hit] = _sample(patches, sp.bits, k[w], a[w], b[w], c).T
    depth = torch.full((H * W,), float("inf"))
    depth[hit] = z[w]
    return image.reshape(3, H, W), hit.reshape(H, W), depth.reshape(H, W)


def _sample(patches, bits, k, a, b, c):
    """Bilinear samples [M, 3] of the patches `k` at source offsets (a, b) from their centres, from owned
    pixels only: nearest-pixel sampling jumps as the camera moves by fractions of a pixel, which shows as
    shimmer from frame to frame. Exact where (a, b) falls on a pixel centre (the writing camera)."""
    fa, fb = (a + (c - 1) / 2).clamp(0, c - 1), (b + (c - 1) / 2).clamp(0, c - 1)
    x0, y0 = fa.floor().long().clamp(max=c - 2), fb.floor().long().clamp(max=c - 2)
    wx, wy = fa - x0, fb - y0
    out = torch.zeros(k.numel(), 3)
    total = torch.zeros(k.numel())
    mine = bits[k]
    for dx, dy, wgt in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
        xs, ys = x0 + dx, y0 + dy
        wgt = wgt * ((mine >> (ys * c + xs)) & 1).float()
        out += wgt[:, None] * patches[k, :, ys, xs].float()
        total += wgt
    return out / total.clamp_min(1e-12)[:, None]


def canvas_fill(latent, known):
    """A canvas's missing cells take their nearest stored neighbour's code (as replicate padding does), not
    an average of codes: averaged codes decode to texture that was never there."""
    lat, have = latent.clone(), known.clone()
    h, w = have.shape
    while not bool(have.all()):
        grown = have.clone()
        # from below, above, the right, the left; a cell takes the first neighbour it finds, in that order
        for src_rows, dst_rows, src_cols, dst_cols in ((slice(1, h), slice(0, h - 1), slice(None), slice(None)),
                                                       (slice(0, h - 1), slice(1, h), slice(None), slice(None)),
                                                       (slice(None), slice(None), slice(1, w), slice(0, w - 1)),
                                                       (slice(None), slice(None), slice(0, w - 1), slice(1, w))):
            take = torch.zeros_like(have)
            take[dst_rows, dst_cols] = have[src_rows, src_cols] & ~grown[dst_rows, dst_cols]
            moved = torch.zeros_like(lat)
            moved[:, dst_rows, dst_cols] = lat[:, src_rows, src_cols]
            lat = torch.where(take[None], moved, lat)
            grown |= take
        have = grown
    return lat


class CanvasCache:
    """Decoded canvases by their content key (memory.Canvas.key), most recently used last: at most `items` of
    them (None: any number) and `nbytes` in all, the oldest dropped first; the newest is always kept."""

    def __init__(self, nbytes: int, items: Optional[int] = None):
        self.nbytes, self.items = nbytes, items
        self._hits = OrderedDict()

    def get(self, key, decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The pixels kept for `key`, or decode() once and keep them."""
        hit = self._hits.pop(key, None)
        if hit is None:
            hit = decode()
        self._hits[key] = hit
        while len(self._hits) > 1 and ((self.items is not None and len(self._hits) > self.items) or sum(
                p.numel() * p.element_size() for p in self._hits.values()) > self.nbytes):
            self._hits.popitem(last=False)
        return hit

    def clear(self) -> None:
        self._hits.clear()

    def __len__(self) -> int:
        return len(self._hits)


def draw_canvases(sp, canvas_patches: Callable, H: int, W: int, pixel_ids: Optional[torch.Tensor] = None,
                  c: int = 8):
    """A read's splats (memory.Splats, on the CPU) drawn at pixel precision, each cell's pixels taken from its
    source canvas as the model decoded it: canvas_patches(canvas) -> [3*c*c, h, w]. A cell without a canvas
    (written at another resolution) is not drawn. Returns render_splats' (image [3, H, W], covered [H, W],
    depth [H, W])."""
    patches = torch.zeros(sp.age.numel(), 3, c, c)
    have = torch.zeros(sp.age.numel(), dtype=torch.bool)
    for cv in sp.canvases:
        p = canvas_patches(cv)[:, cv.source[0], cv.source[1]].float()
        patches[cv.members] = p.T.reshape(-1, 3, c, c)
        have[cv.members] = True
    sp = sp._replace(jac=torch.where(have[:, None, None], sp.jac, torch.zeros_like(sp.jac)))
    return render_splats(patches, sp, H, W, pixel_ids)
