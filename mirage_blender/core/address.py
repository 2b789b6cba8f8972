"""Surface addresses: for every pixel, where on its object it lies (the `rest` and `normal` maps).

A pixel's address is the point of its triangle it sees, written in the space of the memory bank that holds the
object: the world for the still world, the object's own rest space (before armatures, shape keys and deforming
modifiers) for a moving one. The rasteriser says which triangle each pixel sees and where in the world; the
point's barycentric coordinates in that world triangle carry over to the triangle's rest corners, so a swinging
limb's pixel keeps the address of the same point of skin on every frame. The normal is the rest triangle's,
turned to face the camera, so the two sides of a thin surface (a flag, a sheet) have different addresses.
"""
import numpy as np

from .scene import Hits, Triangles


def barycentric(tri: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[M, 3] barycentric weights of points [M, 3] in triangles [M, 3, 3] (the points lie on them)."""
    a = tri[:, 0]
    v0, v1, v2 = tri[:, 1] - a, tri[:, 2] - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) > 1e-300, den, 1.0)  # a sliver's pixel takes its first corner
    b = (d11 * d20 - d01 * d21) / den
    c = (d00 * d21 - d01 * d20) / den
    return np.stack([1.0 - b - c, b, c], axis=1)


def address_maps(tris: Triangles, hits: Hits, cam_position: np.ndarray, size: tuple[int, int]) -> tuple:
    """(rest [H, W, 3] float32, NaN where nothing is hit; normal [H, W, 3] float32 unit, facing the camera, 0
    where nothing is hit) for the pixels `hits` of an image of ``size`` = (W, H)."""
    width, height = size
    rest = np.full((height, width, 3), np.nan, dtype=np.float32)
    normal = np.zeros((height, width, 3), dtype=np.float32)
    if not len(hits.tri):
        return rest, normal
    world, corners = tris.world[hits.tri], tris.rest[hits.tri]
    w = barycentric(world, hits.points)
    rest[hits.rows, hits.cols] = np.einsum("ij,ijk->ik", w, corners)
    n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    # the side the camera sees: the world triangle's winding normal against the way to the camera, carried over
    # to the rest triangle (whose winding matches the world's unless the object's transform mirrors it)
    facing = np.einsum("ij,ij->i", np.cross(world[:, 1] - world[:, 0], world[:, 2] - world[:, 0]),
                       np.asarray(cam_position, dtype=np.float64) - hits.points)
    n *= (np.where(facing >= 0, 1.0, -1.0) * tris.turn[hits.tri])[:, None]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    normal[hits.rows, hits.cols] = n
    return rest, normal
