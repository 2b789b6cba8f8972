"""Bake to Materials in a fresh bpy session, the way a user or a farm would: install the built zip, build a small
room (a moving crate, a user material with nodes of its own, a sheet without a UV map), Generate, then bake. Writes
what it saw to a JSON file for the test to check.

  python bake_scenario.py ZIP OUT_DIR SCENARIO RESULT.json

SCENARIO "bake": every check in one session (no run yet, a changed scene, cancel, the bake itself, the render of
the baked scene from the reference camera). "no_run" and "bake_fail": the bake is called like
`blender -b --python-exit-code 1` would call it, its error NOT caught: the process must exit non-zero.
"""
import hashlib
import importlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scenario import scene_state  # noqa: E402  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402

PKG = "bl_ext.user_default.mirage_blender"
W, H, FRAMES = 128, 72, 6


def build(out):
    scene = scenes.build_room(width=W, height=H, frames=FRAMES, moving_crate=True)
    # the user's own node material on the block: a bake must leave it exactly as it is
    block = bpy.data.objects["Block"]
    nt = block.data.materials[0].node_tree
    nt.nodes.new("ShaderNodeValue").name = "User's own node"
    # a sheet without a UV map, facing the first camera (Smart UV Project makes it one, as an added map)
    mesh = bpy.data.meshes.new("Sheet")
    mesh.from_pydata([(-0.6, 0, 0), (0.6, 0, 0), (0.6, 0, 1.2), (-0.6, 0, 1.2)], [], [(0, 1, 2, 3)])
    sheet = bpy.data.objects.new("Sheet", mesh)
    sheet.location = (-1.2, -1.0, 0.1)
    sheet.rotation_euler = (0.0, 0.0, -0.4)
    mesh.materials.append(scenes._material("SheetMat", (0.9, 0.4, 0.1), 4))
    scene.collection.objects.link(sheet)
    ref = os.path.join(out, "reference.png")
    scenes.render_reference(scene, ref, samples=8)
    s = scene.mirage
    s.reference_image = ref
    s.output_dir = os.path.join(out, "mirage")
    s.segment_length = FRAMES
    s.device = "CPU"
    scene.frame_set(3)
    return scene


def digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


def user_state(scene):
    """Everything of the user's a bake may not change: materials (their nodes and links), meshes' material lists and
    UV maps (names, active, values), objects' slots, the images and the current frame."""
    mats = {}
    for m in bpy.data.materials:
        nt = m.node_tree
        mats[m.name] = sorted(f"{n.bl_idname}:{n.name}" for n in nt.nodes) + [len(nt.links)] if nt else []
    meshes = {}
    for me in bpy.data.meshes:
        uvs = {}
        for layer in me.uv_layers:
            a = np.empty(len(me.loops) * 2, np.float32)
            layer.data.foreach_get("uv", a)
            uvs[layer.name] = digest(a)
        meshes[me.name] = {"materials": [m.name if m else None for m in me.materials], "uv": uvs,
                           "active_uv": me.uv_layers.active.name if me.uv_layers.active else None}
    slots = {ob.name: [(s.link, s.material.name if s.material else None) for s in ob.material_slots]
             for ob in scene.objects if ob.type == "MESH"}
    return {"materials": mats, "meshes": meshes, "slots": slots, "images": sorted(i.name for i in bpy.data.images),
            "frame": scene.frame_current, "objects": sorted(o.name for o in bpy.data.objects)}


def call_bake(**kw):
    """bpy.ops.mirage.bake_memory as a script calls it: (error line or None, seconds)."""
    t = time.perf_counter()
    try:
        bpy.ops.mirage.bake_memory(**kw)
        return None, time.perf_counter() - t
    except RuntimeError as e:
        return str(e).strip().splitlines()[-1], time.perf_counter() - t


def cancel_like_the_ui(scene):
    """The modal operator's path, timed by ticks: the bake cancelled as soon as its backend runs."""
    bake = importlib.import_module(PKG + ".bake")
    prefs = importlib.import_module(PKG + ".prefs")
    b = bake.Bake(bpy.context, prefs.python_pref(), "LOOK", 0, True)
    longest = 0.0
    started = False
    deadline = time.monotonic() + 120
    while not b.ended and time.monotonic() < deadline:
        t = time.perf_counter()
        b.tick()
        longest = max(longest, time.perf_counter() - t)
        if b.backend is not None and not started:
            started = True
            b.cancel()
        time.sleep(0.01)
    b.close()
    return {"cancelled": b.cancelled, "finished": b.finished, "error": b.error, "started": started,
            "longest_tick": longest}


