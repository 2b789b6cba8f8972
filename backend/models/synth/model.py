"""The compact codec that invents what no image showed: guided example-based synthesis (backend/imagine.py)
paints the pixels no stored cell reaches, from the reference and from what the memory already holds, and the
result is encoded into cells like seen content, so later frames read it back instead of inventing again."""
import torch
import torch.nn.functional as F

from ...fill import pixel_fill
from .imagine import synthesize
from ..base import Completion
from ..compact import LearnedModel, tiled

CRACK = 1  # uncovered runs this wide (each side of a pixel) are cracks between stored cells, not holes
SEED = 0


def _wide(mask, width=CRACK):
    """[H, W] bool: the pixels of `mask` in parts of it wider than `width` pixels (a morphological opening)."""
    m = mask[None, None].float()
    k = 2 * width + 1
    eroded = -F.max_pool2d(-m, k, stride=1, padding=width)
    return (F.max_pool2d(eroded, k, stride=1, padding=width)[0, 0] > 0) & mask


class SynthModel(LearnedModel):
    """LearnedModel's codec and drawing; holes by synthesis on the scene's surfaces where the frame's geometry is
    known (a push-pull fill elsewhere: sky, jobs without scene depth)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._surfaces = {}  # the exemplars' surfaces, worked out once (the reference serves every frame)

    def complete(self, read, needs, generator=None):
        if read.splats is None or needs.maps.depth is None or needs.K is None:
            return super().complete(read, needs, generator)
        out_device = read.latent.device
        latent = read.latent.float().to(self.device)
        hole = read.hole.to(self.device, torch.bool)
        H, W = latent.shape[-2] * 8, latent.shape[-1] * 8
        with torch.no_grad():
            drawn, covered, zd = self.draw(read.splats, H, W, needs.maps.ids)
            painted = None
            if needs.prefill is not None:
                drawn, covered, painted = needs.prefill.paint(drawn, covered)
            base = pixel_fill(drawn, covered, zd, needs.maps.depth, needs.maps.ids)
            # invented: the read's hole cells, and uncovered areas wider than a crack elsewhere (what a moving object
            # uncovered: its cells hold the outline's layers); a crack between stored cells keeps the smooth fill
            # of its neighbours, so a pose seen again shows it the same
            cells = hole.repeat_interleave(8, 0).repeat_interleave(8, 1).to(covered.device) | _wide(~covered)
            filled, _, exact = synthesize(torch.where(covered[None], drawn, base), covered | ~cells,
                                          needs.maps.depth, needs.K, needs.cam_to_world, needs.exemplars,
                                          ids=needs.maps.ids, poses=needs.poses, base=base, parts=needs.maps.parts,
                                          cache=self._surfaces, repaint=True, shade=needs.maps.shade,
                                          # the same candidates on every frame, not the frame's own noise: what
                                          # is painted again (cells on outlines, never stored) comes out the same
                                          generator=torch.Generator().manual_seed(SEED))
            filled = torch.where((cells | exact)[None], filled, base).to(self.device)
            # only the read's hole cells are encoded and stored: a cell the memory holds keeps its canvas (replacing
            # it would change an earlier frame's canvas, decoded again at the next read); what such a cell does
            # not reach is painted again by the next frame, the planes' part the same way (a function of the point)
            done = hole
            full = latent
            if done.any():
                full = torch.where(done[None], tiled(self.encoder, filled, done, 8, 1), latent)
        return Completion(full.to(out_device), pixels=filled, from_material=painted, completed=done.to(out_device),
                          exact=exact)

    def render(self, latent, read=None, needs=None, completion=None):
        image = super().render(latent, read, needs, completion)
        if completion is None or completion.exact is None or not completion.exact.any():
            return image
        # what a plane's repeat paints is shown as painted: the memory holds the same, through the codec
        exact = completion.exact.to(image.device)
        return torch.where(exact[None], completion.pixels.to(image.device).clamp(0, 1), image)
