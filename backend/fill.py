"""Filling what no stored cell covers: push-pull pyramids that respect depth and object ids, on the latent grid
or on pixels. Deterministic and linear in the number of cells or pixels. Torch only.
"""
import torch
import torch.nn.functional as F

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