def render(scene, frame, path, samples=16):
    """The scene rendered with Cycles from its camera on `frame`, the view transform Standard (what an emission
    shows is its colour), the Sequencer's strips left out; the settings put back afterwards."""
    r, v = scene.render, scene.view_settings
    saved = (r.engine, r.filepath, r.use_sequencer, r.use_compositing, v.view_transform, v.look,
             scene.cycles.samples, scene.cycles.use_denoising, scene.frame_current)
    try:
        r.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        r.use_sequencer = False
        r.use_compositing = False
        v.view_transform, v.look = "Standard", "None"
        r.image_settings.file_format = "PNG"
        r.filepath = path
        scene.frame_set(frame)
        bpy.ops.render.render(write_still=True)
    finally:
        (r.engine, r.filepath, r.use_sequencer, r.use_compositing, v.view_transform, v.look, scene.cycles.samples,
         scene.cycles.use_denoising, frame_now) = saved
        scene.frame_set(frame_now)


def main():
    zip_path, out, scenario, result_path = sys.argv[1:5]
    scenes.install_extension(zip_path)
    os.makedirs(out, exist_ok=True)
    scene = build(out)
    result = {}
    if scenario == "no_run":  # not caught: a headless bake without a run exits non-zero
        bpy.ops.mirage.bake_memory()
        return
    result["no_run"], _ = call_bake()
    t = time.perf_counter()
    bpy.ops.mirage.generate()
    result["generate_seconds"] = time.perf_counter() - t
    if scenario == "bake_fail":  # the backend refuses the run: a non-zero exit with its one line
        os.remove(os.path.join(out, "mirage", "state", "memory.safetensors"))
        bpy.ops.mirage.bake_memory()
        return
    path = os.path.join(out, "saved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    scene = bpy.context.scene
    result["before"] = user_state(scene)
    # the scene changed since the run: one line, nothing done
    block = bpy.data.objects["Block"]
    x = block.location.x
    block.location.x = x + 0.5
    result["changed"], _ = call_bake()
    block.location.x = x
    result["after_changed"] = user_state(scene)
    # the backend fails: its one line, nothing done
    fake = os.path.join(out, "failing_backend.sh")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho '{\"type\":\"error\",\"message\":\"the memory cannot be read: test\"}'\nexit 1\n")
    os.chmod(fake, 0o755)
    real = os.environ["MIRAGE_BACKEND_PYTHON"]
    os.environ["MIRAGE_BACKEND_PYTHON"] = fake
    result["backend_failed"], _ = call_bake()
    os.environ["MIRAGE_BACKEND_PYTHON"] = real
    result["after_failed"] = user_state(scene)
    result["albedo"], _ = call_bake(mode="ALBEDO")
    result["cancel"] = cancel_like_the_ui(scene)
    result["after_cancel"] = user_state(scene)
    result["undo_flag"] = sorted(bpy.types.MIRAGE_OT_bake_memory.bl_options)
    result["bake"], result["bake_seconds"] = call_bake(mode="LOOK")
    result["status"] = bpy.context.window_manager.mirage.text
    result["after"] = user_state(scene)
    result["scene_after"] = scene_state(scene)
    # what the bake made, per object: its slots, material nodes, image sizes and packing
    made = {}
    for ob in scene.objects:
        if ob.type != "MESH":
            continue
        mats = {s.material for s in ob.material_slots if s.material is not None}
        info = {"slots": [(s.link, s.material.name if s.material else None) for s in ob.material_slots]}
        for m in mats:
            info["nodes"] = sorted(n.bl_idname for n in m.node_tree.nodes)
            info["uv_node"] = [n.uv_map for n in m.node_tree.nodes if n.bl_idname == "ShaderNodeUVMap"]
            info["images"] = sorted((n.image.name, list(n.image.size), n.image.packed_file is not None,
                                     n.image.colorspace_settings.name)
                                    for n in m.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage" and n.image)
        made[ob.name] = info
    result["made"] = made
    render(scene, 1, os.path.join(out, "baked_000001.png"))
    render(scene, FRAMES, os.path.join(out, f"baked_{FRAMES:06d}.png"))
    # saved and opened again: the packed textures come back with the file
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    result["reopened_images"] = sorted((i.name, i.packed_file is not None, list(i.size)) for i in bpy.data.images
                                       if "Mirage" in i.name)
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    scenes.run_script(main)
