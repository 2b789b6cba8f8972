"""The still world's light: the add-on's shading map gives each pixel the direct lamp light with its shadows and the
light from all around; how much the latter weighs is read from the references (the weight that makes each object's
colour vary least between its lit and its shadowed pixels). A colour divided by it is the surface's own."""
import torch

AMBIENT_WEIGHTS = torch.logspace(-2, 1.5, 36)  # the weights of the all-around light tried against the reference


def light(shade, weight):
    """[2, ...] direct and all-around light -> [...] the light to divide a colour by: direct + weight x all-around,
    kept above a twentieth of its median; 1 where the map gives none (moving objects, sky)."""
    s = shade[0] + weight * shade[1]
    some = (shade[0] + shade[1]) > 0
    floor = 0.05 * float(s[some].median()) if some.any() else 1.0
    return torch.where(some, s.clamp_min(floor), torch.ones_like(s))


def ambient_weight(exemplars):
    """How much the all-around light weighs against the direct light, as the exemplars (models.base.Exemplar) show
    it: the weight that makes each scene object's colour (luminance over light) vary least over its still pixels,
    lit or in shadow. None where an exemplar has no shading map."""
    if not exemplars or any(e.maps.shade is None for e in exemplars):
        return None
    cost = torch.zeros(AMBIENT_WEIGHTS.numel())
    for e in exemplars:
        lum = e.image.float().mean(0)
        ok = ((e.maps.shade[0] + e.maps.shade[1]) > 0) & (lum > 0.01) & torch.isfinite(e.maps.depth)
        if e.maps.ids is not None:
            ok &= e.maps.ids == 0
        parts = (e.maps.parts if e.maps.parts is not None else torch.zeros_like(lum, dtype=torch.long))[ok]
        log_lum = torch.log(lum[ok])
        d, a = e.maps.shade[0][ok], e.maps.shade[1][ok]
        for w in range(AMBIENT_WEIGHTS.numel()):
            r = log_lum - torch.log((d + AMBIENT_WEIGHTS[w] * a).clamp_min(1e-6))
            n = torch.bincount(parts, minlength=1).float()
            mean = torch.bincount(parts, r, minlength=1) / n.clamp_min(1)
            cost[w] += float(((r - mean[parts]) ** 2).sum())
    return float(AMBIENT_WEIGHTS[int(torch.argmin(cost))])
