"""Shadow maps: how much of a lamp's light reaches points past a set of triangles.

A sun gets one orthographic map over the points' own extent; a local lamp a cube of perspective maps
around it, of which only the faces some point falls in are drawn. Maps are drawn with the depth
rasteriser; each point is tested against 3x3 texels with a slope-scaled bias.
"""
import math

import numpy as np

from .lamps import Lamp
from .raster import depth_map

# Shadow maps: texels per side, about one output pixel each, within these bounds.
MAP_MIN, MAP_MAX = 64, 2048

# the six faces of a cube around a local lamp: rows are the face camera's x (right), y (down), z (forward)
_FACES = [np.array(r, dtype=np.float64) for r in (
    [[0, 0, -1], [0, -1, 0], [1, 0, 0]], [[0, 0, 1], [0, -1, 0], [-1, 0, 0]],
    [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[1, 0, 0], [0, 0, -1], [0, -1, 0]],
    [[1, 0, 0], [0, -1, 0], [0, 0, 1]], [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])]


def basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors [3] orthogonal to d [3] and to each other."""
    a = np.cross(d, (0.0, 0.0, 1.0) if abs(d[2]) < 0.9 else (1.0, 0.0, 0.0))
    a /= np.linalg.norm(a)
    return a, np.cross(d, a)


def visibility(points: np.ndarray, normals: np.ndarray, tris: np.ndarray, lamp: Lamp, toward: np.ndarray,
               texel: float, max_res: int = MAP_MAX) -> np.ndarray:
    """Fraction (0..1) [N] of each point's light from `lamp` that `tris` [M, 3, 3] let through.

    points, normals, toward (unit vectors to the lamp): [N, 3] in world space; texel: the wanted texel
    size in world units near the points; max_res: texels per side of a map at most."""
    if len(tris) == 0 or len(points) == 0:
        return np.ones(len(points))
    cos = (normals * toward).sum(1)
    if lamp.kind == "SUN":
        return _sun_visibility(points, cos, tris, lamp.direction, texel, max_res)
    return _local_visibility(points, cos, tris, lamp.position, texel, max_res)


def in_reach(points: np.ndarray, movers: np.ndarray, lamp: Lamp, margin: float) -> np.ndarray:
    """[N] bool: points [N, 3] that triangles `movers` [M, 3, 3] could shade from `lamp`: inside their box
    as seen from a sun, or inside the cone from a local lamp around their bounding sphere (beyond its
    near side)."""
    corners = movers.reshape(-1, 3)
    if lamp.kind == "SUN":
        a, b = basis(lamp.direction)
        ma, mb = corners @ a, corners @ b
        pa, pb = points @ a, points @ b
        return (pa >= ma.min() - margin) & (pa <= ma.max() + margin) & (pb >= mb.min() - margin) & (pb <= mb.max() + margin)
    centre = 0.5 * (corners.min(0) + corners.max(0))
    radius = float(np.linalg.norm(corners - centre, axis=1).max()) + margin
    axis = centre - lamp.position
    dist = float(np.linalg.norm(axis))
    if dist <= radius:
        return np.ones(len(points), dtype=bool)
    rel = points - lamp.position
    r = np.linalg.norm(rel, axis=1).clip(1e-12)
    return ((rel @ axis) / (r * dist) >= math.cos(math.asin(radius / dist))) & (r >= dist - radius)


def _lookup(q, smap, f, c, texel, cos):
    """Fraction of a 3x3 texel neighbourhood of the shadow map in which points (in the map's camera space)
    lie no deeper than what the map holds, with a slope-scaled bias."""
    res = smap.shape[0]
    u, v = f * q[:, 0] / q[:, 2] + c, f * q[:, 1] / q[:, 2] + c
    cos = np.abs(cos).clip(0.05, 1.0)
    # enough slack that a lit surface does not shadow itself across a texel at its slope
    bias = texel * (1.5 + 2.0 * np.sqrt(1.0 - cos ** 2) / cos).clip(max=20.0)
    iu, iv = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    lit = np.zeros(len(q))
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            x, y = (iu + du).clip(0, res - 1), (iv + dv).clip(0, res - 1)
            lit += q[:, 2] <= smap[y, x] + bias
    return lit / 9.0


def _sun_visibility(points, cos, tris, sun, texel, max_res=MAP_MAX):
    """Orthographic shadow map along the sun with texels of about `texel` (world units), over the
    points' own extent (an occluder matters only where it covers a point as seen from the sun),
    drawn with the depth rasteriser from far away."""
    a, b = basis(sun)
    pa, pb = points @ a, points @ b
    lo_a, hi_a, lo_b, hi_b = pa.min(), pa.max(), pb.min(), pb.max()
    span = max(hi_a - lo_a, hi_b - lo_b, 1e-6) * 1.02 + 1e-6
    res = int(np.clip(math.ceil(span / texel), MAP_MIN, max(MAP_MIN, max_res)))
    texel = span / res
    mid_a, mid_b = 0.5 * (lo_a + hi_a), 0.5 * (lo_b + hi_b)
    centre = points.mean(axis=0)
    far = 1e5 * (span + float(np.abs(points - centre).max()) + 1.0)
    # sun camera: x along a, y along b, z from the sun toward the scene, `far` away (orthographic to 1e-5)
    rot = np.stack([a, b, -sun])

    def to_cam(p):
        q = (p - centre) @ rot.T
        q[..., 0] -= mid_a - centre @ a
        q[..., 1] -= mid_b - centre @ b
        q[..., 2] += far
        return q

    f = far * res / span
    K = np.array([[f, 0.0, (res - 1) / 2.0], [0.0, f, (res - 1) / 2.0], [0.0, 0.0, 1.0]])
    return _lookup(to_cam(points), depth_map(to_cam(tris), K, res, res), f, (res - 1) / 2.0, texel, cos)


def _local_visibility(points, cos, tris, position, texel, max_res=MAP_MAX):
    """A cube of perspective shadow maps around a local lamp; only the faces some point falls in are drawn."""
    rel = points - position
    vis = np.ones(len(points))
    face = np.argmax(np.stack([rel @ F[2] for F in _FACES], 1), axis=1)
    for k, F in enumerate(_FACES):
        sel = face == k
        if not sel.any():
            continue
        q = rel[sel] @ F.T
        dist = float(np.median(q[:, 2]))
        res = int(np.clip(math.ceil(2.0 * dist / texel), MAP_MIN, max(MAP_MIN, max_res)))  # 90 degrees: 2 * dist
        f, c = res / 2.0, (res - 1) / 2.0
        K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
        smap = depth_map((tris - position) @ F.T, K, res, res)
        vis[sel] = _lookup(q, smap, f, c, q[:, 2] * 2.0 / res, cos[sel])
    return vis
