"""Camera and depth export in the OpenCV convention.

Everything here works on the *final render* image: ``render_size(scene)`` pixels,
pixel centres at integer coordinates, ``u`` to the right and ``v`` down (row 0 is
the top row, as in a PNG).  Camera space is OpenCV's: +X right, +Y down, +Z
forward, so ``cam_to_world = matrix_world @ diag(1, -1, -1, 1)``.

Only bpy, mathutils, bpy_extras, numpy and the standard library are used.
"""

import math

import bpy
import numpy as np

from . import albedo, light

__all__ = (
    "ExportError",
    "camera_intrinsics",
    "camera_to_world_cv",
    "export_cameras",
    "render_size",
    "scene_depth",
)

# Blender camera space (+Y up, -Z forward) -> OpenCV camera space (+Y down, +Z forward).
_BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

# Rasteriser batch size in candidate pixels (memory bound: ~100 bytes each).
_BATCH = 1 << 22


class ExportError(Exception):
    """A problem the user can fix; the message is one clear line."""


# ---------------------------------------------------------------------------
# Intrinsics / extrinsics
# ---------------------------------------------------------------------------


def render_size(scene):
    """(W, H) of the final render in pixels.

    Blender computes this with integer arithmetic, ``xsch * percentage // 100``
    (e.g. 101 px at 50 % renders 50 px wide).  Border/crop is ignored: the
    exported camera always describes the full frame.
    """
    r = scene.render
    w = (int(r.resolution_x) * int(r.resolution_percentage)) // 100
    h = (int(r.resolution_y) * int(r.resolution_percentage)) // 100
    return max(w, 1), max(h, 1)


def _camera_data(cam_obj):
    if cam_obj is None:
        raise ExportError("The scene has no camera")
    if getattr(cam_obj, "type", None) != "CAMERA":
        name = getattr(cam_obj, "name", repr(cam_obj))
        kind = getattr(cam_obj, "type", type(cam_obj).__name__)
        raise ExportError(
            f"Mirage needs a camera object; '{name}' is a {str(kind).lower()}"
        )
    cam = cam_obj.data
    if cam.type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(cam.type, cam.type.lower())
        raise ExportError(f"Mirage needs a perspective camera; '{cam_obj.name}' is {kind}")
    return cam


def camera_intrinsics(scene, cam_obj):
    """3x3 pinhole matrix K (float64) in pixels of the final render size.

    Mirrors Blender's ``BKE_camera_params_compute_viewplane``: the sensor size is
    ``sensor_height`` only for sensor_fit VERTICAL (``sensor_width`` for AUTO and
    HORIZONTAL); the fit direction for AUTO is horizontal when
    ``pixel_aspect_x * W >= pixel_aspect_y * H``; lens shift is measured in units
    of the fitted image dimension.  Non-square pixels give ``fx != fy``.
    """
    cam = _camera_data(cam_obj)
    w, h = render_size(scene)
    aspx = float(scene.render.pixel_aspect_x)
    aspy = float(scene.render.pixel_aspect_y)
    ycor = aspy / aspx

    fit = cam.sensor_fit
    sensor = float(cam.sensor_height if fit == "VERTICAL" else cam.sensor_width)
    if fit == "AUTO":
        fit = "HORIZONTAL" if aspx * w >= aspy * h else "VERTICAL"
    viewfac = float(w) if fit == "HORIZONTAL" else ycor * h

    lens = float(cam.lens)
    if not (lens > 0.0 and sensor > 0.0):
        raise ExportError(f"Camera '{cam_obj.name}' has an invalid lens or sensor size")

    # Width of one pixel on the image plane at unit depth is sensor / (lens * viewfac);
    # a pixel is ycor times as tall as it is wide.
    fx = lens * viewfac / sensor
    fy = fx / ycor
    cx = 0.5 * w - float(cam.shift_x) * viewfac - 0.5
    cy = 0.5 * h + float(cam.shift_y) * viewfac / ycor - 0.5
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def _evaluated_matrix_world(obj):
    """matrix_world of the evaluated object at the current frame."""
    if getattr(obj, "is_evaluated", False):
        return obj.matrix_world
    try:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        ob_eval = obj.evaluated_get(depsgraph)
        return ob_eval.matrix_world
    except (AttributeError, RuntimeError, ReferenceError, TypeError):
        # No usable context (or the object is not in the active view layer):
        # the original object's matrix is synced by the last frame_set anyway.
        return obj.matrix_world


