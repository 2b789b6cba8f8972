"""Drawing what a memory read saw: each stored cell's pixels put where it really lands in the target image.

Torch only. Used by the models (patch, compact, wan): the memory decides what is visible (memory.Splats), these
functions turn it into pixels with a per-pixel z-buffer, deterministic for any thread count. Models whose cells
are learned codes decode each stored frame's canvas (memory.Canvas) once and draw its cells from it
(`draw_canvases`, `CanvasCache`, `canvas_fill`).
"""
from collections import OrderedDict
from typing import Callable, Optional

import torch

from .memory import DEPTH_MATCH, SPLAT_MARGIN, SURFACE_TOL, Pairs, footprints, zbuffer



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
    z-buffer picks the nearest surface, on it the oldest cell, then the cell the pixel is most inside of, then
    the smaller reach and the earlier splat. With `pixel_ids` [H, W] a pixel only shows splats of its own bank.
    Returns (image [3, H, W], covered [H, W], depth [H, W], inf where uncovered)."""
    return draw_splats(patches, sp, H, W, pixel_ids).result()


class Drawing:
    """A read's splats as render_splats draws them, kept with what drawing the same camera's next read needs:
    every candidate (target pixel, splat, source offsets, depth, rank inside the cell) that passed the tests."""

    def __init__(self, sp, patches, candidates, order, image, depth, size, pixel_ids):
        self.sp, self.patches, self.candidates, self.order = sp, patches, candidates, order
        self.image, self.depth, self.size, self.pixel_ids = image, depth, size, pixel_ids

    def result(self):
        """(image [3, H, W], covered [H, W], depth [H, W]), new tensors."""
        H, W = self.size
        return (self.image.reshape(3, H, W).clone(), torch.isfinite(self.depth).reshape(H, W),
                self.depth.reshape(H, W).clone())


def draw_splats(patches, sp, H, W, pixel_ids=None) -> Drawing:
    """render_splats, keeping the Drawing."""
    candidates, order = _candidates(sp, patches.shape[-1], H, W, pixel_ids)
    image, depth = torch.zeros(3, H * W), torch.full((H * W,), float("inf"))
    _resolve(candidates, sp, patches, order, image, depth)
    return Drawing(sp, patches, candidates, order, image, depth, (H, W), pixel_ids)


# splat fields that decide where and how a splat draws: equal in two reads of one camera, the splat draws the same
_DRAWN_FIELDS = ("centre", "jac", "depth", "slope", "age", "bits", "bank", "cell")


def redraw(before: "Drawing | None", patches, sp, H, W, pixel_ids=None) -> Drawing:
    """`sp` drawn exactly as draw_splats draws it, from `before`, a drawing of an earlier read of the same camera
    (the read of a frame's completion, before its new cells were written): only the pixels that splats new,
    gone or changed (their fields or their decoded pixels) reach are resolved again. Falls back to drawing all
    when little is shared (another camera)."""
    if before is None or before.size != (H, W) or before.pixel_ids is not pixel_ids or sp.cell is None \
            or before.sp.cell is None or patches.shape[1:] != before.patches.shape[1:]:
        return draw_splats(patches, sp, H, W, pixel_ids)
    old, N1, N2 = before.sp, before.sp.age.numel(), sp.age.numel()
    ident = torch.cat([torch.stack([old.bank.long(), old.cell, old.age.long()], 1),
                       torch.stack([sp.bank.long(), sp.cell, sp.age.long()], 1)])
    _, group = torch.unique(ident, dim=0, return_inverse=True)
    old_of = torch.full((int(group.max()) + 1 if group.numel() else 0,), -1, dtype=torch.long)
    old_of[group[:N1]] = torch.arange(N1)
    was = old_of[group[N1:]]  # for each splat of `sp`, the same stored cell in `before` (-1: none)
    new_idx = torch.nonzero(was >= 0).squeeze(1)
    same = torch.zeros(N2, dtype=torch.bool)
    if new_idx.numel():
        o = was[new_idx]
        eq = (patches[new_idx] == before.patches[o]).flatten(1).all(1)
        for f in _DRAWN_FIELDS:
            a, b = getattr(sp, f)[new_idx], getattr(old, f)[o]
            eq &= (a == b).reshape(new_idx.numel(), -1).all(1)
        same[new_idx] = eq
    if int(same.sum()) < N2 // 2:
        return draw_splats(patches, sp, H, W, pixel_ids)
    now = torch.full((N1,), -1, dtype=torch.long)  # each old splat's place in `sp`, where it draws the same
    now[was[same]] = torch.nonzero(same).squeeze(1)
    added, order = _candidates(sp, patches.shape[-1], H, W, pixel_ids, only=~same)
    px, k, a, b, z, inside = before.candidates
    stays = now[k] >= 0
    touched = torch.zeros(H * W, dtype=torch.bool)
    touched[px[~stays]] = True
    touched[added[0]] = True
    kept = torch.nonzero(stays).squeeze(1)
    candidates = tuple(torch.cat([x[kept] if j != 1 else now[x[kept]], y]) for j, (x, y)
                       in enumerate(zip(before.candidates, added)))
    image, depth = before.image.clone(), before.depth.clone()
    image[:, touched] = 0
    depth[touched] = float("inf")
    at = torch.nonzero(touched[candidates[0]]).squeeze(1)
    _resolve(tuple(x[at] for x in candidates), sp, patches, order, image, depth)
    return Drawing(sp, patches, candidates, order, image, depth, (H, W), pixel_ids)


def coverage(sp, c, H, W, pixel_ids=None) -> torch.Tensor:
    """[H, W] bool: the pixels a read's splats would draw (render_splats' `covered`), without decoding a thing."""
    covered = torch.zeros(H * W, dtype=torch.bool)
    (px, *_), _ = _candidates(sp, c, H, W, pixel_ids)
    covered[px] = True
    return covered.reshape(H, W)


def _candidates(sp, c, H, W, pixel_ids=None, only=None):
    """Every (pixel, splat) pair that can show: inside the footprint (_footprints) or, for a cell read by surface
    address, a pixel whose address falls in it (sp.pairs); a pixel the stored cell owns, of the pixel's own bank
    (`pixel_ids`), in front of the camera. Returns ((pixel, splat, a, b, depth, inside rank 0..15) [M] each,
    order [N] of the splats); `only` [N] bool: pairs of these splats alone."""
    half = c / 2 + SPLAT_MARGIN
    parts, order = [], None
    found = [(px, k, a, b, None, order) for px, k, a, b, order in footprints(sp, c, H, W, only)]
    if sp.pairs is not None:
        take = torch.ones_like(sp.pairs.pixel, dtype=torch.bool) if only is None else only[sp.pairs.splat]
        p = Pairs(*(x[take] for x in sp.pairs))
        found.append((p.pixel, p.splat, p.a, p.b, p.depth, found[0][5]))
    for px, k, a, b, z, order in found:
        ia = torch.floor(a + (c - 1) / 2 + 0.5).long().clamp(0, c - 1)
        ib = torch.floor(b + (c - 1) / 2 + 0.5).long().clamp(0, c - 1)
        keep = ((sp.bits[k] >> (ib * c + ia)) & 1).bool()  # only the pixels the stored cell owns
        if pixel_ids is not None:
            keep &= pixel_ids.reshape(-1).long()[px] == sp.bank[k]
        if z is None:
            z = sp.depth[k].float() + a * sp.slope[k, 0].float() + b * sp.slope[k, 1].float()
            if sp.target is not None:  # the frame's own depth there: a still cell off it is another surface
                t = sp.target[px]
                keep &= ~torch.isfinite(t) | (sp.bank[k] != 0) | ((z - t).abs() <= DEPTH_MATCH * t)
        keep &= z > 0
        i = torch.nonzero(keep).squeeze(1)
        px, k, a, b, z = px[i], k[i], a[i], b[i], z[i]
        # rank on one surface: oldest write first, then how far inside its own cell the pixel lies (0..15), then
        # the splat's order (a splat reaches a pixel once, so the rank names one candidate per pixel)
        inside = (torch.maximum(a.abs(), b.abs()) / half * 15).clamp(0, 15).long()
        parts.append((px, k, a, b, z, inside))
    return tuple(torch.cat(x) for x in zip(*parts)), order


def _resolve(candidates, sp, patches, order, image, depth):
    """The per-pixel z-buffer over `candidates`: each pixel they reach gets its winner's colour in `image`
    [3, H*W] and depth in `depth` [H*W]."""
    px, k, a, b, z, inside = candidates
    if not px.numel():
        return
    size = depth.numel()
    rank = (sp.age[k].long() * 16 + inside) * (order.max() + 1) + order[k]
    zmin = torch.full((size,), float("inf")).scatter_reduce(0, px, z, "amin")
    near = z <= zmin[px] * (1 + SURFACE_TOL)
    best = torch.full((size,), torch.iinfo(torch.int64).max).scatter_reduce(0, px[near], rank[near], "amin")
    w = torch.nonzero(near & (rank == best[px])).squeeze(1)
    image[:, px[w]] = _sample(patches, sp.bits, k[w], a[w], b[w], patches.shape[-1]).T
    depth[px[w]] = z[w]


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
    flat = patches.reshape(-1)
    base = (k * (3 * c * c))[:, None] + torch.arange(3) * (c * c)  # [M, 3]: each channel's first pixel
    for dx, dy, wgt in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
        at = (y0 + dy) * c + (x0 + dx)
        wgt = wgt * ((mine >> at) & 1).float()
        out += wgt[:, None] * flat[base + at[:, None]].float()
        total += wgt
    return out / total.clamp_min(1e-12)[:, None]


def canvas_fill(latent, known):
    """A canvas's missing cells take their nearest stored neighbour's code (as replicate padding does), not
    an average of codes: averaged codes decode to texture that was never there. Nearest in steps between
    neighbouring cells; of the neighbours one step nearer, a cell takes the one below, above, to the right or to
    the left, in that order (what growing the stored cells one ring at a time gives)."""
    if bool(known.all()) or not bool(known.any()):
        return latent
    h, w = known.shape
    d = grid_distance(known)
    far = torch.full((h + 2, w + 2), float("inf"))
    far[1:-1, 1:-1] = d
    index = torch.full((h + 2, w + 2), -1, dtype=torch.long)
    index[1:-1, 1:-1] = torch.arange(h * w).reshape(h, w)
    src = index[1:-1, 1:-1].clone()
    chosen = known.clone()
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        take = ~chosen & (far[1 + dr:h + 1 + dr, 1 + dc:w + 1 + dc] == d - 1)
        src = torch.where(take, index[1 + dr:h + 1 + dr, 1 + dc:w + 1 + dc], src)
        chosen |= take
    src = src.reshape(-1)
    steps = int(d.max())
    while steps > 0:  # each cell's chain of neighbours, followed by doubling, ends at the stored cell it copies
        src = src[src]
        steps //= 2
    return latent.reshape(latent.shape[0], -1)[:, src].reshape(latent.shape)


def grid_distance(known):
    """[h, w] bool -> [h, w] float32: steps between neighbouring cells (up, down, left, right) to the nearest True
    cell, exact (inf where there is none): along each row, then two sweeps along the columns."""
    h, w = known.shape
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    inf = torch.full_like(cols, float("inf"))
    before = torch.where(known, cols, -inf).cummax(1).values
    after = torch.where(known, cols, inf).flip(1).cummin(1).values.flip(1)
    g = torch.minimum(cols - before, after - cols)
    for r in range(1, h):
        g[r] = torch.minimum(g[r], g[r - 1] + 1)
    for r in range(h - 2, -1, -1):
        g[r] = torch.minimum(g[r], g[r + 1] + 1)
    return g


class DecodedCanvas:
    """A canvas's decoded pixels for the cells it holds only: `cells` [n, 3*c*c] float16 (below half a grey level),
    `row` [h, w] int32 each held cell's row in `cells` (-1 elsewhere). A later frame's canvas holds only the cells
    that frame added, so it costs what it holds, not a whole frame."""

    def __init__(self, pixels: torch.Tensor, known: torch.Tensor):
        """pixels [3*c*c, h, w] (a decode, pixel-unshuffled), known [h, w] the cells the canvas holds."""
        known = known.cpu()
        self.cells = pixels.cpu()[:, known].T.half().contiguous()
        self.row = torch.full(known.shape, -1, dtype=torch.int32)
        self.row[known] = torch.arange(self.cells.shape[0], dtype=torch.int32)

    def take(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[n, 3*c*c] float16 pixels of the held cells at (rows, cols)."""
        return self.cells[self.row[rows.long(), cols.long()].long()]

    def nbytes(self) -> int:
        return self.cells.numel() * self.cells.element_size() + self.row.numel() * self.row.element_size()


