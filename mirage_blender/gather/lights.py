"""The scene's lamps and world light as plain data (core.lamps.Lighting)."""
import math

import bpy
import numpy as np

from ..core.lamps import Lamp, Lighting, luminance


def world_radiance(world) -> float:
    """The world's background radiance as one luminance (0 without a world)."""
    if world is None:
        return 0.0
    # from Blender 5.0 a world always renders its nodes (use_nodes is deprecated)
    uses_nodes = bpy.app.version >= (5, 0, 0) or world.use_nodes
    tree = world.node_tree if uses_nodes else None
    if tree is not None:
        for node in tree.nodes:
            if node.type == "BACKGROUND" and node.outputs[0].is_linked:
                color, strength = node.inputs["Color"], node.inputs["Strength"]
                # a texture feeding the colour cannot be read here: taken as mid grey
                c = 0.5 if color.is_linked else luminance(color.default_value)
                return c * (1.0 if strength.is_linked else float(strength.default_value))
        return 0.0
    return luminance(world.color)


def scene_lighting(scene, visible_names: set[str]) -> Lighting:
    """The render-visible lamps (by full name in ``visible_names``) and the world at the current frame."""
    lamps = []
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for ob in scene.objects:
        if ob.type != "LIGHT" or ob.name_full not in visible_names or ob.hide_render:
            continue
        light = ob.data
        m = np.array(ob.evaluated_get(depsgraph).matrix_world, dtype=np.float64)
        z = m[:3, 2] / max(np.linalg.norm(m[:3, 2]), 1e-30)  # a lamp shines along its local -Z
        power = float(light.energy) * luminance(light.color)
        if not (power > 0 and np.all(np.isfinite(m))):
            continue
        if light.type == "SUN":
            lamps.append(Lamp("SUN", power, direction=z))
        elif light.type in ("POINT", "SPOT", "AREA"):
            lamps.append(Lamp(light.type, power, position=m[:3, 3].copy(), axis=-z,
                              cone=float(getattr(light, "spot_size", math.pi)),
                              blend=float(getattr(light, "spot_blend", 0.0)), radius=_radius(light, m)))
    return Lighting(lamps=lamps, sky=world_radiance(scene.world))


def _radius(light, m):
    """A local lamp's size in world units where it changes the falloff: an area lamp's half width (the mean of
    its two sides, scaled by the object). A point or spot lamp is a sphere, which lights what lies outside it
    exactly as a point of the same power does: 0."""
    if light.type != "AREA":
        return 0.0
    scale = float(np.cbrt(abs(np.linalg.det(m[:3, :3])))) or 1.0
    sx = float(light.size)
    sy = float(light.size_y) if light.shape in ("RECTANGLE", "ELLIPSE") else sx
    return 0.25 * (sx + sy) * scale