def _rigid(m):
    """Strip scale (and shear) from a 4x4 matrix: rotation + translation.

    Columns are normalised as Blender does for rendering; if the result still is
    not orthonormal (shear from a non-uniformly scaled, rotated parent) it is
    replaced by the nearest rotation (polar decomposition).
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


def camera_to_world_cv(cam_obj):
    """4x4 camera-to-world (float64) in OpenCV convention, scale removed."""
    if cam_obj is None:
        raise ExportError("The scene has no camera")
    return _rigid(_evaluated_matrix_world(cam_obj)) @ _BLENDER_TO_CV


def _check_pose(c2w, frame, name):
    if not np.all(np.isfinite(c2w)):
        raise ExportError(f"Camera '{name}' has a non-finite transform at frame {frame}")
    rot = c2w[:3, :3]
    det = float(np.linalg.det(rot))
    if not math.isfinite(det) or abs(det) < 1e-6:
        raise ExportError(
            f"Camera '{name}' has a degenerate (zero-scale) rotation at frame {frame}"
        )
    if det < 0.0:
        raise ExportError(
            f"Camera '{name}' is mirrored (negative scale) at frame {frame}"
        )


def _surface_objects(scene):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    visible = _render_visible_objects(scene, depsgraph.view_layer)
    return [ob for ob in scene.objects if ob.type in _SURFACE_TYPES and _object_renders(ob, visible)]


def moving_objects(scene, frames):
    """Render-visible objects whose world transform changes over the frames (animation, constraints,
    drivers, moving parents), plus those the user marked with the Mirage "Moving" toggle. Sorted by name.
    ``scene.frame_current`` is restored afterwards."""
    candidates = _surface_objects(scene)
    if not candidates:
        return []
    forced = {ob.name for ob in candidates if getattr(ob, "mirage_dynamic", False)}
    first = {}
    moving = set(forced)
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    try:
        for f in frames:
            scene.frame_set(int(f))
            for ob in candidates:
                if ob.name in moving:
                    continue
                m = np.array(_evaluated_matrix_world(ob), dtype=np.float64)
                ref = first.setdefault(ob.name, m)
                if not np.allclose(m, ref, rtol=0.0, atol=1e-6):
                    moving.add(ob.name)
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
    return sorted((ob for ob in candidates if ob.name in moving), key=lambda ob: ob.name)


def _may_deform(ob):
    """Objects whose geometry could change over time: modifiers, shape keys or animated data."""
    data = ob.data
    keys = getattr(data, "shape_keys", None)
    return bool(len(ob.modifiers) or (keys is not None and keys.animation_data is not None)
                or getattr(data, "animation_data", None) is not None)


def _local_geometry(ob, depsgraph):
    ob_eval = ob.evaluated_get(depsgraph)
    try:
        mesh = ob_eval.to_mesh()
    except RuntimeError:
        return None
    try:
        if mesh is None:
            return None
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        return co
    finally:
        ob_eval.to_mesh_clear()


def deforming_objects(scene, frames, samples=8):
    """Render-visible objects whose own geometry changes over the frames (armatures, shape keys, animated
    modifiers), judged on up to `samples` frames spread over the shot. Sorted by name.
    ``scene.frame_current`` is restored afterwards."""
    candidates = [ob for ob in _surface_objects(scene) if _may_deform(ob)]
    frames = [int(f) for f in frames]
    if not candidates or len(frames) < 2:
        return []
    picks = sorted({frames[round(i * (len(frames) - 1) / (samples - 1))] for i in range(samples)})
    first, changed = {}, set()
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    try:
        for f in picks:
            scene.frame_set(f)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            for ob in candidates:
                if ob.name in changed:
                    continue
                co = _local_geometry(ob, depsgraph)
                ref = first.setdefault(ob.name, co)
                if co is None or ref is None:
                    continue
                size = float(np.abs(ref).max()) if ref.size else 0.0
                if co.shape != ref.shape or not np.allclose(co, ref, rtol=0.0, atol=1e-5 * max(size, 1e-3)):
                    changed.add(ob.name)
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
    return sorted((ob for ob in candidates if ob.name in changed), key=lambda ob: ob.name)


def iter_frames(scene, frames, depth_size=None, objects=(), textures=None):
    """Per-frame camera for the backend, one frame at a time so a modal caller can pause in between.

    Yields ``{"frame": f, "K": 3x3 list, "cam_to_world": 4x4 list}``, plus ``"depth"`` (an [H, W] array
    from ``scene_depth``) when ``depth_size`` = (W, H) is given. With ``objects`` (moving objects, their
    ids are 1, 2, ... in this order) also ``"objects"`` {id: 4x4 object-to-world} and ``"ids"`` (the
    [H, W] uint16 id mask; needs ``depth_size``) and ``"light"`` (the [H, W] float32 light ratio of
    ``light.light_map``: how moving objects change the light on each pixel), and ``"albedo"`` (the [H, W, 3]
    uint8 surface colour of ``albedo.albedo_map``, when ``textures``: object name -> texture baked by
    ``albedo.bake``). ``scene.frame_current`` (and subframe)
    is restored afterwards, also on error or when the caller stops early.
    """
    cam_obj = scene.camera
    if cam_obj is None:
        raise ExportError("The scene has no camera")
    _camera_data(cam_obj)

    frame_before = scene.frame_current
    subframe_before = scene.frame_subframe
    try:
        for f in frames:
            f = int(f)
            scene.frame_set(f)
            cam_obj = scene.camera  # camera markers may switch the camera
            if cam_obj is None:
                raise ExportError(f"The scene has no camera at frame {f}")
            K = camera_intrinsics(scene, cam_obj)
            c2w = camera_to_world_cv(cam_obj)
            if not np.all(np.isfinite(K)):
                raise ExportError(
                    f"Camera '{cam_obj.name}' has non-finite intrinsics at frame {f}"
                )
            _check_pose(c2w, f, cam_obj.name)
            item = {"frame": f, "K": K.tolist(), "cam_to_world": c2w.tolist()}
            if objects:
                item["objects"] = {}
                for oid, ob in enumerate(objects, 1):
                    m = np.array(_evaluated_matrix_world(ob), dtype=np.float64)
                    if not np.all(np.isfinite(m)):
                        raise ExportError(f"Object '{ob.name}' has a non-finite transform at frame {f}")
                    item["objects"][str(oid)] = m.tolist()
            if depth_size is not None and objects:
                names = {ob.name: oid for oid, ob in enumerate(objects, 1)}
                depsgraph = bpy.context.evaluated_depsgraph_get()
                lighting = light.scene_lighting(scene, _render_visible_objects(scene, depsgraph.view_layer))
                out = scene_depth(scene, cam_obj, *depth_size, depsgraph=depsgraph, object_ids=names,
                                  lighting=lighting, textures=textures or None)
                item["depth"], item["ids"], item["light"] = out[:3]
                if textures:
                    item["albedo"] = out[3]
            elif depth_size is not None:
                item["depth"] = scene_depth(scene, cam_obj, *depth_size)
            yield item
    finally:
        if scene.frame_current != frame_before or scene.frame_subframe != subframe_before:
            scene.frame_set(frame_before, subframe=subframe_before)


def export_cameras(scene, frames):
    """All frames' cameras at once: ``[{"frame", "K", "cam_to_world"}, ...]``."""
    return list(iter_frames(scene, frames))


