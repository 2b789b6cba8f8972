"""The texels of an object's UV map and where on its surface each one lies, for baking the memory into a texture.

A 2-D rasteriser over the UV triangles: a texel belongs to the triangle its centre lies in, with that centre's
barycentric coordinates, which carry over to the triangle's surface addresses (core/address.py: the world for the
still world, the object's rest space for a moving one) and so say where the memory is read for it. Texel (row r,
column c) of a W x H texture, row 0 at the top as an image file stores it, has its centre at
u = (c + 0.5) / W, v = 1 - (r + 0.5) / H. Edges are evaluated so that two triangles sharing one get exactly
opposite values: a texel centre on a seam inside an island belongs to one triangle, never to none. No bpy here.
"""
import math
from dataclasses import dataclass

import numpy as np

# candidate texels tested at once (memory bound: about 100 bytes each)
BATCH = 1 << 21
# the texture sizes "about what the flythrough saw" may pick (texels per side)
AUTO_MIN, AUTO_MAX = 64, 2048


@dataclass
class Texels:
    """The texels of a `width` x `height` texture that lie on UV triangles: `index` [M] int64 (row * width +
    column, row 0 at the top, sorted), `tri` [M] int64 the triangle each lies in (the lowest index where triangles
    overlap), `bary` [M, 3] float64 its centre's barycentric coordinates in that triangle."""
    index: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.index)


def _edges(p):
    """Edge functions of triangles p [T, 3, 2] (texel coordinates) as A, B, C [T, 3] with e = A x + B y + C: edge k
    runs from corner k+1 to corner k+2 (so e_k is corner k's barycentric weight times twice the area). Swapping an
    edge's ends negates A, B and C exactly, so two triangles sharing an edge see opposite values on it."""
    a, b = p[:, [1, 2, 0]], p[:, [2, 0, 1]]
    A = a[..., 1] - b[..., 1]
    B = b[..., 0] - a[..., 0]
    C = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return A, B, C


