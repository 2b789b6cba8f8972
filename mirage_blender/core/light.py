"""How the light on each pixel changes because objects move, from the scene's lamps, its world light and
shadow maps rasterised from the scene's own triangles.

The memory holds what the reference showed, lit as it was then. A crate that turns shows its faces
to the sun at new angles, and its shadow moves with it over the floor. Neither is in any image the
memory has, but both are in the scene, so the add-on works them out and the backend applies them.

The exported ``light`` map is a ratio per pixel:
- on the static world: the light the surface gets on this frame over the light it would get with
  the moving objects taken away (1 except in a moving object's shadow);
- on a moving object: the light its surface gets on this frame over a fixed level for the scene.
The backend divides the reference by its ratios before storing it and multiplies each frame by its
own, so only changes of light reach the frames.

The light model is simple on purpose: lamps (sun, point, spot, area taken as a one-sided point) with
their shadows from shadow maps, a uniform world, light bounced by the scene as if from all around,
flat triangle normals. A texture feeding the world's colour is taken as mid grey.
"""
import math

import numpy as np

from .lamps import Lighting
from .scene import Hits, Triangles
from .shadows import in_reach, visibility

# How much of the suns' and the sky's light the scene bounces back (an average albedo).
GROUND_ALBEDO = 0.25


def light_map(tris: Triangles, hits: Hits, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
              lighting: Lighting) -> np.ndarray:
    """[H, W] float32 light ratio (see the module's docstring) for one camera.

    tris: the frame's triangles (their ids tell moving objects from the static world); hits: the pixels
    that see them; depth: [H, W] planar depth; K [3, 3], c2w [4, 4]: the OpenCV camera."""
    H, W = depth.shape
    out = np.ones((H, W), dtype=np.float32)
    lamps = lighting.lamps
    v, u, t, points = hits.rows, hits.cols, hits.tri, hits.points
    if not lamps and lighting.sky <= 0 or not len(v):
        return out
    texel = float(np.median(depth[v, u])) / K[0, 0]  # one output pixel at the median depth
    world, tri_ids = tris.world, tris.ids
    fixed, movers = world[tri_ids == 0], world[tri_ids != 0]
    # the static world's ratio is 1 outside the moving objects' shadows: only the objects' own pixels and
    # what their shadows can reach are worked out
    keep = tri_ids[t] != 0
    for lamp in lamps:
        if len(movers):
            keep |= in_reach(points, movers, lamp, 3.0 * texel)
    bounce = _bounce(points, lighting)
    v, u, t, points = v[keep], u[keep], t[keep], points[keep]
    if not len(t):
        return out
    n = _normals(world[t], points, c2w)
    moving = tri_ids[t] != 0
    sky = lighting.sky * math.pi
    # sky from above; light bounced from all around, more from below (the lit ground)
    ambient = sky * (1.0 + n[:, 2]) / 2.0 + bounce * (3.0 - n[:, 2]) / 4.0
    with_all, without = ambient.copy(), ambient.copy()
    for lamp in lamps:
        toward, e = lamp.incoming(points)
        direct = e * np.clip((n * toward).sum(1), 0.0, None)
        lit = direct > 0
        vis_moving, vis_static = np.ones(len(points)), np.ones(len(points))
        vis_moving[lit] = visibility(points[lit], n[lit], movers, lamp, toward[lit], texel)
        # the static world's own shadows cancel in its ratio: they matter only on moving objects and
        # where a moving object's shadow falls (a much smaller map than the whole view)
        need = lit & (moving | (vis_moving < 1.0))
        vis_static[need] = visibility(points[need], n[need], fixed, lamp, toward[need], texel)
        with_all += direct * vis_static * vis_moving
        without += direct * vis_static
    # any fixed level for the objects' light: it cancels between reference and frame
    level = (sky + sum(lamp.power for lamp in lamps if lamp.kind == "SUN") + bounce) / 2.0
    base = np.where(moving, level if level > 0 else 1.0, without)
    out[v, u] = np.where(base > 1e-9, with_all / np.maximum(base, 1e-9), 1.0)
    return out


# the still world's shadow maps for the shading map: texels per side at most. Its shadows divide a reference's
# light out and put a frame's back, where edges a few pixels soft do no harm; at 720p and above a map of one
# texel a pixel cost most of the export
SHADE_MAP_MAX = 640


def shade_map(tris: Triangles, hits: Hits, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
              lighting: Lighting) -> np.ndarray:
    """[H, W, 2] float32: the light on each pixel of the static world as the scene gives it, the moving objects
    left out: the lamps' direct light with the world's own shadows, and the light from all around (sky and
    bounce). 0 on moving objects and where nothing is. With it a model can tell a surface's colour from its
    light: a shadow is not copied where the sun shines, and an invented floor gets the shadows that fall on it.
    The two parts apart, so the backend can weigh them against what the reference shows."""
    H, W = depth.shape
    out = np.zeros((H, W, 2), dtype=np.float32)
    v, u, t, points = hits.rows, hits.cols, hits.tri, hits.points
    static = tris.ids[t] == 0
    v, u, t, points = v[static], u[static], t[static], points[static]
    if not len(v):
        return out
    texel = float(np.median(depth[v, u])) / K[0, 0]
    world = tris.world
    fixed = world[tris.ids == 0]
    n = _normals(world[t], points, c2w)
    sky = lighting.sky * math.pi
    bounce = _bounce(points, lighting)
    direct = np.zeros(len(points))
    for lamp in lighting.lamps:
        toward, e = lamp.incoming(points)
        d = e * np.clip((n * toward).sum(1), 0.0, None)
        lit = d > 0
        d[lit] *= visibility(points[lit], n[lit], fixed, lamp, toward[lit], texel, SHADE_MAP_MAX)
        direct += d
    out[v, u, 0] = direct
    out[v, u, 1] = sky * (1.0 + n[:, 2]) / 2.0 + bounce * (3.0 - n[:, 2]) / 4.0
    return out


def _bounce(points, lighting):
    """Light bounced by the scene: a share of the sky's and the lamps' average direct light on what the
    camera sees (points [M, 3]), as if from all around."""
    sky = lighting.sky * math.pi
    up = np.array([0.0, 0.0, 1.0])
    sample = points[:: max(1, len(points) // 4096)]
    return GROUND_ALBEDO * (sky + sum(float(np.mean(e * np.clip(d @ up, 0.0, None)))
                                      for d, e in (lamp.incoming(sample) for lamp in lighting.lamps)))


def _normals(tri, points, c2w):
    """Unit flat normals [M, 3] of triangles tri [M, 3, 3], turned toward the camera."""
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-30)
    n *= np.where(np.einsum("ij,ij->i", n, c2w[:3, 3] - points) < 0, -1.0, 1.0)[:, None]
    return n
