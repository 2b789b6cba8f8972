"""One frame of the export as a value: its camera, what the camera sees, and how the moving objects
change the light and look of what it sees.

The per-pixel maps are a channels.Maps of numpy arrays (the corridor's one value for a camera's channels):
depth [H, W] float (inf where nothing is hit); ids [H, W] moving-object id (0 = still world or nothing); light
[H, W] light ratio (core/light.py); albedo [H, W, 3] uint8 surface colour of moving objects with a baked texture
(core/albedo.py); parts [H, W] the object each pixel sees (Triangles.parts; 0 for nothing); shade [H, W, 2] the
still world's direct and all-around light (core/light.shade_map); rest and normal [H, W, 3] the surface address
(core/address.py)."""
from dataclasses import dataclass, field

import numpy as np

from ..backend.channels import Maps
from . import albedo, camera, light, raster
from .address import address_maps
from .lamps import Lighting
from .scene import Hits, Triangles


@dataclass
class FrameExport:
    """Everything the backend gets for one frame; fields are None when not exported.

    K: [3, 3] float64 intrinsics and cam_to_world: [4, 4] float64 pose, both OpenCV (core/camera.py);
    objects: {id: [4, 4] float64 object-to-world} of the moving objects (ids 1, 2, ...); maps: the frame's
    per-pixel maps (channels.Maps of numpy arrays, each None when not exported)."""
    frame: int
    K: np.ndarray
    cam_to_world: np.ndarray
    objects: dict = None
    maps: Maps = field(default_factory=Maps)


def render_maps(tris: Triangles, K: np.ndarray, c2w: np.ndarray, size: tuple[int, int], ids: bool = False,
                lighting: Lighting = None, textures: list = None, parts: bool = False,
                shading: Lighting = None, address: bool = False) -> Maps:
    """The maps of a camera (K [3, 3] for an image of ``size`` = (W, H), c2w [4, 4], both OpenCV) over the
    frame's world triangles: depth always; ids when asked; the light ratio with ``lighting``; the
    surface colour with ``textures`` (the baked textures that tris.surface indexes); the object each pixel
    sees with ``parts`` (tris.parts); the static world's light with ``shading`` (the scene's lamps); with
    ``address`` the surface addresses (rest and normal, core/address.py, from tris.rest)."""
    width, height = size
    w2c = np.linalg.inv(c2w)
    world = tris.world
    cam_tris = world @ w2c[:3, :3].T + w2c[:3, 3] if len(world) else world
    if not ids and lighting is None and textures is None and not parts and shading is None and not address:
        return Maps(depth=raster.depth_map(cam_tris, K, width, height).astype(np.float32))
    # which triangle each pixel sees (index + 1), for the ids, the light's normals and the surface colour
    depth, hit = raster.depth_and_hit(cam_tris, K, width, height)
    maps = Maps(depth=depth.astype(np.float32))
    if ids:
        maps.ids = _per_pixel(tris.ids, hit)
    if parts:
        maps.parts = _per_pixel(tris.parts, hit)
    # world position of every pixel that sees a triangle, shared by the light and the surface colour
    rows, cols = np.nonzero(hit > 0)
    hits = Hits(rows, cols, hit[rows, cols] - 1, camera.world_points(K, c2w, rows, cols, depth[rows, cols]))
    if lighting is not None:
        maps.light = light.light_map(tris, hits, depth, K, c2w, lighting)
    if shading is not None:
        maps.shade = light.shade_map(tris, hits, depth, K, c2w, shading)
    if textures is not None:
        maps.albedo = albedo.albedo_map(tris, hits, textures, (height, width))
    if address:
        maps.rest, maps.normal = address_maps(tris, hits, c2w[:3, 3], size)
    return maps


def _per_pixel(values, hit):
    """[H, W] uint16: the value of the triangle each pixel sees (hit: index + 1), 0 where it sees none."""
    if not len(values):
        return hit.astype(np.uint16)
    return np.where(hit > 0, values[np.maximum(hit - 1, 0)], 0).astype(np.uint16)
