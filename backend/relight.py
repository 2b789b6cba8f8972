"""How moving objects change a frame's light, and what their materials say about faces no image showed.

The memory keeps the scene as lit without its moving objects' shading and shadows: the reference is stored
with its light ratios divided out (`relit(..., inverse=True)`) and each frame gets its own multiplied in. The
add-on exports the ratios (light maps) and the objects' baked surface colours (albedo maps); this module turns
them into what the segment loop and the models use.
"""
from typing import Optional

import numpy as np
import torch

from .channels import Maps
from .inputs import Inputs, pad_to_cells

GAMMA = 2.2  # display values to linear light, for the light maps


def _affine(x, y):
    """Least-squares [4, 3] map from colours x [N, 3] (plus 1) to colours y [N, 3], with a little ridge: a
    plain material (one colour) gives its mean look."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    reg = 1e-3 * len(x) * torch.eye(4, dtype=x.dtype)
    reg[3, 3] = 0.0
    return torch.linalg.solve(x.T @ x + reg, x.T @ y)


def soften_edges(g: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """On moving objects, each pixel's light averaged with its same-object neighbours (3 x 3). Where two faces
    meet, a drawn pixel may come from the face beside the one the frame puts there; with the two lights
    averaged at the edge it keeps about its own light."""
    obj = (ids != 0).float()[None, None]
    total = torch.zeros_like(g)
    count = torch.zeros_like(g)
    pad = torch.nn.functional.pad
    gp = pad(g[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    ip = pad(ids[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    H, W = g.shape
    for dy in range(3):
        for dx in range(3):
            same = (ip[dy:dy + H, dx:dx + W] == ids.float()).float()
            total += gp[dy:dy + H, dx:dx + W] * same
            count += same
    return torch.where(obj[0, 0] > 0, total / count.clamp_min(1.0), g)


PLAIN = 1.5 / 255  # a baked colour varying less than this over an object's pixels is one plain colour


def _patterned(colours):
    """Whether an object's baked colours [3, N] (display values) on a frame vary: a pattern, not one colour."""
    return colours.shape[1] > 1 and float(colours.std(1).max()) > PLAIN


class MaterialPrefill:
    """A frame model's prefill (models.base.Prefill): moving objects' pixels that nothing drew take their
    material's colour as the reference shows it, so never-seen faces keep their pattern. `lin` [4, H, W]: the
    baked colours in linear light plus a row of ones; `baked` [H, W]: pixels with a baked material; `colours`:
    object id -> [4, 3] colour map; `maps`: the frame's maps (channels.Maps, padded), whose object ids it paints by."""

    def __init__(self, lin, baked, colours, maps):
        self.lin, self.baked, self.colours, self.maps = lin, baked, colours, maps

    def paint(self, drawn: torch.Tensor, covered: torch.Tensor) -> tuple:
        """(drawn [3, H, W], covered [H, W]) -> (drawn, covered, painted [H, W]), new tensors."""
        drawn, before = drawn.clone(), covered
        covered = covered.clone()
        for oid, m in self.colours.items():
            todo = (self.maps.ids == oid) & ~covered & self.baked  # objects without a baked material: the fill's
            if todo.any():
                colour = (self.lin[:, todo].T @ m).clamp(0.0, 1.0) ** (1.0 / GAMMA)
                drawn[:, todo] = colour.T.to(drawn.dtype)
                covered |= todo
        return drawn, covered, covered & ~before


