"""Procedural scenes for the demo, the tests and the bench (bpy only).

Everything is built from code so no binary .blend needs to live in the repository.
"""
import math
import os
import sys
import tempfile

if "bpy" not in __import__("sys").modules:
    # Blender reads its user folder when bpy is imported: point it at a temp folder first, so tests
    # and the demo never touch a real user's preferences or installed extensions.
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="mirage-blender-user-"))
import bpy  # noqa: E402


def install_extension(zip_path):
    """Install and enable the built zip the way Blender's Install from Disk does."""
    res = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    if res != {"FINISHED"} or not hasattr(bpy.types.Scene, "mirage"):
        raise RuntimeError(f"installing {zip_path} failed: {res}")


def _material(name, color, scale=4.0, color2=None):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    checker = nt.nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = scale
    checker.inputs["Color1"].default_value = (*color, 1.0)
    c2 = color2 or tuple(0.35 * c for c in color)
    checker.inputs["Color2"].default_value = (*c2, 1.0)
    nt.links.new(checker.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    return mat


def _box(name, location, size, mat):
    bpy.ops.mesh.primitive_cube_add(location=location)
    ob = bpy.context.active_object
    ob.name = name
    ob.scale = (size[0] / 2, size[1] / 2, size[2] / 2)
    ob.data.materials.append(mat)
    return ob


def _keyframe_camera(cam, keys):
    """keys: list of (frame, location, (pitch_deg, yaw_deg)); camera looks along -Z, yaw about world Z."""
    for frame, loc, (pitch, yaw) in keys:
        cam.location = loc
        cam.rotation_euler = (math.radians(pitch), 0.0, math.radians(yaw))
        cam.keyframe_insert("location", frame=frame)
        cam.keyframe_insert("rotation_euler", frame=frame)
    for fc in (cam.animation_data.action.fcurves if hasattr(cam.animation_data.action, "fcurves") else []):
        for kp in fc.keyframe_points:
            kp.interpolation = "BEZIER"


def build_room(width=256, height=144, frames=48, keys=None, moving_crate=False):
    """A checkered room with coloured pillars; the camera passes a pillar, looks away and comes back.
    With moving_crate the crate slides and turns across the room during the shot."""
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps installed extensions, unlike factory settings
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    _box("Floor", (0, 0, -0.05), (12, 12, 0.1), _material("Floor", (0.8, 0.8, 0.75), 12))
    _box("WallN", (0, 6, 2), (12, 0.2, 4), _material("WallN", (0.2, 0.45, 0.8), 6))
    _box("WallS", (0, -6, 2), (12, 0.2, 4), _material("WallS", (0.85, 0.6, 0.2), 6))
    _box("WallE", (6, 0, 2), (0.2, 12, 4), _material("WallE", (0.3, 0.7, 0.35), 6))
    _box("WallW", (-6, 0, 2), (0.2, 12, 4), _material("WallW", (0.75, 0.25, 0.3), 6))
    _box("Pillar", (0, 0.5, 1.5), (1.0, 1.0, 3.0), _material("Pillar", (0.9, 0.9, 0.2), 3))
    crate = _box("Crate", (2.2, 2.5, 0.5), (1.0, 1.0, 1.0), _material("Crate", (0.6, 0.3, 0.8), 2))
    if moving_crate:
        crate.keyframe_insert("location", frame=1)
        crate.keyframe_insert("rotation_euler", frame=1)
        crate.location = (-1.0, 1.5, 0.5)
        crate.rotation_euler = (0.0, 0.0, math.radians(60))
        crate.keyframe_insert("location", frame=frames)
        crate.keyframe_insert("rotation_euler", frame=frames)
    _box("Block", (-2.5, 2.0, 0.75), (1.2, 0.8, 1.5), _material("Block", (0.2, 0.8, 0.8), 2))
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = (0.6, 0.6, 0.65)
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = 24
    scene.collection.objects.link(cam)
    scene.camera = cam
    if keys is None:
        f = frames
        keys = [(1, (-3.0, -4.5, 1.6), (85, -25)),
                (max(2, f // 3), (0.5, -4.0, 1.6), (85, 15)),
                (max(3, 2 * f // 3), (3.0, -3.0, 1.6), (85, 50)),
                (f, (-2.0, -4.5, 1.6), (85, -15))]
    _keyframe_camera(cam, keys)
    return scene


def render_reference(scene, path, frame=None, samples=16):
    """Render one frame with Cycles on the CPU: the demo's stand-in for concept art."""
    user_frame = scene.frame_current
    scene.frame_set(frame if frame is not None else scene.frame_start)
    r = scene.render
    old = (r.engine, r.filepath, r.image_settings.file_format)
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    r.image_settings.file_format = "PNG"
    r.filepath = path
    bpy.ops.render.render(write_still=True)
    r.engine, r.filepath, r.image_settings.file_format = old
    scene.frame_set(user_frame)
    return path


# ---------------------------------------------------------------------------------------------------------
# Random rooms for training data (tools/train.py). New builders only; the ones above are unchanged.
# ---------------------------------------------------------------------------------------------------------

def _random_material(rng, name):
    """A Principled BSDF driven by one of a few procedural textures, colours drawn from rng."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    c1 = tuple(rng.uniform(0.05, 0.95) for _ in range(3))
    c2 = tuple(min(1.0, max(0.0, c * rng.uniform(0.2, 1.6) + rng.uniform(-0.15, 0.15))) for c in c1)
    kind = rng.choice(["checker", "checker", "brick", "noise", "wave", "voronoi", "plain"])
    tex = None
    if kind == "checker":
        tex = nt.nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = rng.uniform(1.5, 16)
    elif kind == "brick":
        tex = nt.nodes.new("ShaderNodeTexBrick")
        tex.inputs["Scale"].default_value = rng.uniform(2, 10)
        tex.inputs["Mortar"].default_value = (*tuple(rng.uniform(0.6, 0.95) for _ in range(3)), 1.0)
    elif kind in ("noise", "wave", "voronoi"):
        tex = nt.nodes.new({"noise": "ShaderNodeTexNoise", "wave": "ShaderNodeTexWave",
                            "voronoi": "ShaderNodeTexVoronoi"}[kind])
        tex.inputs["Scale"].default_value = rng.uniform(1.0, 12.0)
    if tex is None:
        bsdf.inputs["Base Color"].default_value = (*c1, 1.0)
    elif kind in ("checker", "brick"):
        tex.inputs["Color1"].default_value = (*c1, 1.0)
        tex.inputs["Color2"].default_value = (*c2, 1.0)
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (*c1, 1.0)
        ramp.color_ramp.elements[1].color = (*c2, 1.0)
        out = tex.outputs["Fac"] if "Fac" in tex.outputs else tex.outputs["Distance"]
        nt.links.new(out, ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = rng.uniform(0.3, 1.0)
    return mat


def build_random_room(rng, width=256, height=144):
    """A room of random size, materials, furniture boxes, spheres and cylinders, lit by a random sun and
    world colour; sometimes without a ceiling so the sky shows. Returns (scene, camera, half extents)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    hx, hy, hz = rng.uniform(3, 7), rng.uniform(3, 7), rng.uniform(2.5, 5)
    _box("Floor", (0, 0, -0.05), (2 * hx, 2 * hy, 0.1), _random_material(rng, "Floor"))
    walls = [("WallN", (0, hy, hz / 2), (2 * hx, 0.2, hz)), ("WallS", (0, -hy, hz / 2), (2 * hx, 0.2, hz)),
             ("WallE", (hx, 0, hz / 2), (0.2, 2 * hy, hz)), ("WallW", (-hx, 0, hz / 2), (0.2, 2 * hy, hz))]
    for name, loc, size in walls:
        if rng.random() < 0.85:
            _box(name, loc, size, _random_material(rng, name))
    if rng.random() < 0.4:
        _box("Ceiling", (0, 0, hz + 0.05), (2 * hx, 2 * hy, 0.1), _random_material(rng, "Ceiling"))
    for i in range(rng.randint(3, 9)):
        x, y = rng.uniform(-hx + 0.5, hx - 0.5), rng.uniform(-hy + 0.5, hy - 0.5)
        mat = _random_material(rng, f"Obj{i}")
        shape = rng.choice(["box", "box", "sphere", "cylinder"])
        if shape == "box":
            sx, sy, sz = rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.6), rng.uniform(0.3, 2.8)
            ob = _box(f"Obj{i}", (x, y, sz / 2), (sx, sy, sz), mat)
            ob.rotation_euler[2] = rng.uniform(0, math.pi)
        else:
            r = rng.uniform(0.2, 0.8)
            if shape == "sphere":
                bpy.ops.mesh.primitive_uv_sphere_add(radius=r, location=(x, y, r + rng.uniform(0, 1.0)))
            else:
                zh = rng.uniform(0.4, 2.5)
                bpy.ops.mesh.primitive_cylinder_add(radius=r, depth=zh, location=(x, y, zh / 2))
            ob = bpy.context.active_object
            bpy.ops.object.shade_smooth()
            ob.data.materials.append(mat)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = rng.uniform(1.5, 5.0)
    sun.rotation_euler = (math.radians(rng.uniform(10, 60)), math.radians(rng.uniform(-20, 20)),
                          math.radians(rng.uniform(0, 360)))
    scene.collection.objects.link(sun)
    if rng.random() < 0.5:
        lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", "POINT"))
        lamp.data.energy = rng.uniform(100, 800)
        lamp.location = (rng.uniform(-hx, hx) * 0.7, rng.uniform(-hy, hy) * 0.7, hz * 0.8)
        scene.collection.objects.link(lamp)
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = tuple(rng.uniform(0.2, 0.9) for _ in range(3))
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = rng.uniform(16, 40)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam, (hx, hy, hz)


def set_camera(cam, location, pitch_deg, yaw_deg):
    """Place the camera (looks along -Z; pitch about X, then yaw about world Z) and update the scene."""
    cam.location = location
    cam.rotation_euler = (math.radians(pitch_deg), 0.0, math.radians(yaw_deg))
    bpy.context.view_layer.update()


def render_still(scene, path, samples=16, denoise=True):
    """Render the current frame with Cycles on the CPU, denoised when Blender has OpenImageDenoise."""
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = bool(denoise)
    r.image_settings.file_format = "PNG"
    r.filepath = path
    bpy.ops.render.render(write_still=True)
    return path


# -- bench scenes (tools/bench.py) ------------------------------------------------------------------
BENCH_SCENES_VERSION = 2  # bump when a bench scene changes, so cached ground truth is re-rendered


def _look_yaw(pos, target):
    """Yaw (degrees, about world Z) that points a camera at pitch ~90 from pos toward target."""
    dx, dy = target[0] - pos[0], target[1] - pos[1]
    return math.degrees(math.atan2(-dx, dy))


def build_pillar_revisit(width=256, height=144, frames=48):
    """The room; the camera starts facing the pillar, goes round its east side to the far side (what the
    pillar hid from the first frame comes into view), looks away at walls the first frame never saw,
    and comes back to exactly the start pose on the last frame."""
    f = frames
    start = ((-3.0, -4.5, 1.6), (85, -30))
    keys = [(1, *start),
            (max(2, round(0.22 * f)), (1.2, -3.2, 1.6), (85, 5)),
            (max(3, round(0.42 * f)), (3.6, 1.2, 1.6), (85, 75)),
            (max(4, round(0.60 * f)), (3.0, -1.2, 1.6), (85, -120)),
            (max(5, round(0.80 * f)), (-0.8, -4.0, 1.6), (85, -15)),
            (f, *start)]
    return build_room(width, height, frames, keys=keys)


def build_loop(width=256, height=144, loop_frames=40, loops=4):
    """The room with the camera circling the pillar `loops` times along the same closed path; every
    frame is keyed, so frame n and frame n + loop_frames have exactly the same pose."""
    centre, radius = (0.0, 0.5), 4.0
    keys = []
    for n in range(loop_frames * loops):
        a = 2 * math.pi * (n % loop_frames) / loop_frames
        pos = (centre[0] + radius * math.sin(a), centre[1] - radius * math.cos(a), 1.6)
        keys.append((n + 1, pos, (82, _look_yaw(pos, centre) + 25)))
    return build_room(width, height, loop_frames * loops, keys=keys)


def build_moving_crate(width=256, height=144, frames=48):
    """The room with a slow camera and a crate that slides and turns: seen on the first frame left of the
    pillar, it crosses in front of the pillar, leaves the view to the east, and comes back from the west
    turned by 90 degrees. Tests that a moving object keeps its look and the world behind it stays intact."""
    f = frames
    cam_keys = [(1, (-1.0, -5.0, 1.7), (84, -8)), (f, (0.5, -5.0, 1.7), (84, 6))]
    scene = build_room(width, height, frames, keys=cam_keys)
    crate = bpy.data.objects["Crate"]
    path = [(1, (-1.2, -1.2, 0.5), 0), (round(0.3 * f), (1.5, -1.5, 0.5), 20),
            (round(0.45 * f), (6.5, -1.5, 0.5), 40), (round(0.6 * f), (6.5, -3.0, 0.5), 50),
            (round(0.75 * f), (-3.0, -1.8, 0.5), 70), (f, (-1.6, -0.5, 0.5), 90)]
    for frame, loc, yaw in path:
        crate.location = loc
        crate.rotation_euler = (0.0, 0.0, math.radians(yaw))
        crate.keyframe_insert("location", frame=frame)
        crate.keyframe_insert("rotation_euler", frame=frame)
    return scene


# -- varied bench scenes: other room shapes, textures and light ----------------------------------------
# Surfaces are built in world coordinates (identity object transform), so a texture's scale is in scene
# units on every wall and floor alike; each material maps the two axes of its plane to the texture's X/Y.
_PLANE_AXES = {"xy": ("X", "Y", "Z"), "xz": ("X", "Z", "Y"), "yz": ("Y", "Z", "X")}


def _slab(name, lo, hi, mat):
    """An axis-aligned box from corner lo to corner hi, vertices in world coordinates."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    verts = [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0),
             (x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)]
    faces = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    mesh.materials.append(mat)
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _surface(name, kind, c1, c2=None, scale=1.0, plane="xy", roughness=0.8, **opts):
    """A Principled BSDF driven by a procedural texture on the object coordinates of `plane`.

    kind: "paint" (flat c1), "brick" (c1 bricks, c2 mortar), "checker", "wood" (wave bands through a
    two-colour ramp), "plaster" (fine noise) or "dots" (voronoi cells)."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    bsdf.inputs["Roughness"].default_value = roughness
    if kind == "paint":
        bsdf.inputs["Base Color"].default_value = (*c1, 1.0)
        return mat
    coords = nt.nodes.new("ShaderNodeTexCoord")
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    comb = nt.nodes.new("ShaderNodeCombineXYZ")
    nt.links.new(coords.outputs["Object"], sep.inputs["Vector"])
    for axis_in, axis_out in zip(_PLANE_AXES[plane], ("X", "Y", "Z")):
        nt.links.new(sep.outputs[axis_in], comb.inputs[axis_out])
    c2 = c2 or tuple(0.45 * c for c in c1)
    if kind in ("brick", "checker"):
        tex = nt.nodes.new("ShaderNodeTexBrick" if kind == "brick" else "ShaderNodeTexChecker")
        tex.inputs["Color1"].default_value = (*c1, 1.0)
        tex.inputs["Color2"].default_value = (*tuple(0.8 * c for c in c1), 1.0) if kind == "brick" else (*c2, 1.0)
        if kind == "brick":
            tex.inputs["Mortar"].default_value = (*c2, 1.0)
            tex.inputs["Mortar Size"].default_value = opts.get("mortar", 0.02)
            tex.inputs["Brick Width"].default_value = opts.get("brick_width", 0.5)
            tex.inputs["Row Height"].default_value = opts.get("row_height", 0.25)
        tex.inputs["Scale"].default_value = scale
        nt.links.new(comb.outputs["Vector"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        return mat
    if kind == "wood":
        tex = nt.nodes.new("ShaderNodeTexWave")
        tex.bands_direction = opts.get("direction", "X")
        tex.inputs["Distortion"].default_value = opts.get("distortion", 6.0)
        tex.inputs["Detail"].default_value = 3.0
        fac = tex.outputs["Fac"]
    elif kind == "plaster":
        tex = nt.nodes.new("ShaderNodeTexNoise")
        tex.inputs["Detail"].default_value = 6.0
        fac = tex.outputs["Fac"]
    elif kind == "dots":
        tex = nt.nodes.new("ShaderNodeTexVoronoi")
        fac = tex.outputs["Distance"]
    else:
        raise ValueError(f"unknown surface kind {kind!r}")
    tex.inputs["Scale"].default_value = scale
    nt.links.new(comb.outputs["Vector"], tex.inputs["Vector"])
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].position = opts.get("low", 0.3)
    ramp.color_ramp.elements[1].position = opts.get("high", 0.7)
    ramp.color_ramp.elements[0].color = (*c2, 1.0)
    ramp.color_ramp.elements[1].color = (*c1, 1.0)
    nt.links.new(fac, ramp.inputs["Fac"])
    nt.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _empty_scene(width, height, frames, world_colour, lens):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = world_colour
    background = scene.world.node_tree.nodes.get("Background") if scene.world.node_tree else None
    if background is not None:  # a new world renders its Background node, not World.color
        background.inputs["Color"].default_value = (*world_colour, 1.0)
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = lens
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam


def _lamp(scene, name, kind, energy, location=(0, 0, 0), rotation=(0, 0, 0), colour=(1, 1, 1), **opts):
    lamp = bpy.data.objects.new(name, bpy.data.lights.new(name, kind))
    lamp.data.energy = energy
    lamp.data.color = colour
    for k, v in opts.items():
        setattr(lamp.data, k, v)
    lamp.location = location
    lamp.rotation_euler = tuple(math.radians(a) for a in rotation)
    scene.collection.objects.link(lamp)
    return lamp


def _walk(frames, waypoints):
    """Camera keys spread over `frames` from waypoints (fraction of the path, location, (pitch, yaw))."""
    keys, last = [], 0
    for t, loc, rot in waypoints:
        n = max(last + 1, 1 + round(t * (frames - 1)))
        keys.append((n, loc, rot))
        last = n
    return keys


def build_hall(width=256, height=144, frames=48):
    """An L-shaped hall open to a blue sky, lit by a low warm sun: a long leg of red brick (small bricks),
    sage paint and large stone blocks on a wooden floor, turning into a second leg (wood panelling, fine
    plaster, deep-blue paint) that the first frame never sees. The camera walks down the first leg, turns
    into the second and ends looking back at the first leg's other wall."""
    scene, cam = _empty_scene(width, height, frames, (0.45, 0.6, 0.85), 22)
    T, Hh = 0.2, 4.0
    _slab("Floor", (-7.5, -2.5, -0.1), (5.5, 10.5, 0.0),
          _surface("Wood", "wood", (0.55, 0.33, 0.16), (0.25, 0.13, 0.05), scale=0.6, plane="xy", direction="Y"))
    brick = _surface("Brick", "brick", (0.55, 0.16, 0.1), (0.75, 0.72, 0.66), scale=2.0, plane="xz")
    _slab("WallSouth", (-7.5, -2.0 - T, 0), (5.5, -2.0, Hh), brick)
    _slab("WallNorthA", (-7.5, 2.0, 0), (1.0, 2.0 + T, Hh), _surface("Sage", "paint", (0.42, 0.55, 0.4)))
    _slab("WallWest", (-7.0 - T, -2.0, 0), (-7.0, 2.0, Hh),
          _surface("Stone", "brick", (0.6, 0.58, 0.52), (0.3, 0.28, 0.25), scale=0.5, plane="yz",
                   mortar=0.015, brick_width=0.6, row_height=0.4))
    _slab("WallEast", (5.0, -2.0, 0), (5.0 + T, 10.0, Hh),
          _surface("Plaster", "plaster", (0.85, 0.8, 0.7), (0.62, 0.56, 0.48), scale=6.0, plane="yz"))
    _slab("WallWestB", (1.0 - T, 2.0, 0), (1.0, 10.0, Hh),
          _surface("Panels", "wood", (0.7, 0.5, 0.3), (0.4, 0.24, 0.12), scale=1.2, plane="yz", direction="X",
                   distortion=2.0))
    _slab("WallNorthB", (1.0, 10.0, 0), (5.0, 10.0 + T, Hh), _surface("Blue", "paint", (0.12, 0.2, 0.5)))
    _slab("Plinth", (-3.2, -1.6, 0), (-2.4, -0.8, 1.1), _surface("PlinthPaint", "paint", (0.8, 0.78, 0.74)))
    _slab("Bench", (2.0, 5.0, 0), (2.6, 7.5, 0.5),
          _surface("BenchWood", "wood", (0.35, 0.2, 0.1), (0.18, 0.1, 0.05), scale=2.0, plane="xz"))
    _lamp(scene, "Sun", "SUN", 4.0, rotation=(62, 0, -125), colour=(1.0, 0.86, 0.7))
    waypoints = [(0.0, (-5.5, -0.6, 1.6), (86, -70)), (0.3, (-1.5, 0.4, 1.6), (86, -95)),
                 (0.55, (2.4, 0.3, 1.6), (86, -30)), (0.75, (3.0, 3.5, 1.6), (86, 10)),
                 (1.0, (3.2, 6.0, 1.6), (86, 140))]
    _keyframe_camera(cam, _walk(frames, waypoints))
    return scene


def build_studio(width=256, height=144, frames=48):
    """A small closed room under a ceiling, lit from inside by a warm ceiling lamp and a cool window-like
    area light: large floor tiles, a wall of small tiles, yellow paint, fine blue plaster and a dotted
    wallpaper. The camera stands near the south wall, walks to the middle and turns to face the wall behind it."""
    scene, cam = _empty_scene(width, height, frames, (0.03, 0.03, 0.035), 20)
    T, X, Y, Hh = 0.15, 2.4, 1.9, 2.6
    _slab("Floor", (-X, -Y, -0.1), (X, Y, 0.0),
          _surface("Tiles", "checker", (0.82, 0.8, 0.76), (0.15, 0.15, 0.17), scale=0.8, plane="xy"))
    _slab("Ceiling", (-X, -Y, Hh), (X, Y, Hh + 0.1), _surface("White", "paint", (0.9, 0.9, 0.88)))
    _slab("WallN", (-X, Y, 0), (X, Y + T, Hh),
          _surface("SmallTiles", "brick", (0.3, 0.55, 0.55), (0.9, 0.9, 0.86), scale=5.0, plane="xz",
                   mortar=0.04, brick_width=0.5, row_height=0.5))
    _slab("WallE", (X, -Y, 0), (X + T, Y, Hh), _surface("Yellow", "paint", (0.85, 0.7, 0.25)))
    _slab("WallS", (-X, -Y - T, 0), (X, -Y, Hh),
          _surface("BluePlaster", "plaster", (0.45, 0.55, 0.75), (0.25, 0.32, 0.5), scale=14.0, plane="xz"))
    _slab("WallW", (-X - T, -Y, 0), (-X, Y, Hh),
          _surface("Wallpaper", "dots", (0.85, 0.75, 0.7), (0.45, 0.2, 0.25), scale=7.0, plane="yz",
                   low=0.1, high=0.5))
    _slab("Table", (0.6, 0.7, 0.0), (1.6, 1.5, 0.75), _surface("TableWood", "wood", (0.45, 0.28, 0.14),
                                                             (0.2, 0.11, 0.05), scale=2.5, plane="xy"))
    _slab("Cabinet", (-2.3, -1.0, 0.0), (-1.8, 0.2, 1.4), _surface("CabinetPaint", "paint", (0.3, 0.25, 0.35)))
    _lamp(scene, "Ceiling lamp", "POINT", 40.0, location=(0.3, 0.2, 2.3), colour=(1.0, 0.85, 0.65))
    _lamp(scene, "Window", "AREA", 40.0, location=(2.3, -0.8, 1.5), rotation=(0, 90, 0), colour=(0.8, 0.9, 1.0),
          size=1.2)
    waypoints = [(0.0, (-0.8, -1.5, 1.55), (78, -10)), (0.35, (-0.5, -0.9, 1.55), (78, -45)),
                 (0.7, (-0.2, -0.2, 1.55), (78, -120)), (1.0, (0.2, 0.4, 1.55), (78, -175))]
    _keyframe_camera(cam, _walk(frames, waypoints))
    return scene


def blockout(scene):
    """Replace every material of the scene's objects by one plain grey (a previz blockout)."""
    grey = bpy.data.materials.new("Blockout grey")
    grey.use_nodes = True
    bsdf = grey.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.8
    for ob in scene.objects:
        if ob.type not in {"MESH", "CURVE", "SURFACE", "META", "FONT"}:
            continue
        if not ob.material_slots:
            ob.data.materials.append(grey)
        for slot in ob.material_slots:
            slot.material = grey
    return grey


def run_script(main):
    """Run a test script's main() and exit with its status. On bpy 4.2 to 4.4 it leaves through os._exit once
    everything is written: the pip bpy module of those versions crashes while Python shuts down as soon as an
    add-on property has a Python callback (get=, update=, poll=), after the script's work is done. A real
    Blender exits through its own path; the crash is the module's alone."""
    import traceback
    old = bpy.app.version < (4, 5)
    if not old:
        main()
        return
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