# ---------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------


def _render_visible_objects(scene, view_layer):
    """Original objects that take part in the final render of ``view_layer``.

    An object renders when it is not ``hide_render``, its camera ray visibility
    is on, and it sits in at least one collection that is neither excluded from
    the view layer nor ``hide_render`` (including all parent collections).
    """
    visible = set()

    def walk(layer_coll):
        coll = layer_coll.collection
        if layer_coll.exclude or coll.hide_render:
            return
        for ob in coll.objects:
            visible.add(ob.name_full)
        for child in layer_coll.children:
            walk(child)

    walk(view_layer.layer_collection)
    return visible


def _object_renders(ob, visible_names):
    if ob.hide_render or not getattr(ob, "visible_camera", True):
        return False
    return ob.name_full in visible_names


# Object types whose evaluated geometry has renderable surfaces (to_mesh()).
_SURFACE_TYPES = frozenset({"MESH", "CURVE", "SURFACE", "FONT", "META"})


def _gather_world_triangles(scene, depsgraph, object_ids=None, surfaces=None):
    """All render-visible evaluated triangles in world space: float64 [N, 3, 3].

    With ``object_ids`` (object name -> id), also each triangle's id (0 for objects not listed;
    instanced geometry takes its instancer's id): ``(tris, ids)``. With ``surfaces`` (object name -> index
    of its baked texture) also each triangle's index (-1 for objects without one) and corner UVs from its
    active UV map (float64 [N, 3, 2]): ``(tris, ids, surface, uvs)``.
    """
    view_layer = depsgraph.view_layer
    visible = _render_visible_objects(scene, view_layer)
    chunks, id_chunks, surf_chunks, uv_chunks = [], [], [], []
    for inst in depsgraph.object_instances:
        ob = inst.object
        if ob.type not in _SURFACE_TYPES:
            continue
        if inst.is_instance:
            # Instanced geometry renders when its instancer does.
            parent = inst.parent
            if parent is None or not _object_renders(parent.original, visible):
                continue
            if ob.original.hide_render or not getattr(ob.original, "visible_camera", True):
                continue
        elif not _object_renders(ob.original, visible):
            continue
        elif ob.is_instancer and not ob.original.show_instancer_for_render:
            continue
        owner = inst.parent.original if inst.is_instance and inst.parent is not None else ob.original
        # a texture is baked per object, so instances (other transforms, same UVs) share their object's
        surf = -1 if surfaces is None or inst.is_instance else surfaces.get(ob.original.name, -1)
        try:
            mesh = ob.to_mesh()
        except RuntimeError:
            mesh = None
        if mesh is None:
            continue
        try:
            mesh.calc_loop_triangles()
            nv = len(mesh.vertices)
            nt = len(mesh.loop_triangles)
            if nv == 0 or nt == 0:
                continue
            co = np.empty(nv * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", co)
            tri = np.empty(nt * 3, dtype=np.int32)
            mesh.loop_triangles.foreach_get("vertices", tri)
            corner_uv = np.zeros((nt, 3, 2))
            if surf >= 0 and mesh.uv_layers.active is not None:
                loops = np.empty(nt * 3, dtype=np.int32)
                mesh.loop_triangles.foreach_get("loops", loops)
                uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
                mesh.uv_layers.active.data.foreach_get("uv", uv)
                corner_uv = uv.reshape(-1, 2)[loops].reshape(nt, 3, 2).astype(np.float64)
            elif surf >= 0:
                surf = -1
        finally:
            ob.to_mesh_clear()
        mw = np.array(inst.matrix_world, dtype=np.float64)
        co = co.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]
        chunks.append(co[tri.reshape(-1, 3)])
        uv_chunks.append(corner_uv)
        surf_chunks.append(np.full(nt, surf, dtype=np.int32))
        if object_ids is not None:
            oid = object_ids.get(ob.original.name, object_ids.get(owner.name, 0))
            id_chunks.append(np.full(nt, oid, dtype=np.uint16))
    tris = np.concatenate(chunks, axis=0) if chunks else np.empty((0, 3, 3), dtype=np.float64)
    if object_ids is None and surfaces is None:
        return tris
    ids = np.concatenate(id_chunks) if id_chunks else np.zeros(len(tris), dtype=np.uint16)
    if surfaces is None:
        return tris, ids
    return (tris, ids, np.concatenate(surf_chunks) if surf_chunks else np.empty(0, dtype=np.int32),
            np.concatenate(uv_chunks) if uv_chunks else np.empty((0, 3, 2)))


