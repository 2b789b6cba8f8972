"""The bench's own per-pixel maps of the ground truth: on every ground-truth frame, which object each pixel
shows, its exact depth, and where on that object's surface it is in the object's rest space.

Made in the ground-truth Blender session and cached with the ground truth, so the bench never judges the
product's frames with maps the product exported itself. The rest space follows a surface however it moves
or deforms: each object's `add_rest_position_attribute` is set while the maps are made (the evaluated mesh
then carries `rest_position`, its vertices before shape keys and modifiers; objects without it are
undeformed and their local coordinates are their rest space), and the rest coordinates are scaled by the
object's own scale so that distances in it are in scene units. Depth is rasterised by the add-on's own
numpy rasteriser (mirage_blender/core/raster.py) on the evaluated triangles, at pixel centres.

Per frame `<folder>/maps/<frame>.npz`: depth [H, W] float32 (planar camera z, inf where nothing), obj [H, W]
uint16 (1 + index into objects.json's names, 0 where nothing), and for the pixels of actors (objects whose
transform or shape changes over the frames) rest [H, W, 3] float32, normal [H, W, 3] float16 (the face's
normal in rest space, turned toward the side the camera sees) and cos [H, W] float16 (|cos| of the angle
between the view ray and the face); K and c2w (OpenCV, as the job format). objects.json: names, actors.
"""
import importlib
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = 1  # bump when what the maps hold changes (part of the cache key)


def addon_core(name):
    """A module of the add-on's core (numpy only, imports nothing outside its folder) without the add-on's
    package, which registers Blender classes."""
    pkg = "bench_addon_core"
    if pkg not in sys.modules:
        mod = types.ModuleType(pkg)
        mod.__path__ = [os.path.join(ROOT, "mirage_blender", "core")]
        sys.modules[pkg] = mod
    return importlib.import_module(f"{pkg}.{name}")


# -- Blender side -----------------------------------------------------------------------------------------
def surface_objects(scene):
    """The render-visible mesh objects, sorted by name."""
    return sorted((ob for ob in scene.objects if ob.type == "MESH" and not ob.hide_render), key=lambda o: o.name)


def camera(scene):
    """(K, c2w) of the scene's camera at the current frame, by the add-on's conventions (core/camera.py)."""
    cv = addon_core("camera")
    cam = scene.camera
    r = scene.render
    lens = cv.Lens(name=cam.name, lens=cam.data.lens, sensor_width=cam.data.sensor_width,
                   sensor_height=cam.data.sensor_height, sensor_fit=cam.data.sensor_fit,
                   shift_x=cam.data.shift_x, shift_y=cam.data.shift_y)
    size = cv.render_size(r.resolution_x, r.resolution_y, r.resolution_percentage)
    K = cv.intrinsics(lens, size, (r.pixel_aspect_x, r.pixel_aspect_y))
    return K, cv.camera_to_world(np.array(cam.matrix_world, np.float64)), size


def _geometry(ob, depsgraph):
    """(local vertex positions [V, 3], rest positions [V, 3], triangles [T, 3], matrix_world) of the evaluated
    object."""
    ob_eval = ob.evaluated_get(depsgraph)
    mesh = ob_eval.to_mesh()
    try:
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3).astype(np.float64)
        rest = co
        attr = mesh.attributes.get("rest_position")
        if attr is not None and attr.domain == "POINT" and len(attr.data) == len(co):
            r = np.empty(len(co) * 3, np.float32)
            attr.data.foreach_get("vector", r)
            rest = r.reshape(-1, 3).astype(np.float64)
        tris = np.empty(len(mesh.loop_triangles) * 3, np.int64)
        mesh.loop_triangles.foreach_get("vertices", tris)
        return co, rest, tris.reshape(-1, 3), np.array(ob_eval.matrix_world, np.float64)
    finally:
        ob_eval.to_mesh_clear()


def find_actors(scene, frames, objects):
    """Names of the objects whose world transform or evaluated shape changes over the frames."""
    import bpy
    first, moving = {}, set()
    for n in frames:
        scene.frame_set(n)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        for ob in objects:
            if ob.name in moving:
                continue
            co, _, _, M = _geometry(ob, depsgraph)
            ref = first.setdefault(ob.name, (co, M))
            size = max(float(np.abs(ref[0]).max()) if ref[0].size else 0.0, 1e-3)
            if (co.shape != ref[0].shape or not np.allclose(co, ref[0], rtol=0, atol=1e-5 * size)
                    or not np.allclose(M, ref[1], rtol=0, atol=1e-6)):
                moving.add(ob.name)
    return sorted(moving)


