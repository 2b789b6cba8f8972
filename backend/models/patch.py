"""The exact-patch model: each cell holds its cell x cell RGB pixels. No weights."""
import torch
import torch.nn.functional as F

from ..fill import depth_aware_fill, pixel_fill
from ..splats import place_pixels, render_splats
from .base import Completion, FrameModel


class PatchModel(FrameModel):
    """Classical baseline: an exact space-to-depth latent (each cell holds its cell x cell RGB patch)
    with push-pull hole filling. No learned weights; it reprojects what was seen and smoothly
    extends it into disocclusions. It never invents texture."""

    def __init__(self, name, cell=4, folder=None, device="cpu", emit=None):
        self.name = name
        self.cell = cell
        self.channels = 3 * cell * cell

    def encode(self, image):
        return F.pixel_unshuffle(image[None], self.cell)[0]

    def render(self, latent, read=None, needs=None, completion=None):
        image = F.pixel_shuffle(latent[None].float(), self.cell)[0]
        if read is not None and read.splats is not None:
            pixel_ids = needs.maps.ids if needs is not None else None
            drawn, covered, _ = render_splats(self.patches(read.splats), read.splats, *image.shape[-2:], pixel_ids)
            image = torch.where(covered[None], drawn, image)
        elif read is not None and read.geometry is not None:
            image = place_pixels(latent, image, read.geometry, read.depth, self.cell)
        return image.clamp(0, 1)

    def patches(self, sp):
        """The splats' latents as pixel patches [N, 3, cell, cell]."""
        return sp.lat.float().reshape(-1, 3, self.cell, self.cell)

    def complete(self, read, needs, generator=None):
        latent, hole = read.latent, read.hole
        if read.splats is None:
            return Completion(depth_aware_fill(latent.float(), hole, read.depth, needs.target_depth, needs.cell_ids))
        c = self.cell
        H, W = latent.shape[-2] * c, latent.shape[-1] * c
        drawn, covered, zd = render_splats(self.patches(read.splats), read.splats, H, W, needs.maps.ids)
        painted = None
        if needs.prefill is not None:
            drawn, covered, painted = needs.prefill.paint(drawn, covered)
        filled = F.pixel_unshuffle(pixel_fill(drawn, covered, zd, needs.maps.depth, needs.maps.ids)[None], c)[0]
        return Completion(torch.where(hole[None], filled, latent.float()), from_material=painted)
