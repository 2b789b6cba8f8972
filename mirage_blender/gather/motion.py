"""Which objects move during the shot (their own memory in the backend), and which change shape: keeping their
topology (their surface addresses follow them) or not."""
import bpy
import numpy as np

from .camera import matrix_world
from .geometry import surface_objects


def moving_objects(scene, frames) -> list:
    """Render-visible objects whose world transform changes over the frames (animation, constraints,
    drivers, moving parents), plus those the user marked with the Mirage "Moving" toggle. Sorted by name.
    ``scene.frame_current`` is restored afterwards."""
    candidates = surface_objects(scene)
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
                m = np.array(matrix_world(ob), dtype=np.float64)
                ref = first.setdefault(ob.name, m)
                if not np.allclose(m, ref, rtol=0.0, atol=1e-6):
                    moving.add(ob.name)
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
    return sorted((ob for ob in candidates if ob.name in moving), key=lambda ob: ob.name)


def deforming_objects(scene, frames, samples: int = 8) -> list:
    """Render-visible objects whose own geometry changes over the frames (armatures, shape keys, animated
    modifiers), with or without a change of topology. Sorted by name."""
    deforming, remeshed = shape_changes(scene, frames, samples)
    return sorted(deforming + remeshed, key=lambda ob: ob.name)


def shape_changes(scene, frames, samples: int = 8) -> tuple[list, list]:
    """(deforming, remeshed): render-visible objects whose own geometry changes over the frames, judged on up to
    `samples` frames spread over the shot, split into those that keep their topology (armatures, shape keys,
    deforming modifiers: each vertex keeps its rest position, so a surface address can follow it) and those
    whose topology changes from frame to frame (fluids, remeshing geometry nodes) or that emit particles (no
    address can follow them). Each sorted by name. ``scene.frame_current`` is restored afterwards."""
    candidates = [ob for ob in surface_objects(scene) if _may_deform(ob)]
    remeshed = {ob.name for ob in candidates if _emits_particles(ob)}
    frames = [int(f) for f in frames]
    if not candidates or len(frames) < 2:
        return [], sorted((ob for ob in candidates if ob.name in remeshed), key=lambda ob: ob.name)
    picks = sorted({frames[round(i * (len(frames) - 1) / (samples - 1))] for i in range(samples)})
    first, changed = {}, set()
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    try:
        for f in picks:
            scene.frame_set(f)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            for ob in candidates:
                if ob.name in changed or ob.name in remeshed:
                    continue
                co = _local_geometry(ob, depsgraph)
                ref = first.setdefault(ob.name, co)
                if co is None or ref is None:
                    continue
                if co[1] != ref[1]:  # another number of vertices or faces
                    remeshed.add(ob.name)
                    continue
                size = float(np.abs(ref[0]).max()) if ref[0].size else 0.0
                if not np.allclose(co[0], ref[0], rtol=0.0, atol=1e-5 * max(size, 1e-3)):
                    changed.add(ob.name)
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
    by_name = sorted(candidates, key=lambda ob: ob.name)
    return [ob for ob in by_name if ob.name in changed], [ob for ob in by_name if ob.name in remeshed]


def _may_deform(ob):
    """Objects whose geometry could change over time: modifiers, shape keys, animated data or particles."""
    data = ob.data
    keys = getattr(data, "shape_keys", None)
    return bool(len(ob.modifiers) or (keys is not None and keys.animation_data is not None)
                or getattr(data, "animation_data", None) is not None or _emits_particles(ob))


def _emits_particles(ob):
    """Whether the object shows particles (emitted instances or hair): they change every frame."""
    return any(p.settings.render_type != "NONE" for p in getattr(ob, "particle_systems", ()))


def _local_geometry(ob, depsgraph):
    """(vertex coordinates [V * 3] float32 of the evaluated object in its own space, (vertices, faces)), or None."""
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
        return co, (len(mesh.vertices), len(mesh.polygons))
    finally:
        ob_eval.to_mesh_clear()