class CanvasCache:
    """Decoded canvases (DecodedCanvas) by their content key (memory.Canvas.key), most recently used last, the
    oldest dropped first; the newest is always kept. Bound: `frames` whole frames of the size seen (every cell of
    the grid held), or `nbytes` in all."""

    def __init__(self, frames: Optional[int] = None, nbytes: Optional[int] = None):
        if (frames is None) == (nbytes is None):
            raise ValueError("CanvasCache needs either frames or nbytes")
        self.frames, self.limit = frames, nbytes
        self.nbytes = 0
        self._hits = OrderedDict()

    def get(self, cv, decode: Callable[[], torch.Tensor]) -> DecodedCanvas:
        """The canvas `cv` (memory.Canvas) as decoded: what is kept for its key, or decode() -> [3*c*c, h, w]
        once, kept for the cells it holds."""
        hit = self._hits.pop(cv.key, None)
        if hit is None:
            hit = DecodedCanvas(decode(), cv.known)
            self.nbytes += hit.nbytes()
            if self.limit is None:
                h, w = hit.row.shape
                self.limit = self.frames * h * w * (hit.cells.shape[1] * hit.cells.element_size() + hit.row.element_size())
        self._hits[cv.key] = hit
        while len(self._hits) > 1 and self.nbytes > self.limit:
            self.nbytes -= self._hits.popitem(last=False)[1].nbytes()
        return hit

    def clear(self) -> None:
        self._hits.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._hits)