class Lighting:
    """Light maps and material colours of one job (backend.inputs.Inputs), worked out once where they are fixed
    for the job (the objects' light levels on the reference, the material colour maps)."""

    def __init__(self, inputs: Inputs, cell: int):
        self.inputs, self.cell = inputs, cell
        self._levels = None
        self._colour_maps = None

    def light(self, n) -> Optional[torch.Tensor]:
        """[H, W] light ratio at camera n, a frame number or a reference's own camera (how moving objects change
        the light there), or None."""
        maps = self.inputs.maps(n)
        g, ids = maps.light, maps.ids
        if g is None:
            return None
        if ids is not None:
            # an object's light is relative to a level of the scene's; relative to its own light on the
            # reference instead, its stored look stays close to the reference's (no clipping, same encoding)
            for oid, scale in self.object_light_levels().items():
                g = torch.where(ids == oid, g * scale, g)
            g = soften_edges(g, ids)
        return g

    def object_light_levels(self) -> dict:
        """Object id -> 1 / its median light ratio on the reference (1 where the reference does not show it)."""
        if self._levels is None:
            self._levels = {}
            ref = self.inputs.view(self.inputs.job.reference)
            maps = self.inputs.maps(ref)
            g, ids = maps.light.numpy(), maps.ids
            for oid in self.inputs.known_ids - {0}:
                vals = g[(ids == oid).numpy()]
                vals = vals[vals > 0]
                self._levels[oid] = 1.0 / float(np.median(vals)) if vals.size else 1.0
        return self._levels

    def relit(self, image: torch.Tensor, n, inverse: bool = False) -> torch.Tensor:
        """Frame n's light applied to (or, inverse, taken out of) an image [3, H, W] of the memory's unchanging
        light. The ratio is one of linear light, so in display values it is a power of it (sRGB-like gamma)."""
        g = self.light(n)
        if g is None:
            return image
        H, W = image.shape[-2:]
        g = pad_to_cells(g, self.cell)[:H, :W].clamp(0.02, 50.0) ** (1.0 / GAMMA)
        g = g.to(image.device, image.dtype)
        return (image / g if inverse else image * g).clamp(0.0, 1.0)

    def colour_maps(self) -> dict:
        """Per moving object with a baked material, how the material's colours look in the reference (light
        taken out): an affine map in linear light, fitted on the object's pixels in the reference (its outline
        left out). An object the reference does not show (a car that drives in later) takes the map of all the
        objects it does show, or, with none, the material's own colours."""
        if self._colour_maps is None:
            self._colour_maps = {}
            inputs = self.inputs
            n = inputs.view(inputs.job.reference)
            alb, ids = inputs.maps(n).albedo, inputs.maps(n).ids
            if alb is None:
                return self._colour_maps
            ref = self.relit(inputs.reference_image(), n, inverse=True)
            pooled = []
            for oid in sorted(inputs.known_ids - {0}):
                mine = (ids == oid) & (alb.sum(0) > 0)  # its pixels with a baked material
                # outline pixels mix the object with what is behind it
                inner = mine.clone()
                inner[1:] &= mine[:-1]
                inner[:-1] &= mine[1:]
                inner[:, 1:] &= mine[:, :-1]
                inner[:, :-1] &= mine[:, 1:]
                if inner.sum() < 16:
                    continue
                pooled.append((alb[:, inner].T.double() ** GAMMA, ref[:, inner].T.double() ** GAMMA))
                self._colour_maps[oid] = _affine(*pooled[-1])
            fallback = _affine(torch.cat([x for x, _ in pooled]), torch.cat([y for _, y in pooled])) if pooled \
                else torch.cat([torch.eye(3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)])
            for oid in inputs.known_ids - {0} - set(self._colour_maps):
                self._colour_maps[oid] = fallback
        return self._colour_maps

    def prefill(self, n: int, maps: Maps) -> Optional[MaterialPrefill]:
        """The MaterialPrefill of frame n (maps: its channels.Maps padded to whole cells), or None where no moving
        object has a baked material with a pattern. A plain material (one colour: a grey blockout) says nothing
        a model could not say better from the object's own seen faces, so those objects are left to the model."""
        colours = self.colour_maps() if maps.ids is not None else {}
        if not colours or maps.albedo is None:
            return None
        alb, baked = maps.albedo, maps.albedo.sum(0) > 0
        colours = {oid: m for oid, m in colours.items() if _patterned(alb[:, (maps.ids == oid) & baked])}
        if not colours:
            return None
        lin = torch.cat([alb.double() ** GAMMA, torch.ones(1, *alb.shape[1:], dtype=torch.float64)], 0)
        return MaterialPrefill(lin, baked, colours, maps)
