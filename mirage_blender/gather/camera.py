"""The scene camera as plain data: its lens, the render size, its pose (converted by core/camera.py)."""
import bpy
import numpy as np

from ..core import camera
from ..core.errors import ExportError


def render_size(scene) -> tuple[int, int]:
    """(W, H) of the final render in pixels (see core.camera.render_size)."""
    r = scene.render
    return camera.render_size(r.resolution_x, r.resolution_y, r.resolution_percentage)


def lens(cam_obj) -> camera.Lens:
    """The optics of a perspective camera object; ExportError for anything else."""
    if cam_obj is None:
        raise ExportError("The scene has no camera")
    if getattr(cam_obj, "type", None) != "CAMERA":
        name = getattr(cam_obj, "name", repr(cam_obj))
        kind = getattr(cam_obj, "type", type(cam_obj).__name__)
        raise ExportError(f"Mirage needs a camera object; '{name}' is a {str(kind).lower()}")
    cam = cam_obj.data
    if cam.type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(cam.type, cam.type.lower())
        raise ExportError(f"Mirage needs a perspective camera; '{cam_obj.name}' is {kind}")
    return camera.Lens(name=cam_obj.name, lens=float(cam.lens), sensor_width=float(cam.sensor_width),
                       sensor_height=float(cam.sensor_height), sensor_fit=cam.sensor_fit,
                       shift_x=float(cam.shift_x), shift_y=float(cam.shift_y))


def intrinsics(scene, cam_obj) -> np.ndarray:
    """3x3 pinhole matrix K (float64) in pixels of the final render size (see core.camera.intrinsics)."""
    optics = lens(cam_obj)
    r = scene.render
    return camera.intrinsics(optics, render_size(scene), (r.pixel_aspect_x, r.pixel_aspect_y))


def matrix_world(obj):
    """matrix_world of the evaluated object at the current frame."""
    if getattr(obj, "is_evaluated", False):
        return obj.matrix_world
    try:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        return obj.evaluated_get(depsgraph).matrix_world
    except (AttributeError, RuntimeError, ReferenceError, TypeError):
        # No usable context (or the object is not in the active view layer):
        # the original object's matrix is synced by the last frame_set anyway.
        return obj.matrix_world


def camera_to_world(cam_obj) -> np.ndarray:
    """4x4 camera-to-world (float64) in the OpenCV convention, scale removed."""
    if cam_obj is None:
        raise ExportError("The scene has no camera")
    return camera.camera_to_world(matrix_world(cam_obj))
