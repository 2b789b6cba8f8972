"""What the scene's materials say a moving object looks like where no image has shown it.

A crate that turns shows faces the reference never saw. Their pattern (the planks, the checker, the
livery) is in the object's material, so the add-on bakes each moving object's surface colour (Cycles,
diffuse colour only, no light) into a texture over its UV map once, and on every frame looks it up for
the object's pixels. The backend learns from the reference how the material's colours look there, and
paints never-seen faces with it.

The static world is left to the memory's own fill: painted from materials, the pillar bench's never-seen
floor and walls lack their shadows (whole frame 23.8 -> 22.3 dB, flicker 1.39x -> 1.48x).
"""
import bpy
import numpy as np

SIZE = 512  # texels per side of a baked texture
MAX_OBJECTS = 64  # baked per Generate at most, the largest first (about 0.03 s each for a simple material)


def why_not(ob):
    """Why `ob`'s material cannot be baked (a short phrase), or None if it can."""
    if ob.type != "MESH":
        return "is not a mesh"
    if not ob.data.uv_layers:
        return "has no UV map"
    mats = {slot.material for slot in ob.material_slots}
    new = bpy.app.version >= (5, 0, 0)  # from 5.0 a material always renders its nodes (use_nodes is deprecated)
    if not mats or None in mats or not all((new or m.use_nodes) and m.node_tree is not None for m in mats):
        return "has an empty material slot or none" if not mats or None in mats else "has a material without nodes"
    return None


def bake(scene, ob, size=SIZE):
    """[size, size, 3] float16 linear surface colour of `ob` over its active UV map (row 0 at v = 0), or
    None when `why_not` says it cannot be baked or Cycles fails. The user's materials, render settings and
    selection are as they were afterwards."""
    if why_not(ob) is not None:
        return None
    mats = {slot.material for slot in ob.material_slots}
    img = bpy.data.images.new("mirage_albedo_bake", size, size, float_buffer=True)
    added = []
    render = scene.render
    saved = (render.engine, scene.cycles.samples, scene.cycles.device)
    try:
        for mat in mats:
            nodes = mat.node_tree.nodes
            node = nodes.new("ShaderNodeTexImage")
            node.image = img
            added.append((mat, node, nodes.active))
            nodes.active = node  # the bake writes into the active image node
        render.engine = "CYCLES"
        scene.cycles.samples = 1
        scene.cycles.device = "CPU"
        with bpy.context.temp_override(scene=scene, selected_objects=[ob], selected_editable_objects=[ob],
                                       active_object=ob, object=ob):
            bpy.ops.object.bake(type="DIFFUSE", pass_filter={"COLOR"}, margin=4, use_clear=True,
                                target="IMAGE_TEXTURES")
        px = np.empty(size * size * 4, dtype=np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(size, size, 4)[..., :3].astype(np.float16)  # 1.5 MB an object
    except RuntimeError:
        return None  # a material Cycles cannot bake: the backend fills that object as before
    finally:
        for mat, node, active in added:
            mat.node_tree.nodes.remove(node)
            if active is not None:
                mat.node_tree.nodes.active = active
        render.engine, scene.cycles.samples, scene.cycles.device = saved
        bpy.data.images.remove(img)


def worth_baking(objects):
    """The objects to bake, the largest first, at most MAX_OBJECTS."""
    return sorted(objects, key=lambda ob: max(ob.dimensions), reverse=True)[:MAX_OBJECTS]


def sample(texture, uv):
    """Bilinear lookup of a baked texture at uv [N, 2] (0..1, repeating): [N, 3]."""
    size = texture.shape[0]
    x = (uv[:, 0] % 1.0) * size - 0.5
    y = (uv[:, 1] % 1.0) * size - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            out = out + texture[(y0 + dy) % size, (x0 + dx) % size].astype(np.float64) * (wx * wy)
    return out


def albedo_map(tris, uvs, surface, hit, seen, textures, shape):
    """[H, W, 3] uint8 surface colour (display-encoded, 2.2) of every pixel whose object has a baked
    texture, 0 elsewhere.

    tris [N, 3, 3] world triangles with uvs [N, 3, 2] and surface [N] (index into `textures`, -1 for
    none); hit [H, W] index + 1 of the triangle each pixel sees; seen: (rows, columns, world positions
    [M, 3]) of the pixels with hit > 0; textures: the baked textures."""
    out = np.zeros((*shape, 3), dtype=np.uint8)
    v, u, points = seen
    if not textures or not len(tris) or not len(v):
        return out
    t = hit[v, u] - 1
    sel = surface[t] >= 0
    if not sel.any():
        return out
    t, v, u, p = t[sel], v[sel], u[sel], points[sel]
    a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
    # barycentric coordinates of each pixel's point in its triangle
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) > 1e-30, den, 1e-30)
    wb = np.clip((d11 * d20 - d01 * d21) / den, 0.0, 1.0)
    wc = np.clip((d00 * d21 - d01 * d20) / den, 0.0, 1.0 - wb)
    wa = 1.0 - wb - wc
    uv = uvs[t, 0] * wa[:, None] + uvs[t, 1] * wb[:, None] + uvs[t, 2] * wc[:, None]
    colour = np.zeros((len(t), 3))
    owner = surface[t]
    for k in np.unique(owner):
        mine = owner == k
        colour[mine] = sample(textures[k], uv[mine])
    out[v, u] = np.rint(np.clip(colour, 0.0, 1.0) ** (1 / 2.2) * 255).astype(np.uint8)
    return out
