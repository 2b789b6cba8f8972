"""The scene's render-visible geometry as plain triangles (core.scene.Triangles), with each triangle's
moving-object id, its surface addresses and, for objects with a baked texture, its UVs."""
import contextlib

import bpy
import numpy as np

from ..core.scene import Triangles

# Object types whose evaluated geometry has renderable surfaces (to_mesh()).
SURFACE_TYPES = frozenset({"MESH", "CURVE", "SURFACE", "FONT", "META"})


def render_visible(view_layer) -> set[str]:
    """Full names of the original objects that take part in the final render of ``view_layer``: in at
    least one collection that is neither excluded from the view layer nor ``hide_render`` (including all
    parent collections). Objects' own visibility is ``renders``."""
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


def renders(ob, visible_names: set[str]) -> bool:
    """An object renders when it is not ``hide_render``, its camera ray visibility is on and it is in
    ``visible_names`` (from ``render_visible``)."""
    if ob.hide_render or not getattr(ob, "visible_camera", True):
        return False
    return ob.name_full in visible_names


def surface_objects(scene) -> list:
    """The scene's render-visible objects that have surfaces."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    visible = render_visible(depsgraph.view_layer)
    return [ob for ob in scene.objects if ob.type in SURFACE_TYPES and renders(ob, visible)]


def part_numbers(scene) -> dict[str, int]:
    """Object name -> its number (1, 2, ... by name) for every render-visible object with surfaces: which
    object a pixel sees, the same number on every frame of a job."""
    names = sorted(ob.name for ob in surface_objects(scene))
    return {name: i for i, name in enumerate(names[:0xFFFF], 1)}


@contextlib.contextmanager
def rest_positions(objects):
    """Object.add_rest_position_attribute on for `objects` while the block runs (their evaluated meshes then carry
    the `rest_position` attribute: positions before shape keys and modifiers), each object's own setting back
    afterwards, also on error or when the export stops early."""
    before = []
    try:
        for ob in objects:
            before.append((ob, ob.add_rest_position_attribute))
            ob.add_rest_position_attribute = True
        yield
    finally:
        for ob, flag in before:
            try:
                if ob.add_rest_position_attribute != flag:
                    ob.add_rest_position_attribute = flag
            except ReferenceError:  # the user deleted the object while the export ran
                pass


def triangles(depsgraph, object_ids: dict = None, surfaces: dict = None, parts: dict = None,
              rest: bool = False, deforming: frozenset = frozenset()) -> Triangles:
    """All render-visible evaluated triangles at the current frame, in world space.

    object_ids: object name -> moving-object id (others get 0; instanced geometry takes its instancer's
    id). surfaces: object name -> index of its baked texture; those objects' triangles get the index and
    their corner UVs from the active UV map (instances and objects without a UV map get -1). parts: object
    name -> number (part_numbers); each triangle gets its object's, instances their instancer's (0 without).
    rest: also each triangle's surface address (Triangles.rest): world corners for the still world, the object's
    own coordinates for a moving one, before deformation for the objects named in `deforming` (their evaluated
    mesh's `rest_position` attribute, which Object.add_rest_position_attribute puts there)."""
    visible = render_visible(depsgraph.view_layer)
    chunks, id_chunks, surf_chunks, uv_chunks, part_chunks, rest_chunks, turn_chunks = [], [], [], [], [], [], []
    for inst in depsgraph.object_instances:
        ob = inst.object
        if ob.type not in SURFACE_TYPES or not _instance_renders(inst, visible):
            continue
        owner = inst.parent.original if inst.is_instance and inst.parent is not None else ob.original
        # a texture is baked per object, so instances (other transforms, same UVs) share their object's
        surf = -1 if surfaces is None or inst.is_instance else surfaces.get(ob.original.name, -1)
        oid = 0 if object_ids is None else object_ids.get(ob.original.name, object_ids.get(owner.name, 0))
        before = rest and oid != 0 and not inst.is_instance and ob.original.name in deforming
        mesh = _mesh_arrays(ob, surf >= 0, before)
        if mesh is None:
            continue
        co, tri, corner_uv, rest_co = mesh
        if corner_uv is None:
            surf, corner_uv = -1, np.zeros((len(tri), 3, 2))
        mw = np.array(inst.matrix_world, dtype=np.float64)
        local = co.reshape(-1, 3).astype(np.float64)
        world = local @ mw[:3, :3].T + mw[:3, 3]
        chunks.append(world[tri])
        uv_chunks.append(corner_uv)
        surf_chunks.append(np.full(len(tri), surf, dtype=np.int32))
        id_chunks.append(np.full(len(tri), oid, dtype=np.uint16))
        part = 0 if parts is None else parts.get(ob.original.name, parts.get(owner.name, 0))
        part_chunks.append(np.full(len(tri), part, dtype=np.uint16))
        if rest:
            corners, turn = _rest_corners(oid, inst, mw, local, world, rest_co)
            rest_chunks.append(corners[tri])
            turn_chunks.append(np.full(len(tri), turn, dtype=np.int8))
    if not chunks:
        empty = np.empty((0, 3, 3), dtype=np.float64)
        return Triangles(empty, np.zeros(0, dtype=np.uint16), np.empty(0, dtype=np.int32), np.empty((0, 3, 2)),
                         np.zeros(0, dtype=np.uint16), empty if rest else None, np.zeros(0, np.int8) if rest else None)
    return Triangles(np.concatenate(chunks, axis=0), np.concatenate(id_chunks), np.concatenate(surf_chunks),
                     np.concatenate(uv_chunks), np.concatenate(part_chunks),
                     np.concatenate(rest_chunks) if rest else None, np.concatenate(turn_chunks) if rest else None)


def _rest_corners(oid, inst, mw, local, world, rest_co):
    """(vertex addresses [V, 3], +1 or -1: whether they wind as the world's do) of one evaluated object."""
    if oid == 0:
        return world, 1  # the still world is addressed in the world itself
    if not inst.is_instance:
        # the object's own coordinates: fixed on the surface however the object moves (rest_co: before deformation)
        return (local if rest_co is None else rest_co), (1 if np.linalg.det(mw[:3, :3]) >= 0 else -1)
    # geometry instanced by a moving object rides in its instancer's space
    pose = np.array(inst.parent.matrix_world, dtype=np.float64)
    inv = np.linalg.inv(pose)
    return world @ inv[:3, :3].T + inv[:3, 3], (1 if np.linalg.det(pose[:3, :3]) >= 0 else -1)


def _instance_renders(inst, visible):
    ob = inst.object
    if inst.is_instance:
        # Instanced geometry renders when its instancer does.
        parent = inst.parent
        if parent is None or not renders(parent.original, visible):
            return False
        return not (ob.original.hide_render or not getattr(ob.original, "visible_camera", True))
    if not renders(ob.original, visible):
        return False
    return not (ob.is_instancer and not ob.original.show_instancer_for_render)


def _mesh_arrays(ob, with_uvs, with_rest=False):
    """(vertex coordinates [V * 3] float32, triangle corners [T, 3] int32, corner UVs [T, 3, 2] float64 or None,
    rest positions [V, 3] float64 or None) of an evaluated object, or None when it has no triangles. UVs only
    ``with_uvs`` and when the mesh has an active UV map; rest positions only ``with_rest`` and when the evaluated
    mesh carries the `rest_position` attribute."""
    try:
        mesh = ob.to_mesh()
    except RuntimeError:
        mesh = None
    if mesh is None:
        return None
    try:
        mesh.calc_loop_triangles()
        nv = len(mesh.vertices)
        nt = len(mesh.loop_triangles)
        if nv == 0 or nt == 0:
            return None
        co = np.empty(nv * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tri = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri)
        corner_uv = None
        if with_uvs and mesh.uv_layers.active is not None:
            loops = np.empty(nt * 3, dtype=np.int32)
            mesh.loop_triangles.foreach_get("loops", loops)
            uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
            mesh.uv_layers.active.data.foreach_get("uv", uv)
            corner_uv = uv.reshape(-1, 2)[loops].reshape(nt, 3, 2).astype(np.float64)
        rest_co = None
        attr = mesh.attributes.get("rest_position") if with_rest else None
        if attr is not None and attr.domain == "POINT" and len(attr.data) == nv:
            rest_co = np.empty(nv * 3, dtype=np.float32)
            attr.data.foreach_get("vector", rest_co)
            rest_co = rest_co.reshape(-1, 3).astype(np.float64)
        return co, tri.reshape(-1, 3), corner_uv, rest_co
    finally:
        ob.to_mesh_clear()
