"""Moving objects' materials, baked: what the scene's materials say an object looks like where no image
has shown it.

A crate that turns shows faces the reference never saw. Their pattern (the planks, the checker, the
livery) is in the object's material, so the add-on bakes each moving object's surface colour (Cycles,
diffuse colour only, no light) into a texture over its UV map once, and on every frame looks it up for
the object's pixels (core/albedo.py). The static world is left to the memory's own fill (why:
docs/benchmarks.md, moving objects).
"""
import bpy
import numpy as np

SIZE = 512  # texels per side of a baked texture
MAX_OBJECTS = 64  # baked per Generate at most, the largest first


def why_not(ob) -> str | None:
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


def bake(scene, ob, size: int = SIZE) -> np.ndarray | None:
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


def worth_baking(objects) -> list:
    """The objects to bake, the largest first, at most MAX_OBJECTS."""
    return sorted(objects, key=lambda ob: max(ob.dimensions), reverse=True)[:MAX_OBJECTS]