def rasterise(uvs: np.ndarray, width: int, height: int) -> Texels:
    """The texels whose centres lie in the UV triangles `uvs` [T, 3, 2] (u, v in 0..1; outside that range nothing
    is drawn: a texture does not repeat onto itself here). Degenerate triangles cover nothing."""
    uvs = np.asarray(uvs, dtype=np.float64).reshape(-1, 3, 2)
    # texel coordinates: texel (r, c) has its centre at x = c, y = r
    p = np.stack([uvs[..., 0] * width - 0.5, (1.0 - uvs[..., 1]) * height - 0.5], axis=-1)
    A, B, C = _edges(p)
    area = C.sum(1)  # twice the signed area (the sum of the edge functions anywhere)
    good = np.isfinite(area) & (np.abs(area) > 1e-12) & np.isfinite(p).all(axis=(1, 2))
    sign = np.where(area < 0, -1.0, 1.0)[:, None]
    A, B, C = A * sign, B * sign, C * sign  # counter-clockwise and clockwise islands alike
    x0 = np.clip(np.ceil(np.nan_to_num(p[..., 0].min(1), nan=1e9)), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(np.nan_to_num(p[..., 0].max(1), nan=-1e9)), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(np.nan_to_num(p[..., 1].min(1), nan=1e9)), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(np.nan_to_num(p[..., 1].max(1), nan=-1e9)), -1, height - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    todo = np.flatnonzero(good & (bw > 0) & (bh > 0))
    found = []
    if len(todo):
        # boxes grouped by size (powers of two), each group tested with broadcasting, in batches
        kx = np.ceil(np.log2(np.maximum(bw[todo], 1))).astype(np.int64)
        ky = np.ceil(np.log2(np.maximum(bh[todo], 1))).astype(np.int64)
        key = ky * 64 + kx
        order = np.argsort(key, kind="stable")
        for group in np.split(todo[order], np.flatnonzero(np.diff(key[order])) + 1):
            gx, gy = int(bw[group].max()), int(bh[group].max())
            rows = max(1, min(gy, BATCH // gx))
            step = max(1, BATCH // (gx * rows))
            dx = np.arange(gx, dtype=np.float64)
            for r0 in range(0, gy, rows):
                dy = np.arange(r0, min(gy, r0 + rows), dtype=np.float64)
                for s0 in range(0, len(group), step):
                    t = group[s0:s0 + step]
                    xs = x0[t].astype(np.float64)[:, None, None] + dx[None, None, :]
                    ys = y0[t].astype(np.float64)[:, None, None] + dy[None, :, None]
                    e = [A[t, k, None, None] * xs + B[t, k, None, None] * ys + C[t, k, None, None] for k in range(3)]
                    inside = (e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0) & (xs < width) & (ys < height)
                    ti, yi, xi = np.nonzero(inside)
                    if not len(ti):
                        continue
                    w = np.stack([ek[ti, yi, xi] for ek in e], axis=1)
                    tri = t[ti]
                    found.append(((y0[tri] + r0 + yi) * width + x0[tri] + xi, tri, w / w.sum(1, keepdims=True)))
    if not found:
        return Texels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), width, height)
    index = np.concatenate([f[0] for f in found])
    tri = np.concatenate([f[1] for f in found])
    bary = np.concatenate([f[2] for f in found])
    # one triangle per texel: on a shared edge (or where islands overlap) the lowest triangle index
    order = np.lexsort((tri, index))
    index, tri, bary = index[order], tri[order], bary[order]
    first = np.ones(len(index), dtype=bool)
    first[1:] = index[1:] != index[:-1]
    return Texels(index[first], tri[first], bary[first], width, height)


def surface_points(corners: np.ndarray, texels: Texels) -> np.ndarray:
    """[M, 3] the point of each texel on its triangle: the triangles' corners [T, 3, 3] (surface addresses)
    weighted by the texel's barycentric coordinates."""
    return np.einsum("ij,ijk->ik", texels.bary, np.asarray(corners, dtype=np.float64)[texels.tri])


def outward_normals(corners: np.ndarray, turn: float = 1.0) -> np.ndarray:
    """[T, 3] unit normals of triangles [T, 3, 3] by their winding (Blender's outward side), times `turn` (-1 where
    the corners were carried into their space by a mirroring transform, which flips the winding); 0 for slivers."""
    c = np.asarray(corners, dtype=np.float64)
    n = np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]) * float(turn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-300, n / np.maximum(length, 1e-300), 0.0)


def areas(corners: np.ndarray) -> np.ndarray:
    """[T] the area of each triangle [T, 3, k] (k = 2 for UVs, 3 for points)."""
    c = np.asarray(corners, dtype=np.float64)
    if c.shape[-1] == 2:
        c = np.concatenate([c, np.zeros(c.shape[:-1] + (1,))], axis=-1)
    return 0.5 * np.linalg.norm(np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]), axis=1)


def read_size(size: int, seen_size: int, oversample: int = 2) -> int:
    """Texels per side the memory is read at for a texture of `size` per side whose surface the flythrough saw at
    about `seen_size` (texture_size): never more than `size`, nor more than `oversample` times what was seen (the
    memory holds nothing finer: a finer texture is the read upsampled); `size` divided by a power of two."""
    k = 1
    while size // (2 * k) >= max(oversample * seen_size, AUTO_MIN):
        k *= 2
    return -(-size // k)


def texture_size(surface_area: float, uv_area: float, footprint: float, lo: int = AUTO_MIN,
                 hi: int = AUTO_MAX) -> int:
    """Texels per side (a power of two in lo..hi) so that one texel covers about `footprint` (scene units across,
    what one pixel of the flythrough covered on the surface) of a surface of `surface_area` whose UV triangles
    cover `uv_area` of the unit square."""
    if not (surface_area > 0 and uv_area > 0 and footprint > 0) or not math.isfinite(surface_area / footprint):
        return lo
    side = math.sqrt(surface_area / min(uv_area, 1.0)) / footprint
    return int(min(max(2 ** math.ceil(math.log2(max(side, 1.0))), lo), hi))