def _cross(a, b):
    """Row-wise cross product; cross(b, a) is exactly -cross(a, b)."""
    ax, ay, az = a[:, 0], a[:, 1], a[:, 2]
    bx, by, bz = b[:, 0], b[:, 1], b[:, 2]
    return np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=1)


def _rasterise(tris, K, width, height, tri_ids=None):
    """Exact planar depth of camera-space (OpenCV) triangles at pixel centres.

    Ray ``t * d`` with ``d = (x, y, 1)`` hits triangle (v0, v1, v2) iff
    ``d . (v1 x v2)``, ``d . (v2 x v0)``, ``d . (v0 x v1)`` all share the sign of
    ``det = v0 . (v1 x v2)`` (homogeneous rasterisation).  Each of these is affine
    in the pixel coordinates, so no near-plane clipping is needed; the hit depth
    is ``det / (d . n)`` with ``n`` the sum of the three cross products, which is
    the exact ray/plane intersection.  Shared edges evaluate to exactly negated
    values in both triangles, so closed meshes have no cracks.
    """
    depth = np.full(height * width, np.inf, dtype=np.float64)
    track = tri_ids is not None
    ids = np.zeros(height * width, dtype=tri_ids.dtype if track else np.uint16)
    tri_ids = np.zeros(len(tris), dtype=np.uint16) if tri_ids is None else tri_ids

    def result():
        return (depth.reshape(height, width), ids.reshape(height, width)) if track else depth.reshape(height, width)

    if len(tris) == 0:
        return result()
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    z = tris[..., 2]

    # Cull triangles entirely behind the camera plane (and non-finite ones).
    keep = (np.max(z, axis=1) > 0.0) & np.all(np.isfinite(tris), axis=(1, 2))
    tris, tri_ids = tris[keep], tri_ids[keep]
    if len(tris) == 0:
        return result()
    z = tris[..., 2]

    # Screen bounding boxes.  Triangles fully in front: project the corners.
    # Triangles crossing the camera plane: project the part with z >= eps
    # (corners in front plus edge/plane intersections), which is conservative
    # up to a sliver of relative size 1e-9 around the camera centre.
    scale = np.max(np.abs(tris), axis=(1, 2))
    eps = np.maximum(scale * 1e-9, 1e-300)
    front = np.min(z, axis=1) >= eps
    umin = np.empty(len(tris))
    umax = np.empty(len(tris))
    vmin = np.empty(len(tris))
    vmax = np.empty(len(tris))
    tf = tris[front]
    pu = fx * (tf[..., 0] / tf[..., 2]) + cx
    pv = fy * (tf[..., 1] / tf[..., 2]) + cy
    umin[front], umax[front] = pu.min(axis=1), pu.max(axis=1)
    vmin[front], vmax[front] = pv.min(axis=1), pv.max(axis=1)
    cross_plane = ~front
    if np.any(cross_plane):
        tc = tris[cross_plane]
        zc = tc[..., 2]
        ze = eps[cross_plane]
        pts = [tc]
        for a, b in ((0, 1), (1, 2), (2, 0)):
            za, zb = zc[:, a], zc[:, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (ze - za) / (zb - za)
            ok = (t > 0.0) & (t < 1.0) & np.isfinite(t)
            t = np.where(ok, t, 0.0)[:, None]
            p = tc[:, a] + t * (tc[:, b] - tc[:, a])
            p[:, 2] = np.where(ok, ze, -1.0)  # unused points get z < 0: ignored
            pts.append(p[:, None, :])
        pts = np.concatenate(pts, axis=1)  # [n, 6, 3]
        pz = pts[..., 2]
        valid = pz >= ze[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            pu = fx * (pts[..., 0] / pz) + cx
            pv = fy * (pts[..., 1] / pz) + cy
        big = 1e18
        pu = np.clip(pu, -big, big)
        pv = np.clip(pv, -big, big)
        umin[cross_plane] = np.where(valid, pu, big).min(axis=1)
        umax[cross_plane] = np.where(valid, pu, -big).max(axis=1)
        vmin[cross_plane] = np.where(valid, pv, big).min(axis=1)
        vmax[cross_plane] = np.where(valid, pv, -big).max(axis=1)

    # Integer pixel-centre ranges (a hair wider than the projected box; the
    # edge functions below decide coverage exactly), clamped to the image.
    tol = 1e-6
    u0 = np.clip(np.ceil(umin - tol), 0, width).astype(np.int64)
    u1 = np.clip(np.floor(umax + tol), -1, width - 1).astype(np.int64)
    w0 = np.clip(np.ceil(vmin - tol), 0, height).astype(np.int64)
    w1 = np.clip(np.floor(vmax + tol), -1, height - 1).astype(np.int64)
    bw = u1 - u0 + 1
    bh = w1 - w0 + 1

    on_screen = (bw > 0) & (bh > 0)
    tris, u0, w0, bw, bh = tris[on_screen], u0[on_screen], w0[on_screen], bw[on_screen], bh[on_screen]
    tri_ids = tri_ids[on_screen]
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    c0 = _cross(v1, v2)
    c1 = _cross(v2, v0)
    c2 = _cross(v0, v1)
    det = np.einsum("ij,ij->i", v0, c0)
    idx = np.nonzero((det != 0.0) & np.isfinite(det))[0]
    if len(idx) == 0:
        return result()
    u0, w0, bw, bh = u0[idx], w0[idx], bw[idx], bh[idx]
    tri_ids = tri_ids[idx]
    det = det[idx]
    sgn = np.sign(det)[:, None]
    n = (c0 + c1 + c2)[idx]

    def affine(c):
        # c . d(u, v) with d = ((u - cx) / fx, (v - cy) / fy, 1) as A*u + B*v + C.
        # Negating c negates A, B, C exactly, so a shared edge evaluates to
        # exactly opposite values in its two triangles (no cracks, no overlap
        # beyond exact ties).
        return np.stack(
            [c[:, 0] / fx, c[:, 1] / fy,
             c[:, 2] - c[:, 0] * (cx / fx) - c[:, 1] * (cy / fy)],
            axis=1,
        )

    coef = np.concatenate(
        [affine(c0[idx] * sgn), affine(c1[idx] * sgn), affine(c2[idx] * sgn), affine(n)],
        axis=1,
    )  # [N, 12]: three edge functions, then the ray/plane denominator

    # Bucket triangles by bounding-box size and test
    # each bucket's boxes with broadcasting: [n, bh, bw] per bucket.
    # Bucket sizes are powers of two (up to 4x wasted tests, fewest buckets).
    sizes = 2 ** np.arange(0, 31)
    sizes = sizes[sizes < max(width, height)]
    sizes = np.append(sizes, max(width, height))
    kx = np.searchsorted(sizes, bw)
    ky = np.searchsorted(sizes, bh)
    key = ky * len(sizes) + kx
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    bounds = np.flatnonzero(np.diff(key_sorted)) + 1
    groups = np.split(order, bounds)
    budget = _BATCH  # candidate pixels per batch (bounds memory)
    hit_tri, hit_u, hit_v = [], [], []
    n_hits = 0

    def flush():
        tt = np.concatenate(hit_tri)
        uu = np.concatenate(hit_u)
        vv = np.concatenate(hit_v)
        hit_tri.clear()
        hit_u.clear()
        hit_v.clear()
        with np.errstate(divide="ignore", invalid="ignore"):
            d = det[tt] / (coef[tt, 9] * uu + coef[tt, 10] * vv + coef[tt, 11])
        ok = (d > 0.0) & np.isfinite(d)
        pix = vv[ok] * width + uu[ok]
        np.minimum.at(depth, pix, d[ok])
        if track:
            # the id of whichever candidate holds the minimum so far; a later, nearer batch overwrites it
            won = d[ok] == depth[pix]
            ids[pix[won]] = tri_ids[tt[ok][won]]

    for g in groups:
        gy = int(bh[g].max())
        gx = int(bw[g].max())
        rows = gy if gx * gy <= budget else max(1, budget // gx)
        step = max(1, budget // (gx * rows))
        dx = np.arange(gx, dtype=np.float64)
        for r0 in range(0, gy, rows):
            dy = np.arange(r0, min(gy, r0 + rows), dtype=np.float64)
            for s0 in range(0, len(g), step):
                t = g[s0:s0 + step]
                uf = u0[t].astype(np.float64)[:, None, None] + dx[None, None, :]
                vf = w0[t].astype(np.float64)[:, None, None] + dy[None, :, None]
                cf = coef[t]
                # Boxes smaller than the bucket's: points past u1 / w1 are still
                # tested exactly, only the image bounds need masking.
                inside = None
                for k in range(0, 9, 3):
                    e = cf[:, k, None, None] * uf + cf[:, k + 1, None, None] * vf
                    e += cf[:, k + 2, None, None]
                    inside = (e >= 0.0) if inside is None else (inside & (e >= 0.0))
                if uf.max() >= width or vf.max() >= height:
                    inside &= (uf < width) & (vf < height)
                ti, yi, xi = np.nonzero(inside)
                if len(ti) == 0:
                    continue
                tt = t[ti]
                hit_tri.append(tt)
                hit_u.append(u0[tt] + xi)
                hit_v.append(w0[tt] + r0 + yi)
                n_hits += len(tt)
                if n_hits > budget:
                    flush()
                    n_hits = 0
    if hit_tri:
        flush()
    return result()


def scene_depth(scene, cam_obj, width, height, depsgraph=None, object_ids=None, lighting=None, textures=None):
    """[H, W] float32 planar depth (camera-space z, scene units); inf where nothing is hit.

    Pixel (u, v): u right, v down, row 0 at the top; the ray goes through the
    pixel centre at integer (u, v), consistent with ``camera_intrinsics`` scaled
    to ``width`` x ``height``.  Only objects visible in the final render occlude
    (``hide_render``, camera ray visibility, collection render visibility and
    view-layer exclusion are honoured).  Geometry is the evaluated geometry at
    the current frame (modifiers as evaluated by the depsgraph).

    With ``object_ids`` (object name -> id) returns ``(depth, ids)``: ids [H, W] uint16 is the id of the
    object seen at each pixel, 0 for everything not listed (the static world) and for misses.
    With ``lighting`` (from ``light.scene_lighting``; needs ``object_ids``) also the [H, W] float32 light
    ratio of ``light.light_map``: ``(depth, ids, light)``. With ``textures`` (object name -> texture baked by
    ``albedo.bake``) the [H, W, 3] uint8 surface colour of ``albedo.albedo_map`` comes last:
    ``(depth, [ids,] [light,] colour)``.

    Method: exact CPU rasterisation of the evaluated triangles with numpy (ray /
    triangle tests at pixel centres, ray/plane depth) -- identical to ray casting
    up to silhouette ties, and much faster than per-pixel ``scene.ray_cast``.
    """
    width = int(width)
    height = int(height)
    if width <= 0 or height <= 0:
        raise ExportError(f"Invalid depth size {width}x{height}")
    K = camera_intrinsics(scene, cam_obj)
    rw, rh = render_size(scene)
    if (width, height) != (rw, rh):
        # Same field of view, resampled to the requested size (pixel centres kept).
        sx, sy = width / rw, height / rh
        K = K.copy()
        K[0, 0] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    if depsgraph is None:
        depsgraph = bpy.context.evaluated_depsgraph_get()
    cam_eval = cam_obj.evaluated_get(depsgraph) if not cam_obj.is_evaluated else cam_obj
    c2w = _rigid(cam_eval.matrix_world) @ _BLENDER_TO_CV
    w2c = np.linalg.inv(c2w)

    surfaces = None if textures is None else {name: i for i, name in enumerate(textures)}
    tri_ids = tri_surf = tri_uvs = None
    if object_ids is None and surfaces is None:
        tris = _gather_world_triangles(scene, depsgraph)
    elif surfaces is None:
        tris, tri_ids = _gather_world_triangles(scene, depsgraph, object_ids)
    else:
        tris, tri_ids, tri_surf, tri_uvs = _gather_world_triangles(scene, depsgraph, object_ids or {}, surfaces)
    cam_tris = tris @ w2c[:3, :3].T + w2c[:3, 3] if len(tris) else tris
    if lighting is None and textures is None:
        out = _rasterise(cam_tris, K, width, height, tri_ids)
        if object_ids is None:
            return out.astype(np.float32)
        return out[0].astype(np.float32), out[1]
    # which triangle each pixel sees (index + 1), for the ids, the light's normals and the surface colour
    depth, hit = _rasterise(cam_tris, K, width, height, np.arange(1, len(tris) + 1, dtype=np.int64))
    if tri_ids is None:
        tri_ids = np.zeros(len(tris), dtype=np.uint16)
    ids = np.where(hit > 0, tri_ids[np.maximum(hit - 1, 0)], 0).astype(np.uint16) if len(tris) else hit.astype(np.uint16)
    out = [depth.astype(np.float32)]
    if object_ids is not None:
        out.append(ids)
    # world position of every pixel that sees a triangle, shared by the light and the surface colour
    v, u = np.nonzero(hit > 0)
    z = depth[v, u]
    points = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1) @ c2w[:3, :3].T + c2w[:3, 3]
    if lighting is not None:
        out.append(light.light_map(tris, tri_ids, hit, (v, u, points), depth, K, c2w, lighting, _rasterise))
    if textures is not None:
        out.append(albedo.albedo_map(tris, tri_uvs, tri_surf, hit, (v, u, points), list(textures.values()),
                                     (height, width)))
    return tuple(out)