def draw_canvases(sp, canvas_patches: Callable, H: int, W: int, pixel_ids: Optional[torch.Tensor] = None,
                  c: int = 8):
    """A read's splats (memory.Splats, on the CPU) drawn at pixel precision, each cell's pixels taken from its
    source canvas as the model decoded it: canvas_patches(canvas) -> DecodedCanvas. A cell without a canvas
    (written at another resolution) is not drawn. Returns render_splats' (image [3, H, W], covered [H, W],
    depth [H, W])."""
    patches, sp = canvas_pixels(sp, canvas_patches, c)
    return render_splats(patches, sp, H, W, pixel_ids)


def canvas_pixels(sp, canvas_patches: Callable, c: int = 8) -> tuple:
    """(patches [N, 3, c, c], splats) for drawing a read: each cell's pixels from its source canvas
    (canvas_patches(canvas) -> DecodedCanvas); a cell without one gets no footprint (its jac zeroed)."""
    patches = torch.zeros(sp.age.numel(), 3 * c * c)
    have = torch.zeros(sp.age.numel(), dtype=torch.bool)
    for cv in sp.canvases:
        patches[cv.members] = canvas_patches(cv).take(*cv.source).float()
        have[cv.members] = True
    sp = sp._replace(jac=torch.where(have[:, None, None], sp.jac, torch.zeros_like(sp.jac)))
    if sp.pairs is not None:
        sp = sp._replace(pairs=Pairs(*(x[have[sp.pairs.splat]] for x in sp.pairs)))
    return patches.reshape(-1, 3, c, c), sp
