"""The objects a bake textures, read as plain data: each mesh's evaluated triangles with their UVs and their surface
addresses in the object's memory bank (the world for the still world; the object's own space for a moving one, before
its deformation for one that changes shape), so that core/texels.py can say where the memory is read for every texel.

An object without a UV map gets one made by Smart UV Project on a copy of it: the copy is evaluated (its modifiers
carry the new map along as they carry any UV map) and removed, and the map is added to the object only when the
bake is applied (Surface.new_uvs), so a bake that is cancelled or fails changes nothing.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import bpy
import numpy as np

from ..core import texels as tx
from . import geometry

UV_MAP = "Mirage Bake"  # the UV map a bake adds to an object that has none


@dataclass
class Surface:
    """One object to bake: its name, memory bank (0: the still world, else its id in the job's moving objects),
    triangles' corners in that bank's space [T, 3, 3], their outward unit normals there [T, 3], corner UVs
    [T, 3, 2], its area in the world, whether its mesh is closed (every edge between two faces: nothing of it is
    seen from behind), the UV map the texture lies on, and for an object without one the UVs of the map to add to
    its mesh (one [2] per face corner, mesh loop order), else None."""
    name: str
    bank: int
    corners: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    world_area: float
    closed: bool
    uv_map: str
    new_uvs: Optional[np.ndarray] = None

    @property
    def uv_area(self) -> float:
        return float(tx.areas(self.uvs).sum())


def bake_objects(scene) -> list:
    """The scene's render-visible mesh objects, by name: what a bake textures."""
    return sorted((ob for ob in geometry.surface_objects(scene) if ob.type == "MESH"), key=lambda ob: ob.name)


def read(ob, bank: int, deforming: bool) -> tuple[Optional[Surface], Optional[str]]:
    """(Surface, None) of a mesh object at the current frame, or (None, why not: a short phrase). `deforming`: it
    changes shape during the shot and is addressed before its deformation (its rest positions)."""
    if not len(ob.data.polygons):
        return None, "has no faces"
    if ob.data.uv_layers:
        uv_map = ob.data.uv_layers.active.name
        with geometry.rest_positions([ob] if deforming else []):
            arrays = _evaluated(ob, uv_map, bank, deforming)
        if arrays is None:
            return None, f"loses its UV map '{uv_map}' to its modifiers"
        return Surface(ob.name, bank, *arrays, uv_map), None
    with _unwrapped_copy(ob) as (copy, new_uvs):
        if copy is None:
            return None, "cannot be unwrapped (Smart UV Project failed)"
        with geometry.rest_positions([copy] if deforming else []):
            arrays = _evaluated(copy, UV_MAP, bank, deforming)
    if arrays is None:
        return None, "loses its new UV map to its modifiers"
    return Surface(ob.name, bank, *arrays, UV_MAP, new_uvs), None


def add_uv_map(ob, surface: Surface) -> None:
    """The bake's new UV map added to `ob`'s mesh (once, where another object sharing the mesh has not added it
    already), the user's maps as they were; the new map is not made the active one."""
    me = ob.data
    if me.uv_layers.get(surface.uv_map) is not None:
        return
    active = me.uv_layers.active_index
    had = len(me.uv_layers)
    layer = me.uv_layers.new(name=surface.uv_map, do_init=False)
    layer.data.foreach_set("uv", surface.new_uvs.astype(np.float32).ravel())
    if had:
        me.uv_layers.active_index = active


def _evaluated(ob, uv_map, bank, deforming):
    """(corners [T, 3, 3] in the bank's space, outward normals [T, 3], UVs [T, 3, 2], world area, closed) of `ob`
    evaluated now, its triangles' UVs from the map `uv_map`; None when the evaluated mesh has no such map."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ob_eval = ob.evaluated_get(depsgraph)
    mesh = ob_eval.to_mesh()
    try:
        layer = mesh.uv_layers.get(uv_map) if mesh is not None else None
        if layer is None:
            return None
        mesh.calc_loop_triangles()
        nt, nv = len(mesh.loop_triangles), len(mesh.vertices)
        co = np.empty(nv * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3).astype(np.float64)
        tri = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri)
        loops = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
        layer.data.foreach_get("uv", uv)
        uvs = uv.reshape(-1, 2)[loops].reshape(nt, 3, 2).astype(np.float64)
        rest = None
        attr = mesh.attributes.get("rest_position") if deforming else None
        if attr is not None and attr.domain == "POINT" and len(attr.data) == nv:
            rest = np.empty(nv * 3, dtype=np.float32)
            attr.data.foreach_get("vector", rest)
            rest = rest.reshape(-1, 3).astype(np.float64)
        mw = np.array(ob_eval.matrix_world, dtype=np.float64)
    finally:
        ob_eval.to_mesh_clear()
    tri = tri.reshape(-1, 3)
    world = co @ mw[:3, :3].T + mw[:3, 3]
    if bank == 0:  # the still world is addressed in the world; a mirroring transform flips the winding
        corners, turn = world[tri], (1.0 if np.linalg.det(mw[:3, :3]) >= 0 else -1.0)
    else:  # a moving object in its own space, before its deformation where it changes shape
        corners, turn = (co if rest is None else rest)[tri], 1.0
    # closed: every edge of the triangles (by vertex) is shared by two of them, or more
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    _, count = np.unique(edges[:, 0].astype(np.int64) * nv + edges[:, 1], return_counts=True)
    return corners, tx.outward_normals(corners, turn), uvs, float(tx.areas(world[tri]).sum()), bool((count >= 2).all())


@contextlib.contextmanager
def _unwrapped_copy(ob):
    """(a copy of `ob` whose mesh has one UV map, UV_MAP, made by Smart UV Project; that map's UVs [L, 2]) while the
    block runs, or (None, None) where unwrapping fails; the copy and its mesh are removed afterwards, and the
    selection, active object and mode are as they were."""
    scene = bpy.context.scene
    view_layer = bpy.context.view_layer
    active = view_layer.objects.active
    selected = [o for o in view_layer.objects if o.select_get()]
    copy = ob.copy()
    copy.data = ob.data.copy()
    copy.name = f"{ob.name} (Mirage unwrap)"
    copy.data.uv_layers.new(name=UV_MAP)
    scene.collection.objects.link(copy)
    copy.hide_viewport = False
    uvs = None
    try:
        copy.hide_set(False)
        for o in selected:
            o.select_set(False)
        view_layer.objects.active = copy
        copy.select_set(True)
        try:
            bpy.ops.object.mode_set(mode="EDIT")
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(island_margin=0.002)
            bpy.ops.object.mode_set(mode="OBJECT")
            uvs = np.empty(len(copy.data.loops) * 2, dtype=np.float32)
            copy.data.uv_layers[UV_MAP].data.foreach_get("uv", uvs)
            uvs = uvs.reshape(-1, 2)
        except RuntimeError:
            if copy.mode != "OBJECT":
                bpy.ops.object.mode_set(mode="OBJECT")
        yield (copy, uvs) if uvs is not None else (None, None)
    finally:
        mesh = copy.data
        bpy.data.objects.remove(copy)
        bpy.data.meshes.remove(mesh)
        for o in selected:
            try:
                o.select_set(True)
            except (ReferenceError, RuntimeError):
                pass
        view_layer.objects.active = active
