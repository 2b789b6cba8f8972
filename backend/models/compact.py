"""A trained compact latent model: a convolutional autoencoder (8x8 pixels -> one cell of 12 channels) and a
small hole-filling network that works on the latent grid of a memory read.

Torch only (no bpy). Weights are loaded from safetensors and nothing else, so a model folder can never run
code. Everything is deterministic: no dropout, no noise, fixed-order convolutions on the CPU.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fill import depth_aware_fill, pixel_fill
from ..splats import CanvasCache, canvas_fill, canvas_pixels, place_pixels, redraw
from .base import Completion, FrameModel, ModelError

TILE, TILE_MARGIN = 4, 2  # where only some cells need the encoder or decoder: tiles of 4 x 4 cells, each
                          # seen with 2 cells of context around it
CANVAS_FRAMES = 8  # decoded canvases kept: as many cells as this many whole frames (docs/benchmarks.md)
FAR_RATIO = 10.0   # a read or target depth beyond this many times the median known depth counts as sky


class ResBlock(nn.Module):
    def __init__(self, ch, dilation=1):
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.b = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)

    def forward(self, x):
        return x + self.b(F.relu(self.a(F.relu(x))))


class Encoder(nn.Module):
    """[N, 3, H, W] -> [N, C, H/8, W/8]: pixel-unshuffle by 2, then two strided convolutions."""

    def __init__(self, channels=12, widths=(32, 64, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12, w1, 3, padding=1), ResBlock(w1),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1), ResBlock(w2),
            nn.Conv2d(w2, w3, 4, stride=2, padding=1), ResBlock(w3), ResBlock(w3),
            nn.ReLU(), nn.Conv2d(w3, channels, 1))

    def forward(self, x):
        return self.net(x * 2 - 1)


class Decoder(nn.Module):
    """[N, C, h, w] -> [N, 3, 8h, 8w]: residual blocks and three pixel-shuffle upsamplings."""

    def __init__(self, channels=12, widths=(32, 64, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.net = nn.Sequential(
            nn.Conv2d(channels, w3, 3, padding=1), ResBlock(w3), ResBlock(w3), nn.ReLU(),
            nn.Conv2d(w3, 4 * w2, 3, padding=1), nn.PixelShuffle(2), ResBlock(w2), nn.ReLU(),
            nn.Conv2d(w2, 4 * w1, 3, padding=1), nn.PixelShuffle(2), ResBlock(w1), nn.ReLU(),
            nn.Conv2d(w1, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, z):
        return self.net(z) * 0.5 + 0.5


class FillNet(nn.Module):
    """Predicts a correction to the depth-aware push-pull fill of a latent read, from the read itself, the hole
    mask and depth features. Dilated residual blocks give it the whole 32 x 18 grid as context."""

    def __init__(self, channels=12, width=64, dilations=(1, 2, 4, 8, 1)):
        super().__init__()
        self.inp = nn.Conv2d(2 * channels + 6, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(width, d) for d in dilations])
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, feats):
        return self.out(F.relu(self.blocks(self.inp(feats))))


def tiled(net, x, need, cin, cout):
    """A fully convolutional `net` run on [C, ...] `x` only around the cells `need` [h, w] asks for, `cin`
    input and `cout` output elements per cell along each side (the decoder: 1 and 8; the encoder: 8 and 1).
    Tiles are batched by shape; where they would cost as much as the whole frame, the whole frame runs.
    Returns [C', h*cout, w*cout], zero outside the tiles."""
    h, w = need.shape
    jobs = {}
    area = 0
    for r0 in range(0, h, TILE):
        for c0 in range(0, w, TILE):
            r1, c1 = min(r0 + TILE, h), min(c0 + TILE, w)
            if not bool(need[r0:r1, c0:c1].any()):
                continue
            a0, a1, b0, b1 = max(r0 - TILE_MARGIN, 0), min(r1 + TILE_MARGIN, h), max(c0 - TILE_MARGIN, 0), min(c1 + TILE_MARGIN, w)
            jobs.setdefault((a1 - a0, b1 - b0), []).append((r0, r1, c0, c1, a0, b0))
            area += (a1 - a0) * (b1 - b0)
    if area >= h * w:
        return net(x[None])[0]
    out = None
    for (hh, ww), items in jobs.items():
        batch = torch.stack([x[:, a0 * cin:(a0 + hh) * cin, b0 * cin:(b0 + ww) * cin] for _, _, _, _, a0, b0 in items])
        y = net(batch)
        if out is None:
            out = y.new_zeros(y.shape[1], h * cout, w * cout)
        for (r0, r1, c0, c1, a0, b0), yy in zip(items, y):
            out[:, r0 * cout:r1 * cout, c0 * cout:c1 * cout] = \
                yy[:, (r0 - a0) * cout:(r1 - a0) * cout, (c0 - b0) * cout:(c1 - b0) * cout]
    return out if out is not None else x.new_zeros(0)


def _log_depth(d, med, valid):
    x = torch.log(d.clamp_min(1e-6) / med).clamp(-3.0, 3.0)
    return torch.where(valid, x, torch.zeros_like(x))


def pixel_base(encoder, decoder, latent, hole, depth, target_depth=None, ids=None):
    """The depth-aware push-pull fill done on decoded pixels and encoded back: averaging pixels blends colours,
    averaging a learned code does not. A latent push-pull first gives the decoder something plausible in the
    holes, so what it decodes next to them is not pulled off by empty cells."""
    rough = depth_aware_fill(latent, hole, depth, target_depth, ids, far_ratio=FAR_RATIO)
    patches = F.pixel_unshuffle(decoder(rough[None]), 8)[0]
    filled = F.pixel_shuffle(depth_aware_fill(patches, hole, depth, target_depth, ids, far_ratio=FAR_RATIO)[None], 8)[0]
    return torch.where(hole[None], tiled(encoder, filled, hole, 8, 1), latent), filled


def fill_features(latent, hole, depth, target_depth=None, base=None):
    """Inputs of the fill net for one read (all [.., h, w]): known latent (holes zeroed), hole mask, the
    base fill (given, or a push-pull of the latent), log read depth / median and a read-sky flag, log target
    depth / median, a target-sky flag and whether the target depth is given. Returns (features [2C+6, h, w],
    base fill [C, h, w])."""
    latent = latent.float()
    depth = depth.float()
    known = ~hole
    if base is None:
        base = depth_aware_fill(latent, hole, depth, target_depth, far_ratio=FAR_RATIO)
    finite = torch.isfinite(depth) & known
    if finite.any():
        med = depth[finite].median()
    elif target_depth is not None and torch.isfinite(target_depth).any():
        med = target_depth[torch.isfinite(target_depth)].median()
    else:
        med = torch.tensor(1.0)
    med = med.clamp_min(1e-6)
    near = finite & (depth <= FAR_RATIO * med)
    read_sky = known & ~near
    zeros = torch.zeros_like(depth)
    if target_depth is not None:
        td = target_depth.float()
        t_near = torch.isfinite(td) & (td <= FAR_RATIO * med)
        t_log, t_sky, t_has = _log_depth(td, med, t_near), (~t_near).float(), torch.ones_like(depth)
    else:
        t_log, t_sky, t_has = zeros, zeros, zeros
    feats = torch.cat([torch.where(hole[None], torch.zeros_like(latent), latent), hole.float()[None], base,
                       _log_depth(depth, med, near)[None], read_sky.float()[None],
                       t_log[None], t_sky[None], t_has[None]], 0)
    return feats, base


class LearnedModel(FrameModel):
    """The trained compact model: 8 x 8 pixel cells of `channels` latent channels; holes filled by push-pull on
    decoded pixels (fill="pushpull") or by the learned fill net on top of a push-pull (fill="net")."""

    def __init__(self, name, channels=12, cell=8, widths=(32, 64, 96), fill_width=64,
                 weights="weights.safetensors", folder=None, device="cpu", emit=None, fill_base="latent", fill="net"):
        if cell != 8:
            raise ModelError(f"model '{name}': only cell 8 is supported, got {cell}")
        if fill_base not in ("latent", "pixel"):
            raise ModelError(f"model '{name}': fill_base must be 'latent' or 'pixel', got {fill_base!r}")
        if fill not in ("net", "pushpull"):
            raise ModelError(f"model '{name}': fill must be 'net' or 'pushpull', got {fill!r}")
        if folder is None and not os.path.isabs(weights):
            raise ModelError(f"model '{name}': no model folder to find {weights} in")
        self.name, self.cell, self.channels, self.fill_base, self.fill_mode = name, 8, int(channels), fill_base, fill
        self.device = torch.device(device)
        self.encoder = Encoder(self.channels, tuple(widths))
        self.decoder = Decoder(self.channels, tuple(widths))
        self.filler = FillNet(self.channels, fill_width)
        path = weights if os.path.isabs(weights) else os.path.join(folder, weights)
        self.weights_path = path
        if not os.path.isfile(path):
            raise ModelError(f"model '{name}': weights file missing: {path}")
        try:
            from safetensors.torch import load_file
            state = load_file(path)
            for prefix, net in (("encoder.", self.encoder), ("decoder.", self.decoder), ("filler.", self.filler)):
                part = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
                net.load_state_dict(part, strict=True)
        except Exception as e:  # safetensors and load_state_dict report with their own error types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"model '{name}': weights file {path} is corrupt or incompatible: {msg}") from None
        for net in (self.encoder, self.decoder, self.filler):
            net.to(self.device).eval().requires_grad_(False)
        self._canvases = CanvasCache(frames=CANVAS_FRAMES)
        self._last_draw = None  # (splats, splats.Drawing) of the last draw

    def encode(self, image):
        with torch.no_grad():
            return self.encoder(image.float().to(self.device)[None])[0].to(image.device)

    def canvas_patches(self, cv):
        """A source canvas's pixels (splats.DecodedCanvas), decoded once and reused while its content stays the
        same (the reference's canvas serves every frame that sees it). Cells the memory no longer holds take
        their nearest stored neighbour's code (canvas_fill)."""
        def decode():
            lat = cv.latent if bool(cv.known.all()) else canvas_fill(cv.latent, cv.known)
            with torch.no_grad():  # a later frame's canvas is mostly cells other frames hold: decode its own
                img = tiled(self.decoder, lat.float().to(self.device), cv.known, 1, 8).clamp(0, 1)
            return F.pixel_unshuffle(img[None], 8)[0].cpu().half()  # float16: below half a grey level
        return self._canvases.get(cv, decode)

    def draw(self, sp, H, W, pixel_ids=None):
        """The read's splats drawn at pixel precision, each cell's pixels decoded in its source canvas; a cell
        without a canvas (written at another resolution) is left to the grid decode. Returns (image [3, H, W],
        covered [H, W], depth [H, W]). The read a frame's completion drew, drawn again for its rendering, is
        that drawing; read again after the frame's new cells were written, only what they change is drawn."""
        last = self._last_draw
        if last is not None and last[0] is sp and last[1].pixel_ids is pixel_ids and last[1].size == (H, W):
            return last[1].result()
        patches, drawn = canvas_pixels(sp, self.canvas_patches)
        drawing = redraw(last[1] if last is not None else None, patches, drawn, H, W, pixel_ids)
        self._last_draw = (sp, drawing)
        return drawing.result()

    def render(self, latent, read=None, needs=None, completion=None):
        if read is not None and read.splats is not None:
            # each cell the memory holds, decoded next to the cells it was encoded with (not next to whatever
            # the reprojection put beside it) and drawn as the tilted plane it is; the grid decode of the
            # completed latent shows only where no stored cell reaches
            h, w = latent.shape[-2:]
            drawn, covered, _ = self.draw(read.splats, h * 8, w * 8, needs.maps.ids if needs is not None else None)
            need = ~covered.reshape(h, 8, w, 8).all(3).all(1)
            if not need.any():
                return drawn
            pixels = completion.pixels if completion is not None else None
            if pixels is not None and pixels.shape[-2:] == drawn.shape[-2:]:
                # the pixels this frame's completion painted (outline cells, which the memory never stores, and
                # cracks): the same content its latent encodes, without a decoder pass
                return torch.where(covered[None], drawn, pixels.to(drawn.device).clamp(0, 1))
            with torch.no_grad():
                image = tiled(self.decoder, latent.float().to(self.device), need, 1, 8).clamp(0, 1).to(latent.device)
            return torch.where(covered[None], drawn, image)
        with torch.no_grad():
            image = self.decoder(latent.float().to(self.device)[None])[0].clamp(0, 1).to(latent.device)
        if read is not None and read.geometry is not None:
            # the decoder works on the cell grid; each read cell's 8 x 8 pixels then go where the cell
            # really lands, as the patch model does, so reprojection is not quantised to 8 pixels
            image = place_pixels(F.pixel_unshuffle(image[None], 8)[0], image, read.geometry, read.depth, 8)
        return image

    def complete(self, read, needs, generator=None):
        out_device = read.latent.device
        latent = read.latent.float().to(self.device)
        hole = read.hole.to(self.device, torch.bool)
        if not hole.any():
            return Completion(latent.to(out_device))
        td = None if needs.target_depth is None else needs.target_depth.to(self.device)
        depth = read.depth.to(self.device)
        with torch.no_grad():
            if read.splats is not None and self.fill_mode == "pushpull":
                # what the memory holds, drawn at pixel precision, then filled at pixel level and encoded
                drawn, covered, zd = self.draw(read.splats, latent.shape[-2] * 8, latent.shape[-1] * 8, needs.maps.ids)
                painted = None
                if needs.prefill is not None:
                    drawn, covered, painted = needs.prefill.paint(drawn, covered)
                filled = pixel_fill(drawn, covered, zd, needs.maps.depth, needs.maps.ids).to(self.device)
                full = torch.where(hole[None], tiled(self.encoder, filled, hole, 8, 1), latent).to(out_device)
                return Completion(full, pixels=filled, from_material=painted)
            base = None
            if self.fill_base == "pixel" or self.fill_mode == "pushpull":
                base, _ = pixel_base(self.encoder, self.decoder, latent, hole, depth, td,
                                     None if needs.cell_ids is None else needs.cell_ids.to(self.device))
            if self.fill_mode == "pushpull":
                return Completion(base.to(out_device))
            feats, base = fill_features(latent, hole, depth, td, base)
            pred = base + self.filler(feats[None])[0]
        # known cells come back exactly as read, so what the memory saw stays what it was
        return Completion(torch.where(hole[None], pred, latent).to(out_device))
