"""How the light on each pixel changes because objects move: the scene's suns, its world light and
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

The light model is simple on purpose: sun lamps with their shadows, a uniform world, light bounced
by the scene as if from all around, flat triangle normals. Point, spot and area lamps and textured
worlds are taken as constant (they cancel in the ratio).
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


def scene_lighting(scene, visible_names):
    """{"suns": [(unit vector toward the sun, irradiance)], "sky": world radiance} at the current frame."""
    suns = []
    for ob in scene.objects:
        if ob.type != "LIGHT" or ob.data.type != "SUN" or ob.name_full not in visible_names or ob.hide_render:
            continue
        m = np.array(ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).matrix_world, dtype=np.float64)
        d = m[:3, 2]  # a sun shines along its local -Z
        n = np.linalg.norm(d)
        energy = float(ob.data.energy) * _luminance(ob.data.color)
        if n > 0 and math.isfinite(n) and energy > 0:
            suns.append((d / n, energy))
    return {"suns": suns, "sky": _world_radiance(scene.world)}


def _basis(d):
    """Two unit vectors orthogonal to d and to each other."""
    a = np.cross(d, (0.0, 0.0, 1.0) if abs(d[2]) < 0.9 else (1.0, 0.0, 0.0))
    a /= np.linalg.norm(a)
    return a, np.cross(d, a)


def _visibility(points, normals, tris, sun, texel, rasterise):
    """Fraction (0..1) of a 3x3 texel neighbourhood in which each point sees the sun past `tris`.

    Orthographic shadow map along the sun with texels of about `texel` (world units), over the
    points' own extent (an occluder matters only where it covers a point as seen from the sun),
    drawn with the depth rasteriser from far away."""
    vis = np.ones(len(points))
    if len(tris) == 0 or len(points) == 0:
        return vis
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
    smap = rasterise(to_cam(tris), K, res, res)
    q = to_cam(points)
    u, v = f * q[:, 0] / q[:, 2] + (res - 1) / 2.0, f * q[:, 1] / q[:, 2] + (res - 1) / 2.0
    cos = np.abs(normals @ sun).clip(0.05, 1.0)
    # enough slack that a lit surface does not shadow itself across a texel at its slope
    bias = texel * (1.5 + 2.0 * np.sqrt(1.0 - cos ** 2) / cos).clip(max=20.0)
    iu, iv = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    lit = np.zeros(len(points))
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            x, y = (iu + du).clip(0, res - 1), (iv + dv).clip(0, res - 1)
            lit += q[:, 2] <= smap[y, x] + bias
    return lit / 9.0


def _in_shadow_reach(points, movers, sun, margin):
    """Points that a moving triangle could shade: inside the movers' box as seen from the sun."""
    a, b = _basis(sun)
    ma, mb = movers.reshape(-1, 3) @ a, movers.reshape(-1, 3) @ b
    pa, pb = points @ a, points @ b
    return (pa >= ma.min() - margin) & (pa <= ma.max() + margin) & (pb >= mb.min() - margin) & (pb <= mb.max() + margin)


def light_map(tris, tri_ids, hit, depth, K, c2w, lighting, rasterise):
    """[H, W] float32 light ratio (see the module's docstring) for one camera.

    tris: [N, 3, 3] world triangles; tri_ids: [N] object id (0 = static world); hit: [H, W] index + 1 of
    the triangle seen at each pixel (0 = none); depth: [H, W] planar depth; K, c2w: OpenCV camera."""
    H, W = depth.shape
    out = np.ones((H, W), dtype=np.float32)
    if not lighting["suns"] and lighting["sky"] <= 0:
        return out
    z_all = depth[hit > 0].astype(np.float64)
    if not z_all.size:
        return out
    texel = float(np.median(z_all)) / K[0, 0]  # one output pixel at the median depth
    v, u = np.nonzero(hit > 0)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z_all, (v - K[1, 2]) / K[1, 1] * z_all, z_all], axis=1)
    points = cam @ c2w[:3, :3].T + c2w[:3, 3]
    t = hit[v, u] - 1
    fixed, movers = tris[tri_ids == 0], tris[tri_ids != 0]
    # the static world's ratio is 1 outside the moving objects' shadows: only the objects' own pixels and
    # what their shadows can reach are worked out
    keep = tri_ids[t] != 0
    for d, _ in lighting["suns"]:
        if len(movers):
            keep |= _in_shadow_reach(points, movers, d, 3.0 * texel)
    v, u, t, points = v[keep], u[keep], t[keep], points[keep]
    if not len(t):
        return out
    tri = tris[t]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-30)
    n *= np.where(np.einsum("ij,ij->i", n, c2w[:3, 3] - points) < 0, -1.0, 1.0)[:, None]  # toward the camera
    moving = tri_ids[t] != 0
    sky = lighting["sky"] * math.pi
    energy = sum(e for _, e in lighting["suns"])
    # sky from above; light bounced by the scene from all around, more from below (the lit ground)
    bounce = GROUND_ALBEDO * (sum(e * max(d[2], 0.0) for d, e in lighting["suns"]) + sky)
    ambient = sky * (1.0 + n[:, 2]) / 2.0 + bounce * (3.0 - n[:, 2]) / 4.0
    with_all, without = ambient.copy(), ambient.copy()
    for d, e in lighting["suns"]:
        facing = np.clip(n @ d, 0.0, None)
        lit = facing > 0
        vis_moving, vis_static = np.ones(len(points)), np.ones(len(points))
        vis_moving[lit] = _visibility(points[lit], n[lit], movers, d, texel, rasterise)
        # the static world's own shadows cancel in its ratio: they matter only on moving objects and
        # where a moving object's shadow falls (a much smaller map than the whole view)
        need = lit & (moving | (vis_moving < 1.0))
        vis_static[need] = _visibility(points[need], n[need], fixed, d, texel, rasterise)
        with_all += e * facing * vis_static * vis_moving
        without += e * facing * vis_static
    level = (sky + energy) / 2.0  # any fixed level: it cancels between reference and frame
    base = np.where(moving, level, without)
    out[v, u] = np.where(base > 1e-9, with_all / np.maximum(base, 1e-9), 1.0)
    return out
