"""The surface colour (albedo) of the pixels that see a moving object, looked up in its baked texture.

The backend learns from the reference how the material's colours look there, and paints the faces of
the object no image has shown with it."""
import numpy as np

from .scene import Hits, Triangles


def sample(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a baked texture [S, S, 3] at uv [N, 2] (0..1, repeating): float64 [N, 3]."""
    size = texture.shape[0]
    x = (uv[:, 0] % 1.0) * size - 0.5
    y = (uv[:, 1] % 1.0) * size - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            out = out + texture[(y0 + dy) % size, (x0 + dx) % size].astype(np.float64) * (wx * wy)
    return out


def albedo_map(tris: Triangles, hits: Hits, textures: list, shape: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 surface colour (display-encoded, 2.2) of every pixel whose object has a baked
    texture, 0 elsewhere.

    tris: the frame's triangles (tris.surface indexes `textures`); hits: the pixels that see them;
    textures: the baked textures, each [S, S, 3]; shape: (H, W)."""
    out = np.zeros((*shape, 3), dtype=np.uint8)
    if not textures or not len(tris) or not len(hits.rows):
        return out
    t = hits.tri
    surface = tris.surface
    sel = surface[t] >= 0
    if not sel.any():
        return out
    t, v, u, p = t[sel], hits.rows[sel], hits.cols[sel], hits.points[sel]
    uv = _corner_weights(tris.world[t], p, tris.uvs[t])
    colour = np.zeros((len(t), 3))
    owner = surface[t]
    for k in np.unique(owner):
        mine = owner == k
        colour[mine] = sample(textures[k], uv[mine])
    out[v, u] = np.rint(np.clip(colour, 0.0, 1.0) ** (1 / 2.2) * 255).astype(np.uint8)
    return out


def _corner_weights(tri, p, uvs):
    """The UV [M, 2] at points p [M, 3] in triangles tri [M, 3, 3] with corner UVs uvs [M, 3, 2]
    (barycentric coordinates, clamped into the triangle)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) > 1e-30, den, 1e-30)
    wb = np.clip((d11 * d20 - d01 * d21) / den, 0.0, 1.0)
    wc = np.clip((d00 * d21 - d01 * d20) / den, 0.0, 1.0 - wb)
    wa = 1.0 - wb - wc
    return uvs[:, 0] * wa[:, None] + uvs[:, 1] * wb[:, None] + uvs[:, 2] * wc[:, None]
