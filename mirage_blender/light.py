"""How the light on each pixel changes because objects move: the scene's lamps, its world light and
shadow maps rasterised from the scene's own triangles.

The memory holds what the reference showed, lit as it was then. A crate that turns shows its faces
to the sun at new angles, and its shadow moves with it over the floor. Neither is in any image the
memory has, but both are in the scene, so the add-on works them out and the backend applies them.

The exported ``light`` map is a ratio per pixel:
- on the static world: the light the surface gets on this frame over the light it would get with
  the moving objects taken away (1 except in a moving object's shadow);
- on a moving object: the light its surface gets on this frame over a fixed level for the scene.
The backend divides the reference by its ratios before storing it and multiplies each frame by its
own, so only changes of light reach the frames.

The light model is simple on purpose: lamps (sun, point, spot, area taken as a one-sided point) with
their shadows from shadow maps, a uniform world, light bounced by the scene as if from all around,
flat triangle normals. A texture feeding the world's colour is taken as mid grey.
"""
import math

import bpy
import numpy as np

# How much of the suns' and the sky's light the scene bounces back (an average albedo).
GROUND_ALBEDO = 0.25
# Shadow maps: texels per side, about one output pixel each, within these bounds.
MAP_MIN, MAP_MAX = 64, 2048


def _luminance(rgb):
    r, g, b = (float(c) for c in tuple(rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _world_radiance(world):
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
                c = 0.5 if color.is_linked else _luminance(color.default_value)
                return c * (1.0 if strength.is_linked else float(strength.default_value))
        return 0.0
    return _luminance(world.color)


class Lamp:
    """A light as the light map needs it: a sun (`direction` toward it, `power` its irradiance) or a local
    lamp at `position` (point, spot or area; `power` in watts), with a spot's cone or an area's facing."""

    def __init__(self, kind, power, direction=None, position=None, axis=None, cone=None, blend=0.0):
        self.kind, self.power = kind, power
        self.direction, self.position, self.axis = direction, position, axis
        self.cone, self.blend = cone, blend

    def incoming(self, points):
        """Unit vectors toward the lamp [N, 3] and the irradiance it would give a surface facing it [N]."""
        if self.kind == "SUN":
            return np.broadcast_to(self.direction, points.shape), np.full(len(points), self.power)
        to = self.position - points
        dist2 = np.maximum((to * to).sum(1), 1e-12)
        d = to / np.sqrt(dist2)[:, None]
        if self.kind == "AREA":  # a one-sided Lambertian emitter: intensity P / pi along its axis
            return d, self.power / math.pi * np.clip(-(d @ self.axis), 0.0, None) / dist2
        e = self.power / (4.0 * math.pi) / dist2  # a point (or spot) of power P: intensity P / (4 pi)
        if self.kind == "SPOT":
            c = -(d @ self.axis)
            edge = math.cos(self.cone / 2.0)
            soft = max(self.blend * (1.0 - edge), 1e-6)
            t = np.clip((c - edge) / soft, 0.0, 1.0)
            e = e * t * t * (3.0 - 2.0 * t)
        return d, e


def scene_lighting(scene, visible_names):
    """{"lamps": [Lamp], "sky": world radiance} at the current frame."""
    lamps = []
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for ob in scene.objects:
        if ob.type != "LIGHT" or ob.name_full not in visible_names or ob.hide_render:
            continue
        light = ob.data
        m = np.array(ob.evaluated_get(depsgraph).matrix_world, dtype=np.float64)
        z = m[:3, 2] / max(np.linalg.norm(m[:3, 2]), 1e-30)  # a lamp shines along its local -Z
        power = float(light.energy) * _luminance(light.color)
        if not (power > 0 and np.all(np.isfinite(m))):
            continue
        if light.type == "SUN":
            lamps.append(Lamp("SUN", power, direction=z))
        elif light.type in ("POINT", "SPOT", "AREA"):
            lamps.append(Lamp(light.type, power, position=m[:3, 3].copy(), axis=-z,
                              cone=float(getattr(light, "spot_size", math.pi)), blend=float(getattr(light, "spot_blend", 0.0))))
    return {"lamps": lamps, "sky": _world_radiance(scene.world)}


def _basis(d):
    """Two unit vectors orthogonal to d and to each other."""
    a = np.cross(d, (0.0, 0.0, 1.0) if abs(d[2]) < 0.9 else (1.0, 0.0, 0.0))
    a /= np.linalg.norm(a)
    return a, np.cross(d, a)


def _lookup(q, smap, f, c, texel, cos):
    """Fraction of a 3x3 texel neighbourhood of the shadow map in which points (in the map's camera space)
    lie no deeper than what the map holds, with a slope-scaled bias."""
    res = smap.shape[0]
    u, v = f * q[:, 0] / q[:, 2] + c, f * q[:, 1] / q[:, 2] + c
    cos = np.abs(cos).clip(0.05, 1.0)
    # enough slack that a lit surface does not shadow itself across a texel at its slope
    bias = texel * (1.5 + 2.0 * np.sqrt(1.0 - cos ** 2) / cos).clip(max=20.0)
    iu, iv = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    lit = np.zeros(len(q))
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            x, y = (iu + du).clip(0, res - 1), (iv + dv).clip(0, res - 1)
            lit += q[:, 2] <= smap[y, x] + bias
    return lit / 9.0


def _sun_visibility(points, cos, tris, sun, texel, rasterise):
    """Orthographic shadow map along the sun with texels of about `texel` (world units), over the
    points' own extent (an occluder matters only where it covers a point as seen from the sun),
    drawn with the depth rasteriser from far away."""
    a, b = _basis(sun)
    pa, pb = points @ a, points @ b
    lo_a, hi_a, lo_b, hi_b = pa.min(), pa.max(), pb.min(), pb.max()
    span = max(hi_a - lo_a, hi_b - lo_b, 1e-6) * 1.02 + 1e-6
    res = int(np.clip(math.ceil(span / texel), MAP_MIN, MAP_MAX))
    texel = span / res
    mid_a, mid_b = 0.5 * (lo_a + hi_a), 0.5 * (lo_b + hi_b)
    centre = points.mean(axis=0)
    far = 1e5 * (span + float(np.abs(points - centre).max()) + 1.0)
    # sun camera: x along a, y along b, z from the sun toward the scene, `far` away (orthographic to 1e-5)
    rot = np.stack([a, b, -sun])

    def to_cam(p):
        q = (p - centre) @ rot.T
        q[..., 0] -= mid_a - centre @ a
        q[..., 1] -= mid_b - centre @ b
        q[..., 2] += far
        return q

    f = far * res / span
    K = np.array([[f, 0.0, (res - 1) / 2.0], [0.0, f, (res - 1) / 2.0], [0.0, 0.0, 1.0]])
    return _lookup(to_cam(points), rasterise(to_cam(tris), K, res, res), f, (res - 1) / 2.0, texel, cos)


# the six faces of a cube around a local lamp: rows are the face camera's x (right), y (down), z (forward)
_FACES = [np.array(r, dtype=np.float64) for r in (
    [[0, 0, -1], [0, -1, 0], [1, 0, 0]], [[0, 0, 1], [0, -1, 0], [-1, 0, 0]],
    [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[1, 0, 0], [0, 0, -1], [0, -1, 0]],
    [[1, 0, 0], [0, -1, 0], [0, 0, 1]], [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])]


def _local_visibility(points, cos, tris, position, texel, rasterise):
    """A cube of perspective shadow maps around a local lamp; only the faces some point falls in are drawn."""
    rel = points - position
    vis = np.ones(len(points))
    face = np.argmax(np.stack([rel @ F[2] for F in _FACES], 1), axis=1)
    for k, F in enumerate(_FACES):
        sel = face == k
        if not sel.any():
            continue
        q = rel[sel] @ F.T
        dist = float(np.median(q[:, 2]))
        res = int(np.clip(math.ceil(2.0 * dist / texel), MAP_MIN, MAP_MAX))  # 90 degrees: 2 * dist across
        f, c = res / 2.0, (res - 1) / 2.0
        K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
        smap = rasterise((tris - position) @ F.T, K, res, res)
        vis[sel] = _lookup(q, smap, f, c, q[:, 2] * 2.0 / res, cos[sel])
    return vis


def _visibility(points, normals, tris, lamp, toward, texel, rasterise):
    """Fraction (0..1) of each point's light from `lamp` that `tris` let through (3x3 texels of a shadow map)."""
    if len(tris) == 0 or len(points) == 0:
        return np.ones(len(points))
    cos = (normals * toward).sum(1)
    if lamp.kind == "SUN":
        return _sun_visibility(points, cos, tris, lamp.direction, texel, rasterise)
    return _local_visibility(points, cos, tris, lamp.position, texel, rasterise)


def _in_shadow_reach(points, movers, lamp, margin):
    """Points that a moving triangle could shade: inside the movers' box as seen from a sun, or inside the
    cone from a local lamp around the movers' bounding sphere (beyond its near side)."""
    corners = movers.reshape(-1, 3)
    if lamp.kind == "SUN":
        a, b = _basis(lamp.direction)
        ma, mb = corners @ a, corners @ b
        pa, pb = points @ a, points @ b
        return (pa >= ma.min() - margin) & (pa <= ma.max() + margin) & (pb >= mb.min() - margin) & (pb <= mb.max() + margin)
    centre = 0.5 * (corners.min(0) + corners.max(0))
    radius = float(np.linalg.norm(corners - centre, axis=1).max()) + margin
    axis = centre - lamp.position
    dist = float(np.linalg.norm(axis))
    if dist <= radius:
        return np.ones(len(points), dtype=bool)
    rel = points - lamp.position
    r = np.linalg.norm(rel, axis=1).clip(1e-12)
    return ((rel @ axis) / (r * dist) >= math.cos(math.asin(radius / dist))) & (r >= dist - radius)


def light_map(tris, tri_ids, hit, seen, depth, K, c2w, lighting, rasterise):
    """[H, W] float32 light ratio (see the module's docstring) for one camera.

    tris: [N, 3, 3] world triangles; tri_ids: [N] object id (0 = static world); hit: [H, W] index + 1 of
    the triangle seen at each pixel (0 = none); seen: (rows, columns, world positions [M, 3]) of the pixels
    with hit > 0; depth: [H, W] planar depth; K, c2w: OpenCV camera."""
    H, W = depth.shape
    out = np.ones((H, W), dtype=np.float32)
    lamps = lighting["lamps"]
    v, u, points = seen
    if not lamps and lighting["sky"] <= 0 or not len(v):
        return out
    texel = float(np.median(depth[v, u])) / K[0, 0]  # one output pixel at the median depth
    t = hit[v, u] - 1
    fixed, movers = tris[tri_ids == 0], tris[tri_ids != 0]
    # the static world's ratio is 1 outside the moving objects' shadows: only the objects' own pixels and
    # what their shadows can reach are worked out
    keep = tri_ids[t] != 0
    for lamp in lamps:
        if len(movers):
            keep |= _in_shadow_reach(points, movers, lamp, 3.0 * texel)
    # light bounced by the scene: a share of the lamps' average direct light on what the camera sees
    sky = lighting["sky"] * math.pi
    up = np.array([0.0, 0.0, 1.0])
    sample = points[:: max(1, len(points) // 4096)]
    bounce = GROUND_ALBEDO * (sky + sum(float(np.mean(e * np.clip(d @ up, 0.0, None)))
                                        for d, e in (lamp.incoming(sample) for lamp in lamps)))
    v, u, t, points = v[keep], u[keep], t[keep], points[keep]
    if not len(t):
        return out
    tri = tris[t]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-30)
    n *= np.where(np.einsum("ij,ij->i", n, c2w[:3, 3] - points) < 0, -1.0, 1.0)[:, None]  # toward the camera
    moving = tri_ids[t] != 0
    # sky from above; light bounced from all around, more from below (the lit ground)
    ambient = sky * (1.0 + n[:, 2]) / 2.0 + bounce * (3.0 - n[:, 2]) / 4.0
    with_all, without = ambient.copy(), ambient.copy()
    for lamp in lamps:
        toward, e = lamp.incoming(points)
        direct = e * np.clip((n * toward).sum(1), 0.0, None)
        lit = direct > 0
        vis_moving, vis_static = np.ones(len(points)), np.ones(len(points))
        vis_moving[lit] = _visibility(points[lit], n[lit], movers, lamp, toward[lit], texel, rasterise)
        # the static world's own shadows cancel in its ratio: they matter only on moving objects and
        # where a moving object's shadow falls (a much smaller map than the whole view)
        need = lit & (moving | (vis_moving < 1.0))
        vis_static[need] = _visibility(points[need], n[need], fixed, lamp, toward[need], texel, rasterise)
        with_all += direct * vis_static * vis_moving
        without += direct * vis_static
    # any fixed level for the objects' light: it cancels between reference and frame
    level = (sky + sum(lamp.power for lamp in lamps if lamp.kind == "SUN") + bounce) / 2.0
    base = np.where(moving, level if level > 0 else 1.0, without)
    out[v, u] = np.where(base > 1e-9, with_all / np.maximum(base, 1e-9), 1.0)
    return out