def export(scene, frames, folder):
    """Write the maps of `frames` (those not there yet) into <folder>/maps/; returns how many were made.
    The scene's frame and the objects' add_rest_position_attribute are as they were afterwards."""
    import bpy
    raster = addon_core("raster")
    out = os.path.join(folder, "maps")
    todo = [n for n in frames if not os.path.isfile(os.path.join(out, f"{n:06d}.npz"))]
    if not todo and os.path.isfile(os.path.join(out, "objects.json")):
        return 0
    os.makedirs(out, exist_ok=True)
    objects = surface_objects(scene)
    names = [ob.name for ob in objects]
    frame_before = scene.frame_current
    flags = {ob.name: ob.add_rest_position_attribute for ob in objects}
    try:
        for ob in objects:
            ob.add_rest_position_attribute = True
        actors = find_actors(scene, frames, objects)
        for n in todo:
            scene.frame_set(n)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            K, c2w, (W, H) = camera(scene)
            w2c = np.linalg.inv(c2w)
            cam_tris, rest_tris, owner = [], [], []
            for i, ob in enumerate(objects, 1):
                co, rest, tris, M = _geometry(ob, depsgraph)
                if not len(tris):
                    continue
                cam = (co @ M[:3, :3].T + M[:3, 3]) @ w2c[:3, :3].T + w2c[:3, 3]
                scaled = rest * np.linalg.norm(M[:3, :3], axis=0)  # rest space in scene units
                cam_tris.append(cam[tris])
                rest_tris.append(scaled[tris])
                owner.append(np.full(len(tris), i, np.uint16))
            cam_tris = np.concatenate(cam_tris) if cam_tris else np.zeros((0, 3, 3))
            rest_tris = np.concatenate(rest_tris) if rest_tris else np.zeros((0, 3, 3))
            owner = np.concatenate(owner) if owner else np.zeros(0, np.uint16)
            depth, hit = raster.depth_and_hit(cam_tris, K, W, H)
            maps = surface_at_pixels(depth, hit, cam_tris, rest_tris, owner, K,
                                     keep={names.index(a) + 1 for a in actors})
            np.savez_compressed(os.path.join(out, f"{n:06d}.npz"), K=K, c2w=c2w, **maps)
    finally:
        for ob in objects:
            ob.add_rest_position_attribute = flags[ob.name]
        scene.frame_set(frame_before)
    with open(os.path.join(out, "objects.json"), "w", encoding="utf-8") as f:
        json.dump({"version": VERSION, "names": names, "actors": actors}, f, indent=1)
    return len(todo)


# -- numpy: from the rasteriser's hits to the maps -------------------------------------------------------
def surface_at_pixels(depth, hit, cam_tris, rest_tris, owner, K, keep=None):
    """The maps of one frame from the rasteriser's depth and hit (triangle index + 1): obj, and for the pixels of
    the objects in `keep` (all when None) the rest position interpolated barycentrically at the hit, the
    rest-space normal turned toward the side seen, and |cos| of the view angle."""
    H, W = depth.shape
    obj = np.zeros((H, W), np.uint16)
    rest = np.zeros((H, W, 3), np.float32)
    normal = np.zeros((H, W, 3), np.float16)
    cosv = np.zeros((H, W), np.float16)
    v, u = np.nonzero(hit > 0)
    if len(v):
        t = hit[v, u] - 1
        obj[v, u] = owner[t]
        if keep is not None:
            sel = np.isin(owner[t], list(keep))
            v, u, t = v[sel], u[sel], t[sel]
    if len(v):
        z = depth[v, u]
        p = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
        c = cam_tris[t]
        b = barycentric(p, c)
        r = rest_tris[t]
        rest[v, u] = np.einsum("nk,nkc->nc", b, r)
        nc = np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0])
        nr = np.cross(r[:, 1] - r[:, 0], r[:, 2] - r[:, 0])
        facing = np.where(np.einsum("nc,nc->n", nc, p) < 0, 1.0, -1.0)  # the camera sits at the origin
        nr = nr * facing[:, None] / np.maximum(np.linalg.norm(nr, axis=1, keepdims=True), 1e-12)
        normal[v, u] = nr
        cosv[v, u] = np.abs(np.einsum("nc,nc->n", nc, p)) / np.maximum(
            np.linalg.norm(nc, axis=1) * np.linalg.norm(p, axis=1), 1e-12)
    return {"depth": depth.astype(np.float32), "obj": obj, "rest": rest, "normal": normal, "cos": cosv}


def barycentric(p, tri):
    """[N, 3] barycentric coordinates of points p [N, 3] in triangles tri [N, 3, 3] (clipped to the triangle)."""
    e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    d20, d21 = (d * e1).sum(1), (d * e2).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-30, d00 * d11 - d01 * d01, 1e-30)
    b1 = np.clip((d11 * d20 - d01 * d21) / den, 0, 1)
    b2 = np.clip((d00 * d21 - d01 * d20) / den, 0, 1)
    s = b1 + b2
    over = s > 1
    b1, b2 = np.where(over, b1 / s, b1), np.where(over, b2 / s, b2)
    return np.stack([1 - b1 - b2, b1, b2], 1)


# -- the bench's side: reading them ----------------------------------------------------------------------
class Maps:
    """The cached maps of one scene: objects (names, actors, ids) and each frame's arrays."""

    def __init__(self, folder):
        self.folder = os.path.join(folder, "maps")
        with open(os.path.join(self.folder, "objects.json"), encoding="utf-8") as f:
            info = json.load(f)
        self.names = info["names"]
        self.ids = {name: i for i, name in enumerate(self.names, 1)}
        self.actors = {self.ids[a]: a for a in info["actors"]}
        self._cache = {}

    def frame(self, n):
        """{depth (float64, inf where nothing), obj, rest, normal, cos, K, c2w} of ground-truth frame n."""
        if n not in self._cache:
            with np.load(os.path.join(self.folder, f"{n:06d}.npz")) as z:
                d = {k: z[k] for k in z.files}
            d["depth"] = d["depth"].astype(np.float64)
            d["rest"] = d["rest"].astype(np.float64)
            d["normal"] = d["normal"].astype(np.float64)
            d["cos"] = d["cos"].astype(np.float64)
            self._cache[n] = d
        return self._cache[n]

    def static(self, n):
        """[H, W] bool: pixels of objects that never move (not actors), with a surface."""
        obj = self.frame(n)["obj"]
        return (obj > 0) & ~np.isin(obj, list(self.actors))
