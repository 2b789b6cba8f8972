"""The compact codec that invents what no image showed: guided example-based synthesis (backend/imagine.py)
paints the pixels no stored cell reaches, from the reference and from what the memory already holds, and the
result is encoded into cells like seen content, so later frames read it back instead of inventing again."""
import torch

from ..fill import pixel_fill
from ..imagine import synthesize
from .base import Completion
from .compact import LearnedModel, tiled


class SynthModel(LearnedModel):
    """LearnedModel's codec and drawing; holes by synthesis on the scene's surfaces where the frame's geometry is
    known (a push-pull fill elsewhere: sky, jobs without scene depth)."""

    def complete(self, read, needs, generator=None):
        if read.splats is None or needs.pixel_target is None or needs.K is None:
            return super().complete(read, needs, generator)
        out_device = read.latent.device
        latent = read.latent.float().to(self.device)
        hole = read.hole.to(self.device, torch.bool)
        if not hole.any():
            return Completion(latent.to(out_device))
        H, W = latent.shape[-2] * 8, latent.shape[-1] * 8
        with torch.no_grad():
            drawn, covered, zd = self.draw(read.splats, H, W, needs.pixel_ids)
            painted = None
            if needs.prefill is not None:
                drawn, covered, painted = needs.prefill.paint(drawn, covered)
            base = pixel_fill(drawn, covered, zd, needs.pixel_target, needs.pixel_ids)
            # only the read's hole cells are invented: a crack between stored cells keeps the smooth fill of its
            # neighbours, so a pose seen again shows it the same
            cells = hole.repeat_interleave(8, 0).repeat_interleave(8, 1).to(covered.device)
            filled, _ = synthesize(torch.where(covered[None], drawn, base), covered | ~cells, needs.pixel_target,
                                   needs.K, needs.cam_to_world, needs.exemplars, ids=needs.pixel_ids,
                                   poses=needs.poses, base=base, generator=generator, parts=needs.parts)
            filled = torch.where(cells[None], filled, base).to(self.device)
            full = torch.where(hole[None], tiled(self.encoder, filled, hole, 8, 1), latent).to(out_device)
        return Completion(full, pixels=filled, from_material=painted)
