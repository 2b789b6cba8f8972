"""The per-frame export: the scene at each frame read into a core.frame.FrameExport.

A generator, one frame per step, so the modal operator keeps the UI responsive and a caller can hand
frames on as they come (the job builder writes each frame's files before asking for the next).
"""
from collections.abc import Iterable, Iterator, Sequence

import bpy
import numpy as np

from ..core import camera as cv
from ..core.errors import ExportError
from ..backend.channels import Maps
from ..core.frame import FrameExport, render_maps
from . import camera, geometry, lights


def scene_depth(scene, cam_obj, width: int, height: int, depsgraph=None) -> np.ndarray:
    """[H, W] float32 planar depth (camera-space z, scene units); inf where nothing is hit.

    Pixel (u, v): u right, v down, row 0 at the top; the ray goes through the pixel centre at integer
    (u, v), consistent with ``camera.intrinsics`` scaled to ``width`` x ``height``. Only objects visible
    in the final render occlude (``hide_render``, camera ray visibility, collection render visibility and
    view-layer exclusion are honoured). Geometry is the evaluated geometry at the current frame
    (modifiers as evaluated by the depsgraph). Method: core/raster.py.
    """
    return frame_maps(scene, cam_obj, (width, height), depsgraph).depth


def frame_maps(scene, cam_obj, size: tuple[int, int], depsgraph=None, objects: dict = None,
               textures: dict = None, parts: dict = None, shading: bool = True,
               deforming: frozenset = frozenset()) -> Maps:
    """The camera's maps at the current frame for an image of ``size`` = (W, H): depth; with ``objects``
    (object name -> id 1, 2, ...) also the id mask and the light ratio; with ``textures`` (object name ->
    texture baked by gather.materials.bake) also the surface colour; with ``parts`` (object name -> number,
    geometry.part_numbers) the object each pixel sees, its surface address (core/address.py; the objects named
    in ``deforming`` addressed before their deformation) and, with ``shading``, the static world's light
    (core/light.shade_map)."""
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ExportError(f"Invalid depth size {width}x{height}")
    K = cv.resample(camera.intrinsics(scene, cam_obj), camera.render_size(scene), (width, height))
    if depsgraph is None:
        depsgraph = bpy.context.evaluated_depsgraph_get()
    cam_eval = cam_obj.evaluated_get(depsgraph) if not cam_obj.is_evaluated else cam_obj
    c2w = cv.camera_to_world(cam_eval.matrix_world)
    surfaces = None if textures is None else {name: i for i, name in enumerate(textures)}
    tris = geometry.triangles(depsgraph, objects, surfaces, parts, rest=parts is not None, deforming=deforming)
    shading = shading and parts is not None
    lighting = None
    if objects or shading:
        lighting = lights.scene_lighting(scene, geometry.render_visible(depsgraph.view_layer))
    return render_maps(tris, K, c2w, (width, height), ids=bool(objects), lighting=lighting if objects else None,
                       textures=None if textures is None else list(textures.values()), parts=parts is not None,
                       shading=lighting if shading else None, address=parts is not None)


def iter_frames(scene, frames: Iterable[int], depth_size: tuple[int, int] = None, objects=(),
                textures: dict = None, cameras: Sequence = None, parts: dict = None,
                shading: bool = True, deforming: frozenset = frozenset()) -> Iterator[FrameExport]:
    """One FrameExport per frame, one frame at a time so a modal caller can pause in between.

    Always the camera (K, cam_to_world); with ``depth_size`` = (W, H) the depth; with ``objects`` (the
    moving objects, ids 1, 2, ... in this order) their poses, and with ``depth_size`` also the id mask,
    the light ratio and, with ``textures`` (object name -> baked texture), the surface colour; with
    ``depth_size`` and ``parts`` (object name -> number) the object each pixel sees and its surface address (the
    objects named in ``deforming`` before their deformation), and with ``shading`` too the still world's light
    (the shading map, for the models that need it). The camera
    is the scene's on that frame (camera markers switch it), or ``cameras[i]`` for the i-th frame (a shot's
    camera, a reference's). ``scene.frame_current`` (and subframe) is restored afterwards, also on error or
    when the caller stops early.
    """
    frames = [int(f) for f in frames]
    for cam in cameras or [scene.camera]:
        camera.lens(cam)  # no camera, or not a perspective one: refuse before any frame
    frame_before = scene.frame_current
    subframe_before = scene.frame_subframe
    try:
        for i, f in enumerate(frames):
            scene.frame_set(f)
            yield _export_frame(scene, f, depth_size, objects, textures, cameras[i] if cameras else None, parts,
                                shading, deforming)
    finally:
        if scene.frame_current != frame_before or scene.frame_subframe != subframe_before:
            scene.frame_set(frame_before, subframe=subframe_before)


def export_cameras(scene, frames: Iterable[int]) -> list[FrameExport]:
    """All frames' cameras at once (no maps)."""
    return list(iter_frames(scene, frames))


def _export_frame(scene, f, depth_size, objects, textures, cam_obj=None, parts=None, shading=True,
                  deforming=frozenset()):
    """The FrameExport of the current frame ``f`` through ``cam_obj`` (None: the scene's camera)."""
    cam_obj = cam_obj or scene.camera  # camera markers may switch the scene's camera
    if cam_obj is None:
        raise ExportError(f"The scene has no camera at frame {f}")
    K = camera.intrinsics(scene, cam_obj)
    c2w = camera.camera_to_world(cam_obj)
    cv.check_intrinsics(K, f, cam_obj.name)
    cv.check_pose(c2w, f, cam_obj.name)
    item = FrameExport(frame=f, K=K, cam_to_world=c2w)
    if objects:
        item.objects = {oid: _object_pose(ob, f) for oid, ob in enumerate(objects, 1)}
    if depth_size is not None:
        ids = {ob.name: oid for oid, ob in enumerate(objects, 1)} if objects else None
        item.maps = frame_maps(scene, cam_obj, depth_size, bpy.context.evaluated_depsgraph_get(), ids,
                               (textures or None) if objects else None, parts, shading, deforming)
    return item


def _object_pose(ob, f):
    m = np.array(camera.matrix_world(ob), dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise ExportError(f"Object '{ob.name}' has a non-finite transform at frame {f}")
    return m
