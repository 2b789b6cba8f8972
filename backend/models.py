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

    def encode(self, image):
        """[3, H, W] float in 0..1 -> [C, H/cell, W/cell]."""
        raise NotImplementedError

    def decode(self, latent):
        """[C, h, w] -> [3, h*cell, w*cell] float in 0..1."""
        raise NotImplementedError

    def fill(self, latent, hole, depth, generator=None):
        """Complete a memory read: [C, h, w] with hole [h, w] (True = unknown) and the read's depth [h, w]
        (inf in holes) -> full [C, h, w]."""
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


class PatchModel(LatentModel):
    """Classical baseline: an exact space-to-depth latent (each cell holds its cell x cell RGB patch)
    with push-pull hole filling. No learned weights; it reprojects what was seen and smoothly
    extends it into disocclusions. It never invents texture, which is what a trained model adds."""

    def __init__(self, name, cell=4):
        self.name = name
        self.cell = cell
        self.channels = 3 * cell * cell

    def encode(self, image):
        return F.pixel_unshuffle(image[None], self.cell)[0]

    def decode(self, latent):
        return F.pixel_shuffle(latent[None].float(), self.cell)[0].clamp(0, 1)

    def fill(self, latent, hole, depth, generator=None, target_depth=None):
        return depth_aware_fill(latent.float(), hole, depth, target_depth)


def depth_aware_fill(x, hole, depth, target_depth=None, far_ratio=10.0):
    """Push-pull that respects depth. A disocclusion shows what was behind the foreground, so holes borrow
    from the far side of an edge; where the target depth is known, sky holes fill from sky and geometry
    holes from geometry, so a wall never turns into sky or the reverse."""
    known = torch.isfinite(depth) & ~hole
    if not known.any():
        return push_pull(x, hole)
    med = depth[known].median()
    # prefer farther cells, capped so one far cell cannot outvote a whole neighbourhood
    prefer = torch.where(known, (depth / med).clamp(0.25, 2.0) ** 4, torch.zeros_like(depth))
    if target_depth is None:
        return push_pull(x, hole, prefer)

    def is_sky(d):
        return ~(torch.isfinite(d) & (d <= far_ratio * med))

    out = x
    for sky in (False, True):
        src = known & (is_sky(depth) == sky)
        dst = hole & (is_sky(target_depth) == sky)
        if dst.any():
            filled = push_pull(x, ~src, prefer) if src.any() else push_pull(x, hole, prefer)
            out = torch.where(dst[None], filled, out)
    return out


def _learned(name, **args):
    from .learned import LearnedModel  # imported on use: learned.py builds on the classes above
    return LearnedModel(name, **args)


def _wan(name, **args):
    from .wan import WanVACEModel  # imported on use: diffusers loads only for a Wan model
    return WanVACEModel(name, **args)


_KINDS = {"patch": PatchModel, "learned": _learned, "wan_vace": _wan}
# kinds that run on the job's device and report downloads through the protocol
_DEVICE_KINDS = {"wan_vace"}


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
    kind = _KINDS.get(cfg.get("kind"))
    if kind is None:
        raise ModelError(f"model '{name}' has unknown kind {cfg.get('kind')!r}")
    if cfg.get("kind") in _DEVICE_KINDS:
        return kind(name, device=device, emit=emit, **cfg.get("args", {}))
    return kind(name, **cfg.get("args", {}))
