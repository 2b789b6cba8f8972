"""Model registry. A model turns pixels into a latent grid and back, and fills the holes of a memory read.

Models live apart from the segment loop (like diffusers' models vs pipelines): the loop only ever calls
encode / decode / fill, so a trained or diffusion model plugs in without touching the memory or protocol.
"""
import json
import os

import torch
import torch.nn.functional as F

MODELS_DIR = os.environ.get("MIRAGE_MODELS_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


class ModelError(RuntimeError):
    """A model that cannot be used; one line for the user."""


class LatentModel:
    """The interface every registered model implements."""
    name = ""
    cell = 8          # pixels per latent cell along each side
    channels = 0      # latent channels per cell
    uses_context = False  # True: fill and decode want the read's splats (memory.Splats) as `context`

    def encode(self, image):
        """[3, H, W] float in 0..1 -> [C, H/cell, W/cell]."""
        raise NotImplementedError

    def decode(self, latent, geometry=None, depth=None, context=None, pixel_ids=None):
        """[C, h, w] -> [3, h*cell, w*cell] float in 0..1. `geometry` ([3, h, w]: where each cell read from
        the memory really lands, u, v and size in cells; nan elsewhere) and its `depth` let a model place
        pixels with sub-cell precision; `context` (the read's memory.Splats: every cell the read saw, as a
        tilted plane, with its source canvases) lets it draw them pixel by pixel, each pixel only from its
        own bank (`pixel_ids`). A model may ignore them."""
        raise NotImplementedError

    def fill(self, latent, hole, depth, generator=None, target_depth=None, ids=None, context=None, pixel_ids=None,
             pixel_target=None, pixel_prefill=None):
        """Complete a memory read: [C, h, w] with hole [h, w] (True = unknown) and the read's depth [h, w]
        (inf in holes) -> full [C, h, w]. With the scene's geometry also the target frame's per-cell depth
        (inf = sky) and object ids (0 = static world; known cells always show their own id's memory); with
        splats (`context`) also the frame's pixel ids and pixel depth (`pixel_target`, inf = sky), and
        `pixel_prefill(drawn, covered) -> (drawn, covered)`: pixels the caller knows better than a fill would
        (a moving object's never-seen faces, from its material), to keep and to fill the rest from."""
        raise NotImplementedError


def push_pull(x, hole, weight=None):
    """Fill holes from the nearest known values at coarser scales (a mask-weighted image pyramid).

    `weight` [h, w] biases which known cells a hole borrows from. Deterministic and O(h*w); known cells
    are returned unchanged.
    """
    valid = (~hole).to(x.dtype)[None]
    if weight is not None:
        valid = valid * weight.to(x.dtype)[None]
    if valid.sum() == 0:
        return torch.full_like(x, 0.5) if x.dtype.is_floating_point else x
    levels = [(x * valid, valid)]
    while min(levels[-1][1].shape[-2:]) > 1:
        s, w = levels[-1]
        s = F.avg_pool2d(s[None], 2, ceil_mode=True)[0]
        w = F.avg_pool2d(w[None], 2, ceil_mode=True)[0]
        levels.append((s, w))
    s, w = levels[-1]
    filled = s / w.clamp_min(1e-8)
    for s, w in reversed(levels[:-1]):
        up = F.interpolate(filled[None], size=s.shape[-2:], mode="bilinear", align_corners=False)[0]
        known = w > 1e-6
        filled = torch.where(known, s / w.clamp_min(1e-8), up)
        # partially known coarse cells blend toward the coarse guess so fills have no hard seams
        filled = torch.where(known & (w < 1), w * filled + (1 - w) * up, filled)
    return torch.where(hole[None], filled, x)


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
    from .memory import zbuffer
    best = zbuffer(target, depth[i, j][cell_of].float(), H * W)
    hit = best < target.numel()
    cells = patches[:, i, j].float().reshape(3, c, c, -1).permute(3, 0, 1, 2)  # [N, 3, dy, dx]
    dy, dx = torch.nonzero(ok, as_tuple=True)[1:]
    colours = cells[cell_of, :, dy, dx]  # [M, 3]
    flat = image.reshape(3, -1).clone()
    flat[:, hit] = colours[best[hit]].T
    return flat.reshape(3, H, W)


SPLAT_REACH = 3    # a splat covers at most 3 cells' width of target pixels each way (bounds a read's cost)
SPLAT_MARGIN = 0.25  # source pixels a splat reaches past its cell: closes cracks between neighbouring planes, but
                     # never reaches a neighbour's pixel centre when read back at the writing camera


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
    from .memory import SURFACE_TOL, zbuffer
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


def pixel_fill(image, covered, depth, target_depth=None, pixel_ids=None):
    """Fill every pixel no splat drew, at pixel level: from drawn pixels at a similar depth and of the same
    object (the floor a crate uncovered fills from floor pixels, never from the crate beside it, which a
    fill over whole cells cannot keep apart). `target_depth` [H, W] is the scene's depth (inf = sky).
    The fill runs on 2 x 2 blocks (a push-pull fill is smooth; a quarter of the work) and drawn pixels
    stay exactly as drawn."""
    H, W = covered.shape
    if H % 2 or W % 2:
        return torch.where(covered[None], image, depth_aware_fill(image, ~covered, depth, target_depth, pixel_ids))
    w = covered.float()[None, None]
    n = F.avg_pool2d(w, 2)[0, 0]
    small = F.avg_pool2d(image[None] * w, 2)[0] / n.clamp_min(1e-8)
    near = -F.max_pool2d(-torch.where(covered, depth, torch.full_like(depth, float("inf")))[None, None], 2)[0, 0]
    target = None if target_depth is None else -F.max_pool2d(-target_depth[None, None].float(), 2)[0, 0]
    ids = None if pixel_ids is None else pixel_ids[::2, ::2]
    filled = depth_aware_fill(small, n == 0, near, target, ids)
    up = F.interpolate(filled[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    return torch.where(covered[None], image, up)


class PatchModel(LatentModel):
    """Classical baseline: an exact space-to-depth latent (each cell holds its cell x cell RGB patch)
    with push-pull hole filling. No learned weights; it reprojects what was seen and smoothly
    extends it into disocclusions. It never invents texture, which is what a trained model adds."""

    uses_context = True

    def __init__(self, name, cell=4, device="cpu", emit=None):
        self.name = name
        self.cell = cell
        self.channels = 3 * cell * cell

    def encode(self, image):
        return F.pixel_unshuffle(image[None], self.cell)[0]

    def decode(self, latent, geometry=None, depth=None, context=None, pixel_ids=None):
        image = F.pixel_shuffle(latent[None].float(), self.cell)[0]
        if context is not None:
            c = self.cell
            drawn, covered, _ = render_splats(self.patches(context), context, *image.shape[-2:], pixel_ids)
            image = torch.where(covered[None], drawn, image)
        elif geometry is not None and depth is not None:
            image = place_pixels(latent, image, geometry, depth, self.cell)
        return image.clamp(0, 1)

    def patches(self, sp):
        return sp.lat.float().reshape(-1, 3, self.cell, self.cell)

    def fill(self, latent, hole, depth, generator=None, target_depth=None, ids=None, context=None, pixel_ids=None,
             pixel_target=None, pixel_prefill=None):
        if context is None:
            return depth_aware_fill(latent.float(), hole, depth, target_depth, ids)
        c = self.cell
        H, W = latent.shape[-2] * c, latent.shape[-1] * c
        drawn, covered, zd = render_splats(self.patches(context), context, H, W, pixel_ids)
        if pixel_prefill is not None:
            drawn, covered = pixel_prefill(drawn, covered)
        filled = F.pixel_unshuffle(pixel_fill(drawn, covered, zd, pixel_target, pixel_ids)[None], c)[0]
        return torch.where(hole[None], filled, latent.float())


def depth_aware_fill(x, hole, depth, target_depth=None, ids=None, far_ratio=10.0, bins=8):
    """Push-pull that respects depth. Where the target depth is known (the scene's geometry), a hole
    borrows from known cells at a similar depth and of the same object: a floor patch the crate uncovered
    fills from the floor around it, not from the wall behind, and the crate's new side from the crate;
    sky holes fill from sky. Without it, holes borrow from the far side of an edge, since a disocclusion
    shows what was behind the foreground."""
    known = torch.isfinite(depth) & ~hole
    if not known.any():
        return push_pull(x, hole)
    med = depth[known].median()
    if target_depth is None:
        # prefer farther cells, capped so one far cell cannot outvote a whole neighbourhood
        prefer = torch.where(known, (depth / med).clamp(0.25, 2.0) ** 4, torch.zeros_like(depth))
        return push_pull(x, hole, prefer)

    def is_sky(d):
        return ~(torch.isfinite(d) & (d <= far_ratio * med))

    out = x
    geo_src, geo_dst = known & ~is_sky(depth), hole & ~is_sky(target_depth)
    sky_src, sky_dst = known & is_sky(depth), hole & is_sky(target_depth)
    if sky_dst.any():
        out = torch.where(sky_dst[None], push_pull(x, ~sky_src) if sky_src.any() else push_pull(x, hole), out)
    groups = [(geo_src, geo_dst)]
    if ids is not None:
        groups = [(geo_src & (ids == k), geo_dst & (ids == k)) for k in torch.unique(ids[geo_dst]).tolist()]
    for src, dst in groups:
        if not dst.any():
            continue
        out = torch.where(dst[None], _banded_fill(x, depth, target_depth, src if src.any() else geo_src,
                                                  dst, known, bins), out)
    return out


def _banded_fill(x, depth, target_depth, src, dst, known, bins):
    """Fill dst from src, each hole from the known cells nearest its own depth."""
    if not src.any():
        src = known
    logd = torch.log(depth.clamp_min(1e-6))
    logt = torch.log(target_depth.clamp_min(1e-6))
    lo = float(torch.minimum(logd[src].min(), logt[dst].min()))
    hi = float(torch.maximum(logd[src].max(), logt[dst].max()))
    step = max((hi - lo) / (bins - 1), 1e-3)
    # one pyramid per depth band, each weighting known cells by closeness to the band; a hole then
    # blends the two bands around its own depth (the floor of 1e-4 keeps every band defined)
    fills = []
    for b in range(bins):
        w = torch.exp(-((logd - (lo + b * step)) / step) ** 2) + 1e-4
        fills.append(push_pull(x, ~src, torch.where(src, w, torch.zeros_like(w))))
    stack = torch.stack(fills)  # [bins, C, h, w]
    pos = ((logt - lo) / step).clamp(0, bins - 1)
    i0 = pos.floor().long().clamp(max=bins - 2)
    frac = (pos - i0)[None]

    def band(i):
        return stack.gather(0, i[None, None].expand(1, x.shape[0], *i.shape))[0]

    return band(i0) * (1 - frac) + band(i0 + 1) * frac


def _learned(name, emit=None, **args):
    from .learned import LearnedModel  # imported on use: learned.py builds on the classes above
    return LearnedModel(name, **args)


def _wan(name, **args):
    from .wan import WanVACEModel  # imported on use: diffusers loads only for a Wan model
    return WanVACEModel(name, **args)


_KINDS = {"patch": PatchModel, "learned": _learned, "wan_vace": _wan}
# kinds that run on the job's device and report downloads through the protocol
def available():
    """Names of the models shipped in models/ (each a folder with a model.json)."""
    if not os.path.isdir(MODELS_DIR):
        return []
    return sorted(d for d in os.listdir(MODELS_DIR) if os.path.isfile(os.path.join(MODELS_DIR, d, "model.json")))


def load(name, device="cpu", emit=None):
    folder = os.path.join(MODELS_DIR, name)
    cfg_path = os.path.join(folder, "model.json")
    if not os.path.isfile(cfg_path):
        raise ModelError(f"unknown model '{name}' (available: {', '.join(available()) or 'none'})")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model '{name}' has an unreadable model.json: {e}") from None
    if "alias" in cfg and isinstance(cfg["alias"], str) and cfg["alias"] != name:
        return load(cfg["alias"], device, emit)  # 'builtin' names whichever shipped model is the default
    kind = _KINDS.get(cfg.get("kind"))
    if kind is None:
        raise ModelError(f"model '{name}' has unknown kind {cfg.get('kind')!r}")
    # every kind gets the device to run on, and `emit` for progress it reports itself (downloads)
    return kind(name, device=device, emit=emit, **cfg.get("args", {}))
