"""Which objects move during the shot (their own memory in the backend), and which change shape."""
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
    modifiers), judged on up to `samples` frames spread over the shot. Sorted by name.
    ``scene.frame_current`` is restored afterwards."""
    candidates = [ob for ob in surface_objects(scene) if _may_deform(ob)]
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


def _may_deform(ob):
    """Objects whose geometry could change over time: modifiers, shape keys or animated data."""
    data = ob.data
    keys = getattr(data, "shape_keys", None)
    return bool(len(ob.modifiers) or (keys is not None and keys.animation_data is not None)
                or getattr(data, "animation_data", None) is not None)


def _local_geometry(ob, depsgraph):
    """Vertex coordinates [V * 3] float32 of the evaluated object in its own space, or None."""
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
