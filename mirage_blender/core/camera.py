"""Camera conventions, converted once and only here: Blender's camera parameters to OpenCV intrinsics
and poses.

Everything works on the *final render* image: pixel centres at integer coordinates, ``u`` to the right
and ``v`` down (row 0 is the top row, as in a PNG). Camera space is OpenCV's: +X right, +Y down, +Z
forward. A Blender camera looks down its local -Z with +Y up, so
``cam_to_world = rigid(matrix_world) @ BLENDER_TO_CV``.
"""
import math
from dataclasses import dataclass

import numpy as np

from .errors import ExportError

# Blender camera space (+Y up, -Z forward) -> OpenCV camera space (+Y down, +Z forward).
BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Lens:
    """A perspective camera's optics as Blender holds them: millimetres, shift in units of the fitted
    image side, ``sensor_fit`` one of "AUTO", "HORIZONTAL", "VERTICAL". ``name`` is for messages."""
    name: str
    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str
    shift_x: float = 0.0
    shift_y: float = 0.0


def render_size(resolution_x: int, resolution_y: int, percentage: int) -> tuple[int, int]:
    """(W, H) of the final render in pixels.

    Blender computes this with integer arithmetic, ``xsch * percentage // 100`` (e.g. 101 px at 50 %
    renders 50 px wide). Border/crop is ignored: the exported camera always describes the full frame.
    """
    w = (int(resolution_x) * int(percentage)) // 100
    h = (int(resolution_y) * int(percentage)) // 100
    return max(w, 1), max(h, 1)


def intrinsics(lens: Lens, size: tuple[int, int], pixel_aspect: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """3x3 pinhole matrix K (float64) in pixels of an image of ``size`` = (W, H).

    Mirrors Blender's ``BKE_camera_params_compute_viewplane``: the sensor size is ``sensor_height`` only
    for sensor_fit VERTICAL (``sensor_width`` for AUTO and HORIZONTAL); the fit direction for AUTO is
    horizontal when ``pixel_aspect_x * W >= pixel_aspect_y * H``; lens shift is measured in units of the
    fitted image dimension. Non-square pixels give ``fx != fy``.
    """
    w, h = size
    aspx, aspy = float(pixel_aspect[0]), float(pixel_aspect[1])
    ycor = aspy / aspx

    fit = lens.sensor_fit
    sensor = float(lens.sensor_height if fit == "VERTICAL" else lens.sensor_width)
    if fit == "AUTO":
        fit = "HORIZONTAL" if aspx * w >= aspy * h else "VERTICAL"
    viewfac = float(w) if fit == "HORIZONTAL" else ycor * h

    focal = float(lens.lens)
    if not (focal > 0.0 and sensor > 0.0):
        raise ExportError(f"Camera '{lens.name}' has an invalid lens or sensor size")

    # Width of one pixel on the image plane at unit depth is sensor / (lens * viewfac);
    # a pixel is ycor times as tall as it is wide.
    fx = focal * viewfac / sensor
    fy = fx / ycor
    cx = 0.5 * w - float(lens.shift_x) * viewfac - 0.5
    cy = 0.5 * h + float(lens.shift_y) * viewfac / ycor - 0.5
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def resample(K: np.ndarray, size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K for the same field of view at another image size (pixel centres kept); K itself when equal."""
    if tuple(to_size) == tuple(size):
        return K
    sx, sy = to_size[0] / size[0], to_size[1] / size[1]
    K = K.copy()
    K[0, 0] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 1] *= sy
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def rigid(m) -> np.ndarray:
    """Strip scale (and shear) from a 4x4 matrix: rotation + translation, float64 [4, 4].

    Columns are normalised as Blender does for rendering; if the result still is not orthonormal (shear
    from a non-uniformly scaled, rotated parent) it is replaced by the nearest rotation (polar
    decomposition).
    """
    out = np.array(m, dtype=np.float64)
    rot = out[:3, :3]
    norms = np.linalg.norm(rot, axis=0)
    if np.all(np.isfinite(norms)) and np.all(norms > 0.0):
        rot = rot / norms
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-9):
            u, _, vt = np.linalg.svd(rot)
            rot = u @ vt
    out[:3, :3] = rot
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def camera_to_world(matrix_world) -> np.ndarray:
    """4x4 camera-to-world (float64) in the OpenCV convention from a Blender camera's matrix_world."""
    return rigid(matrix_world) @ BLENDER_TO_CV


def check_intrinsics(K: np.ndarray, frame: int, name: str) -> None:
    if not np.all(np.isfinite(K)):
        raise ExportError(f"Camera '{name}' has non-finite intrinsics at frame {frame}")


def check_pose(c2w: np.ndarray, frame: int, name: str) -> None:
    """Refuse a camera pose the backend cannot use: non-finite, zero-scale or mirrored."""
    if not np.all(np.isfinite(c2w)):
        raise ExportError(f"Camera '{name}' has a non-finite transform at frame {frame}")
    det = float(np.linalg.det(c2w[:3, :3]))
    if not math.isfinite(det) or abs(det) < 1e-6:
        raise ExportError(f"Camera '{name}' has a degenerate (zero-scale) rotation at frame {frame}")
    if det < 0.0:
        raise ExportError(f"Camera '{name}' is mirrored (negative scale) at frame {frame}")


def world_points(K: np.ndarray, c2w: np.ndarray, rows: np.ndarray, cols: np.ndarray, z: np.ndarray) -> np.ndarray:
    """World positions [M, 3] of pixels (rows [M], cols [M]) at planar depths z [M]."""
    cam = np.stack([(cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], 1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]
