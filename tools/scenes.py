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
BENCH_SCENES_VERSION = 3  # bump when a bench scene changes, so cached ground truth is re-rendered

# Texture kinds of the bench's materials. Stochastic ones have no repeat a copier could lock onto; periodic
# ones do; photographs are real materials (scikit-image's sample photographs), tinted.
STOCHASTIC = ("noise", "plaster", "voronoi", "dots", "wood", "magic")
PERIODIC = ("checker", "brick", "stripes")
PHOTOS = ("brick", "grass", "gravel")
LAYOUT = "Layout"  # the Mapping node every textured bench material has between its coordinates and texture

# Surfaces are built in world coordinates (identity object transform), so a texture's scale is in scene
# units on every wall and floor alike; each material maps the two axes of its plane to the texture's X/Y
# ("wrap": X + Y and Z, so a texture goes round the four sides of a box).
_PLANE_AXES = {"xy": ("X", "Y", "Z"), "xz": ("X", "Z", "Y"), "yz": ("Y", "Z", "X")}


def _look_yaw(pos, target):
    """Yaw (degrees, about world Z) that points a camera at pitch ~90 from pos toward target."""
    dx, dy = target[0] - pos[0], target[1] - pos[1]
    return math.degrees(math.atan2(-dx, dy))


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


def photo_path(which):
    """A sample photograph of scikit-image (requirements.txt): brick, grass or gravel (512 x 512, grey)."""
    import importlib.util
    spec = importlib.util.find_spec("skimage")
    if spec is None or which not in PHOTOS:
        raise RuntimeError(f"no photograph {which!r}: the bench's photographs come from scikit-image")
    return os.path.join(os.path.dirname(spec.origin), "data", f"{which}.png")


def _fac(node):
    """A texture node's scalar output (named Fac before Blender 4.0 and Factor since)."""
    for key in ("Fac", "Factor", "Distance"):
        if key in node.outputs:
            return node.outputs[key]
    raise KeyError(node.bl_idname)


def _coordinates(nt, coords, plane):
    """The texture coordinates socket: Object coordinates mapped to `plane`'s axes, Generated or UV."""
    tc = nt.nodes.new("ShaderNodeTexCoord")
    if coords == "generated":
        return tc.outputs["Generated"]
    if coords == "uv":
        return tc.outputs["UV"]
    if coords != "object":
        raise ValueError(f"unknown texture coordinates {coords!r}")
    if plane is None:
        return tc.outputs["Object"]
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    comb = nt.nodes.new("ShaderNodeCombineXYZ")
    nt.links.new(tc.outputs["Object"], sep.inputs["Vector"])
    if plane == "wrap":
        add = nt.nodes.new("ShaderNodeMath")
        add.operation = "ADD"
        nt.links.new(sep.outputs["X"], add.inputs[0])
        nt.links.new(sep.outputs["Y"], add.inputs[1])
        nt.links.new(add.outputs[0], comb.inputs["X"])
        nt.links.new(sep.outputs["Z"], comb.inputs["Y"])
    else:
        for axis_in, axis_out in zip(_PLANE_AXES[plane], ("X", "Y", "Z")):
            nt.links.new(sep.outputs[axis_in], comb.inputs[axis_out])
    return comb.outputs["Vector"]


def _surface(name, kind, c1, c2=None, scale=1.0, plane="xy", roughness=0.8, coords="object", **opts):
    """A Principled BSDF driven by a texture on `coords` ("object": the object coordinates of `plane`, or of
    all three axes with plane=None; "generated"; "uv"), through a Mapping node named LAYOUT (other_layout
    moves it).

    kind: "paint" (flat c1); periodic: "checker", "brick" (c1 bricks, c2 mortar), "stripes" (sharp wave
    bands); stochastic: "wood" (distorted wave bands), "plaster"/"noise" (4-D noise), "dots"/"voronoi"
    (4-D voronoi cells), "magic"; "photo" (opts photo= one of PHOTOS, a tile 1 / scale units wide, its grey
    levels mixed from c2 to c1)."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes.get("Principled BSDF")
    bsdf.inputs["Roughness"].default_value = roughness
    mat["bench_texture"] = kind if kind != "photo" else f"photo:{opts['photo']}"
    if kind == "paint":
        bsdf.inputs["Base Color"].default_value = (*c1, 1.0)
        return mat
    mapping = nt.nodes.new("ShaderNodeMapping")
    mapping.name = mapping.label = LAYOUT
    nt.links.new(_coordinates(nt, coords, plane), mapping.inputs["Vector"])
    vector = mapping.outputs["Vector"]
    c2 = c2 or tuple(0.45 * c for c in c1)
    if kind == "photo":
        img = nt.nodes.new("ShaderNodeTexImage")
        img.image = bpy.data.images.load(photo_path(opts["photo"]), check_existing=True)
        img.image.colorspace_settings.name = "Non-Color"  # the grey values as they are, tinted below
        img.extension = "REPEAT"
        mapping.inputs["Scale"].default_value = (scale, scale, scale)
        nt.links.new(vector, img.inputs["Vector"])
        tint = nt.nodes.new("ShaderNodeValToRGB")  # the photograph's grey levels mixed from c2 (dark) to c1
        tint.color_ramp.elements[0].position = opts.get("low", 0.15)
        tint.color_ramp.elements[1].position = opts.get("high", 0.85)
        tint.color_ramp.elements[0].color = (*c2, 1.0)
        tint.color_ramp.elements[1].color = (*c1, 1.0)
        nt.links.new(img.outputs["Color"], tint.inputs["Fac"])
        nt.links.new(tint.outputs["Color"], bsdf.inputs["Base Color"])
        return mat
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
        nt.links.new(vector, tex.inputs["Vector"])
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        return mat
    if kind in ("wood", "stripes"):
        tex = nt.nodes.new("ShaderNodeTexWave")
        tex.bands_direction = opts.get("direction", "X")
        tex.inputs["Distortion"].default_value = opts.get("distortion", 6.0) if kind == "wood" else 0.0
        tex.inputs["Detail"].default_value = 3.0 if kind == "wood" else 0.0
    elif kind in ("plaster", "noise"):
        tex = nt.nodes.new("ShaderNodeTexNoise")
        tex.noise_dimensions = "4D"  # W is its seed: other_layout changes it
        tex.inputs["Detail"].default_value = opts.get("detail", 6.0)
        tex.inputs["W"].default_value = opts.get("w", 0.0)
    elif kind in ("dots", "voronoi"):
        tex = nt.nodes.new("ShaderNodeTexVoronoi")
        tex.voronoi_dimensions = "4D"
        tex.inputs["W"].default_value = opts.get("w", 0.0)
    elif kind == "magic":
        tex = nt.nodes.new("ShaderNodeTexMagic")
        tex.turbulence_depth = opts.get("depth", 3)
        tex.inputs["Distortion"].default_value = opts.get("distortion", 1.5)
    else:
        raise ValueError(f"unknown surface kind {kind!r}")
    tex.inputs["Scale"].default_value = scale
    nt.links.new(vector, tex.inputs["Vector"])
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    low, high = (0.45, 0.55) if kind == "stripes" else (0.3, 0.7)
    ramp.color_ramp.elements[0].position = opts.get("low", low)
    ramp.color_ramp.elements[1].position = opts.get("high", high)
    ramp.color_ramp.elements[0].color = (*c2, 1.0)
    ramp.color_ramp.elements[1].color = (*c1, 1.0)
    nt.links.new(_fac(tex), ramp.inputs["Fac"])
    nt.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def texture_kinds(scene):
    """{material name: texture kind} of the materials on the scene's objects (what _surface recorded)."""
    mats = {slot.material for ob in scene.objects for slot in getattr(ob, "material_slots", []) if slot.material}
    return {m.name: m.get("bench_texture", "other") for m in mats}


def other_layout(scene, seed=1):
    """Lay every texture of the scene's materials out differently, as another instance of the same place would:
    each material's LAYOUT Mapping node moved (stochastic textures far, to an unrelated part of the pattern;
    periodic ones and photographs by a fraction of their repeat, so the joints fall elsewhere), the 4-D noise
    and voronoi seeds (W) and wave phases changed. Same materials, colours, scales, geometry and light.
    Returns what restore_layout needs to undo it."""
    import random
    saved = []
    mats = {slot.material for ob in scene.objects for slot in getattr(ob, "material_slots", []) if slot.material}
    for mat in sorted(mats, key=lambda m: m.name):
        if mat.node_tree is None or LAYOUT not in mat.node_tree.nodes:
            continue
        rng = random.Random(f"{seed}:{mat.name}")
        kind = mat.get("bench_texture", "")
        nodes = mat.node_tree.nodes
        mapping = nodes[LAYOUT]
        loc = mapping.inputs["Location"]
        saved.append((loc, tuple(loc.default_value)))
        tex_scale = 1.0
        for node in nodes:
            if "W" in node.inputs and node.bl_idname in ("ShaderNodeTexNoise", "ShaderNodeTexVoronoi"):
                saved.append((node.inputs["W"], node.inputs["W"].default_value))
                node.inputs["W"].default_value += rng.uniform(3.0, 9.0)
            if node.bl_idname == "ShaderNodeTexWave":
                saved.append((node.inputs["Phase Offset"], node.inputs["Phase Offset"].default_value))
                node.inputs["Phase Offset"].default_value += rng.uniform(1.0, 5.0)
            if "Scale" in node.inputs and node.bl_idname.startswith("ShaderNodeTex"):
                tex_scale = node.inputs["Scale"].default_value
        if kind.startswith("photo"):
            step = [rng.uniform(0.25, 0.75) for _ in range(3)]  # Location is after the Mapping's scale: tiles
        elif kind in PERIODIC:
            step = [rng.uniform(0.2, 0.8) / tex_scale for _ in range(3)]  # a fraction of a cell
        else:
            step = [rng.choice((-1, 1)) * rng.uniform(17.0, 83.0) / tex_scale for _ in range(3)]
        loc.default_value = tuple(a + b for a, b in zip(loc.default_value, step))
    return saved


def restore_layout(saved):
    """Undo other_layout."""
    for socket, value in reversed(saved):
        socket.default_value = value


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


# The room of the first bench scenes (the layout of build_room: 12 x 12, walls 4 high, a pillar, a crate and a
# block), its surfaces textured per palette: (texture kind, c1, c2, scale, plane, options).
ROOM_PALETTES = {
    "room": {  # pillar, loop, objects, the demo
        "Floor": ("photo", (0.9, 0.84, 0.74), None, 0.5, "xy", {"photo": "gravel"}),
        "WallN": ("voronoi", (0.35, 0.55, 0.9), (0.08, 0.16, 0.35), 1.5, "xz", {}),
        "WallS": ("plaster", (0.9, 0.62, 0.25), (0.55, 0.3, 0.1), 3.0, "xz", {}),
        "WallE": ("wood", (0.4, 0.7, 0.35), (0.12, 0.28, 0.12), 0.6, "yz", {"direction": "Y"}),
        "WallW": ("magic", (0.85, 0.35, 0.35), (0.3, 0.08, 0.12), 0.8, "yz", {}),
        "Pillar": ("brick", (0.9, 0.82, 0.2), (0.35, 0.33, 0.28), 2.0, "wrap", {}),
        "Crate": ("checker", (0.6, 0.3, 0.8), (0.2, 0.1, 0.3), 2.0, None, {}),
        "Block": ("photo", (0.45, 0.9, 0.9), None, 0.4, "wrap", {"photo": "brick"}),
    },
    "walker": {
        "Floor": ("wood", (0.6, 0.4, 0.22), (0.28, 0.16, 0.07), 0.5, "xy", {"direction": "X", "distortion": 4.0}),
        "WallN": ("photo", (0.55, 0.8, 0.45), None, 0.5, "xz", {"photo": "grass"}),
        "WallS": ("plaster", (0.75, 0.75, 0.8), (0.45, 0.45, 0.55), 5.0, "xz", {}),
        "WallE": ("brick", (0.6, 0.2, 0.12), (0.8, 0.78, 0.7), 2.0, "yz", {}),
        "WallW": ("dots", (0.85, 0.8, 0.55), (0.4, 0.3, 0.15), 2.5, "yz", {"low": 0.1, "high": 0.5}),
        "Pillar": ("magic", (0.3, 0.6, 0.75), (0.08, 0.15, 0.25), 1.2, "wrap", {}),
        "Crate": ("noise", (0.7, 0.5, 0.3), (0.3, 0.2, 0.1), 4.0, None, {}),
        "Block": ("photo", (0.95, 0.7, 0.55), None, 0.3, "wrap", {"photo": "gravel"}),
    },
    "props": {
        "Floor": ("checker", (0.78, 0.76, 0.7), (0.25, 0.24, 0.26), 1.0, "xy", {}),
        "WallN": ("plaster", (0.55, 0.75, 0.6), (0.3, 0.42, 0.33), 3.5, "xz", {}),
        "WallS": ("wood", (0.55, 0.38, 0.25), (0.25, 0.15, 0.08), 0.8, "xz", {"direction": "X"}),
        "WallE": ("voronoi", (0.8, 0.6, 0.7), (0.35, 0.2, 0.3), 2.0, "yz", {}),
        "WallW": ("photo", (0.85, 0.55, 0.45), None, 0.6, "yz", {"photo": "brick"}),
    },
}


def _palette_surface(palette, name):
    kind, c1, c2, scale, plane, opts = ROOM_PALETTES[palette][name]
    return _surface(f"{name}-{palette}", kind, c1, c2, scale=scale, plane=plane, **opts)


def build_bench_room(width=256, height=144, frames=48, keys=None, palette="room", furniture=True):
    """The room of build_room (same layout, sun and camera lens) with textured surfaces: ROOM_PALETTES[palette].
    The crate is a cube with its origin at its centre (it may move); the rest are slabs in world
    coordinates. furniture=False leaves out the pillar, the crate and the block."""
    scene, cam = _empty_scene(width, height, frames, (0.6, 0.6, 0.65), 24)
    p = palette
    _slab("Floor", (-6, -6, -0.1), (6, 6, 0.0), _palette_surface(p, "Floor"))
    _slab("WallN", (-6, 5.9, 0), (6, 6.1, 4), _palette_surface(p, "WallN"))
    _slab("WallS", (-6, -6.1, 0), (6, -5.9, 4), _palette_surface(p, "WallS"))
    _slab("WallE", (5.9, -6, 0), (6.1, 6, 4), _palette_surface(p, "WallE"))
    _slab("WallW", (-6.1, -6, 0), (-5.9, 6, 4), _palette_surface(p, "WallW"))
    if furniture:
        _slab("Pillar", (-0.5, 0.0, 0.0), (0.5, 1.0, 3.0), _palette_surface(p, "Pillar"))
        _box("Crate", (2.2, 2.5, 0.5), (1.0, 1.0, 1.0), _palette_surface(p, "Crate"))
        _slab("Block", (-3.1, 1.6, 0.0), (-1.9, 2.4, 1.5), _palette_surface(p, "Block"))
    _lamp(scene, "Sun", "SUN", 3.0, rotation=(40, 10, 30))
    if keys is None:
        f = frames
        keys = [(1, (-3.0, -4.5, 1.6), (85, -25)), (max(2, f // 3), (0.5, -4.0, 1.6), (85, 15)),
                (max(3, 2 * f // 3), (3.0, -3.0, 1.6), (85, 50)), (f, (-2.0, -4.5, 1.6), (85, -15))]
    _keyframe_camera(cam, keys)
    return scene


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
    return build_bench_room(width, height, frames, keys=keys)


def build_loop(width=256, height=144, loop_frames=40, loops=4):
    """The room with the camera circling the pillar `loops` times along the same closed path; every
    frame is keyed, so frame n and frame n + loop_frames have exactly the same pose."""
    centre, radius = (0.0, 0.5), 4.0
    keys = []
    for n in range(loop_frames * loops):
        a = 2 * math.pi * (n % loop_frames) / loop_frames
        pos = (centre[0] + radius * math.sin(a), centre[1] - radius * math.cos(a), 1.6)
        keys.append((n + 1, pos, (82, _look_yaw(pos, centre) + 25)))
    return build_bench_room(width, height, loop_frames * loops, keys=keys)


def animate_crate(crate, frames):
    """The crate slides and turns: seen on the first frame left of the pillar, it crosses in front of the
    pillar, leaves the view to the east, and comes back from the west turned by 90 degrees."""
    f = frames
    path = [(1, (-1.2, -1.2, 0.5), 0), (round(0.3 * f), (1.5, -1.5, 0.5), 20),
            (round(0.45 * f), (6.5, -1.5, 0.5), 40), (round(0.6 * f), (6.5, -3.0, 0.5), 50),
            (round(0.75 * f), (-3.0, -1.8, 0.5), 70), (f, (-1.6, -0.5, 0.5), 90)]
    for frame, loc, yaw in path:
        crate.location = loc
        crate.rotation_euler = (0.0, 0.0, math.radians(yaw))
        crate.keyframe_insert("location", frame=frame)
        crate.keyframe_insert("rotation_euler", frame=frame)


def build_moving_crate(width=256, height=144, frames=48):
    """The room with a slow camera and a crate that slides and turns (animate_crate). Tests that a moving object
    keeps its look and the world behind it stays intact."""
    f = frames
    cam_keys = [(1, (-1.0, -5.0, 1.7), (84, -8)), (f, (0.5, -5.0, 1.7), (84, 6))]
    scene = build_bench_room(width, height, frames, keys=cam_keys)
    animate_crate(bpy.data.objects["Crate"], frames)
    return scene


# -- actors: a walking character, a rolling ball, a swinging door, a waving flag ---------------------------
def _mesh_object(name, verts, faces, uvs=None, material_index=None, mats=()):
    """A mesh object from vertices, faces, per-face-corner UVs ([face][corner] (u, v)) and material indices."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    for m in mats:
        mesh.materials.append(m)
    if uvs is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        k = 0
        for face, corners in zip(mesh.polygons, uvs):
            for li, uv in zip(face.loop_indices, corners):
                layer.data[li].uv = uv
            k += 1
    if material_index is not None:
        mesh.polygons.foreach_set("material_index", material_index)
    mesh.update()
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _tube(centre_of, radius_of, rings, segments, uv_box, mat, part):
    """A closed tube along a parameter t in [0, 1]: ring centre centre_of(t), radii radius_of(t) = (rx, ry) in the
    XY plane; caps at both ends. Returns (verts, faces, uvs, mats, parts, ts) for the character's builder."""
    u0, v0, u1, v1 = uv_box
    verts, faces, uvs, ts = [], [], [], []
    for i in range(rings + 1):
        t = i / rings
        cx, cy, cz = centre_of(t)
        rx, ry = radius_of(t)
        for j in range(segments):
            a = 2 * math.pi * j / segments
            verts.append((cx + rx * math.cos(a), cy + ry * math.sin(a), cz))
            ts.append(t)
    for i in range(rings):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            faces.append((a, b, b + segments, a + segments))
            uvs.append([(u0 + (u1 - u0) * jj / segments, v0 + (v1 - v0) * ii / rings)
                        for ii, jj in ((i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j))])
    for end, t in ((0, 0.0), (rings, 1.0)):
        verts.append(centre_of(t))
        ts.append(t)
        c = len(verts) - 1
        for j in range(segments):
            a, b = end * segments + j, end * segments + (j + 1) % segments
            faces.append((a, c, b) if end == 0 else (a, b, c))
            uvs.append([(u0, v0 if end == 0 else v1)] * 3)
    return verts, faces, uvs, [mat] * len(faces), [part] * len(verts), ts


# bones of the walking character: name -> (head, tail, parent); it faces -Y, feet at z = 0, origin between them
WALKER_BONES = {
    "hips": ((0, 0, 0.92), (0, 0, 1.05), None),
    "spine": ((0, 0, 1.05), (0, 0, 1.45), "hips"),
    "head": ((0, 0, 1.45), (0, 0, 1.78), "spine"),
    "thigh.L": ((0.1, 0, 0.92), (0.1, 0, 0.5), "hips"), "shin.L": ((0.1, 0, 0.5), (0.1, 0, 0.06), "thigh.L"),
    "thigh.R": ((-0.1, 0, 0.92), (-0.1, 0, 0.5), "hips"), "shin.R": ((-0.1, 0, 0.5), (-0.1, 0, 0.06), "thigh.R"),
    "arm.L": ((0.24, 0, 1.42), (0.24, 0, 1.13), "spine"), "forearm.L": ((0.24, 0, 1.13), (0.24, 0, 0.84), "arm.L"),
    "arm.R": ((-0.24, 0, 1.42), (-0.24, 0, 1.13), "spine"), "forearm.R": ((-0.24, 0, 1.13), (-0.24, 0, 0.84), "arm.R"),
}


def _blend(z, joint, width, below, above):
    """Skin weights across a joint at height `joint`: `below` under it, `above` over it, linear within width."""
    w = min(1.0, max(0.0, (z - (joint - width)) / (2 * width)))
    return [(below, 1.0 - w), (above, w)]


def add_walker(scene, path, frames, cycle=None, name="Walker", palette=None):
    """A skinned character (one mesh on an armature: torso, head, arms and legs of one body, weights blended
    across hips, knees, shoulders and elbows) that walks along `path` (ground points (x, y), at constant
    speed over the frames, facing where it goes): legs and arms swing in a walk cycle of `cycle` frames, the
    hips bob. Shirt: diagonal stripes; trousers: voronoi cells; head: fine noise; all on Generated
    coordinates, which follow the deforming surface. Returns the armature object (the mesh is its child)."""
    cycle = cycle or max(8, frames // 3)
    pal = palette or {}
    shirt = _surface(f"{name}Shirt", "stripes", *pal.get("shirt", ((0.85, 0.75, 0.2), (0.15, 0.25, 0.55))),
                     scale=pal.get("shirt_scale", 4.0), plane=None, coords="generated", direction="DIAGONAL")
    trousers = _surface(f"{name}Trousers", "voronoi", *pal.get("trousers", ((0.3, 0.45, 0.3), (0.1, 0.12, 0.08))),
                        scale=pal.get("trousers_scale", 9.0), plane=None, coords="generated")
    skin = _surface(f"{name}Skin", "noise", (0.85, 0.62, 0.48), (0.55, 0.35, 0.27), scale=12.0, plane=None,
                    coords="generated")
    parts = []  # (verts, faces, uvs, mats, bone weights per vertex)

    def add(tube, weights):
        verts, faces, uvs, mats, _, ts = tube
        parts.append((verts, faces, uvs, mats, [weights(v, t) for v, t in zip(verts, ts)]))

    add(_tube(lambda t: (0, 0, 0.9 + 0.58 * t), lambda t: (0.17 - 0.02 * t, 0.11), 8, 16, (0, 0, 0.5, 0.5), 0, 0),
        lambda v, t: _blend(v[2], 1.07, 0.05, "hips", "spine"))
    add(_tube(lambda t: (0, 0.0, 1.46 + 0.32 * t),
              lambda t: (0.05 + 0.07 * math.sin(math.pi * min(1.0, 0.15 + t)), 0.05 + 0.075 * math.sin(math.pi * min(1.0, 0.15 + t))),
              8, 14, (0.5, 0.5, 1.0, 1.0), 2, 0),
        lambda v, t: _blend(v[2], 1.5, 0.04, "spine", "head"))
    for side, x, uv in (("L", 0.1, (0.5, 0.0, 0.75, 0.5)), ("R", -0.1, (0.75, 0.0, 1.0, 0.5))):
        add(_tube(lambda t, x=x: (x, -0.03 * t * t, 0.95 - 0.92 * t), lambda t: (0.075 - 0.025 * t, 0.08 - 0.025 * t),
                  14, 12, uv, 1, 0),
            lambda v, t, s=side: (_blend(v[2], 0.86, 0.06, f"thigh.{s}", "hips") if v[2] > 0.75
                                  else _blend(v[2], 0.5, 0.06, f"shin.{s}", f"thigh.{s}")))
    for side, x, uv in (("L", 0.245, (0.0, 0.5, 0.25, 1.0)), ("R", -0.245, (0.25, 0.5, 0.5, 1.0))):
        add(_tube(lambda t, x=x: (x, 0, 1.44 - 0.62 * t), lambda t: (0.05 - 0.012 * t, 0.05 - 0.012 * t), 12, 10, uv,
                  0, 0),
            lambda v, t, s=side: _blend(v[2], 1.13, 0.05, f"forearm.{s}", f"arm.{s}"))
    verts, faces, uvs, mats, weights = [], [], [], [], []
    for pv, pf, pu, pm, pw in parts:
        base = len(verts)
        verts += pv
        faces += [tuple(base + i for i in f) for f in pf]
        uvs += pu
        mats += pm
        weights += pw
    body = _mesh_object(f"{name}Body", verts, faces, uvs, mats, (shirt, trousers, skin))
    for poly in body.data.polygons:
        poly.use_smooth = True
    groups = {b: body.vertex_groups.new(name=b) for b in WALKER_BONES}
    for i, ws in enumerate(weights):
        for bone, w in ws:
            if w > 0:
                groups[bone].add([i], w, "ADD")

    arm_data = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, arm_data)
    scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    for bone, (head, tail, parent) in WALKER_BONES.items():
        eb = arm_data.edit_bones.new(bone)
        eb.head, eb.tail = head, tail
        if parent:
            eb.parent = arm_data.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    body.parent = rig
    mod = body.modifiers.new("Armature", "ARMATURE")
    mod.object = rig

    # root motion along the path at constant speed, facing the direction of travel
    pts = [(float(x), float(y)) for x, y in path]
    seg = [math.dist(a, b) for a, b in zip(pts, pts[1:])]
    total = sum(seg)

    def at(s):
        for (a, b), d in zip(zip(pts, pts[1:]), seg):
            if s <= d or d == seg[-1]:
                k = min(1.0, s / d) if d else 0.0
                return (a[0] + k * (b[0] - a[0]), a[1] + k * (b[1] - a[1])), (b[0] - a[0], b[1] - a[1])
            s -= d
        return pts[-1], (pts[-1][0] - pts[-2][0], pts[-1][1] - pts[-2][1])

    heading_prev = None
    for bone in WALKER_BONES:
        rig.pose.bones[bone].rotation_mode = "XYZ"
    for f in range(1, frames + 1):
        s = total * (f - 1) / max(frames - 1, 1)
        (x, y), (dx, dy) = at(s)
        # smooth the turn: average the direction a little ahead and behind
        (_, d1), (_, d2) = at(max(0.0, s - 0.25)), at(min(total, s + 0.25))
        dx, dy = d1[0] + d2[0] + dx, d1[1] + d2[1] + dy
        heading = math.atan2(dx, -dy)  # the character's front (-Y) turned to (dx, dy)
        if heading_prev is not None:  # no jump of 2 pi between frames
            heading = heading_prev + (heading - heading_prev + math.pi) % (2 * math.pi) - math.pi
        heading_prev = heading
        phase = 2 * math.pi * (f - 1) / cycle
        rig.location = (x, y, 0.025 * abs(math.cos(phase)))
        rig.rotation_euler = (0.0, 0.0, heading)
        rig.keyframe_insert("location", frame=f)
        rig.keyframe_insert("rotation_euler", frame=f)
        swing = math.radians(28) * math.sin(phase)
        pose = {"thigh.L": -swing, "thigh.R": swing,
                "shin.L": math.radians(45) * max(0.0, math.sin(phase + 1.9)),
                "shin.R": math.radians(45) * max(0.0, math.sin(phase + 1.9 + math.pi)),
                "arm.L": 0.8 * swing, "arm.R": -0.8 * swing,
                "forearm.L": -math.radians(15) - 0.3 * max(0.0, swing), "forearm.R": -math.radians(15) - 0.3 * max(0.0, -swing),
                "spine": math.radians(3), "head": 0.0, "hips": 0.0}
        for bone, angle in pose.items():
            pb = rig.pose.bones[bone]
            pb.rotation_euler = (angle, 0.0, 0.0)
            pb.keyframe_insert("rotation_euler", frame=f)
    return rig


def add_ball(scene, start, end, frames, radius=0.3, name="Ball", mat=None):
    """A textured ball rolling on the floor from `start` to `end` (x, y): its turn is the distance rolled over
    the radius, about the horizontal axis across the direction of travel (no slip)."""
    bpy.ops.mesh.primitive_uv_sphere_add(radius=radius, segments=32, ring_count=16, location=(*start, radius))
    ball = bpy.context.active_object
    ball.name = name
    bpy.ops.object.shade_smooth()
    ball.data.materials.append(mat or _surface(f"{name}Skin", "noise", (0.95, 0.55, 0.15), (0.12, 0.2, 0.6),
                                                  scale=3.0, plane=None, detail=3.0, low=0.42, high=0.58))
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    axis = (-dy / length, dx / length, 0.0)  # up x direction
    ball.rotation_mode = "AXIS_ANGLE"
    for f in range(1, frames + 1):
        k = (f - 1) / max(frames - 1, 1)
        k = k * k * (3 - 2 * k)  # eases in and out; location and turn stay tied frame by frame
        ball.location = (start[0] + k * dx, start[1] + k * dy, radius)
        ball.rotation_axis_angle = (k * length / radius, *axis)
        ball.keyframe_insert("location", frame=f)
        ball.keyframe_insert("rotation_axis_angle", frame=f)
    return ball


def add_door(scene, hinge, width, height, frames, open_deg=110.0, name="Door", mat=None, start=0.15):
    """A door leaf hinged at `hinge` (x, y) on its left edge, closed along +X (front toward -Y), that swings
    open away from -Y by open_deg between the fraction `start` of the shot and its end."""
    t = 0.05
    verts = [(0, -t / 2, 0), (width, -t / 2, 0), (width, t / 2, 0), (0, t / 2, 0),
             (0, -t / 2, height), (width, -t / 2, height), (width, t / 2, height), (0, t / 2, height)]
    faces = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    uvs = [[(0, 0), (0, 1), (1, 1), (1, 0)]] * 6
    door = _mesh_object(name, verts, faces, uvs, None,
                        (mat or _surface(f"{name}Wood", "wood", (0.62, 0.4, 0.22), (0.3, 0.16, 0.07), scale=1.5,
                                         plane="xz", direction="Z", distortion=3.0),))
    door.location = (hinge[0], hinge[1], 0.0)
    for f in range(1, frames + 1):
        k = min(1.0, max(0.0, ((f - 1) / max(frames - 1, 1) - start) / (1 - start)))
        k = k * k * (3 - 2 * k)
        door.rotation_euler = (0.0, 0.0, math.radians(open_deg) * k)
        door.keyframe_insert("rotation_euler", frame=f)
    return door


def add_flag(scene, pole, size, frames, name="Flag", mat=None, waves=1.5, amplitude=0.2):
    """A flag on a pole at `pole` (x, y), its cloth a subdivided plane in the XZ plane whose shape keys make a
    wave that travels from the pole to the free edge (two keys, sin and cos of the wave, valued cos and sin of
    time), growing with the distance from the pole."""
    w, h = size
    nx, nz = 24, 14
    top = 1.95
    verts = [(pole[0] + w * i / nx, pole[1], top - h + h * j / nz) for j in range(nz + 1) for i in range(nx + 1)]
    faces = [(j * (nx + 1) + i, j * (nx + 1) + i + 1, (j + 1) * (nx + 1) + i + 1, (j + 1) * (nx + 1) + i)
             for j in range(nz) for i in range(nx)]
    uvs = [[(i / nx, j / nz), ((i + 1) / nx, j / nz), ((i + 1) / nx, (j + 1) / nz), (i / nx, (j + 1) / nz)]
           for j in range(nz) for i in range(nx)]
    flag = _mesh_object(name, verts, faces, uvs, None,
                        (mat or _surface(f"{name}Cloth", "checker", (0.9, 0.9, 0.85), (0.75, 0.1, 0.12), scale=6.0,
                                         plane=None, coords="uv"),))
    basis = flag.shape_key_add(name="Basis")
    k = 2 * math.pi * waves / w
    keys = []
    for key_name, fn in (("WaveSin", math.sin), ("WaveCos", math.cos)):
        sk = flag.shape_key_add(name=key_name, from_mix=False)
        sk.slider_min = -1.0
        for i, v in enumerate(basis.data):
            x = v.co[0] - pole[0]
            sk.data[i].co = (v.co[0], v.co[1] + amplitude * (x / w) * fn(k * x), v.co[2])
        keys.append(sk)
    for f in range(1, frames + 1):
        wt = 2 * math.pi * (f - 1) / max(8, frames / 2)  # two full waves over the shot
        keys[0].value, keys[1].value = math.cos(wt), -math.sin(wt)  # sin(kx - wt)
        keys[0].keyframe_insert("value", frame=f)
        keys[1].keyframe_insert("value", frame=f)
    bpy.ops.mesh.primitive_cylinder_add(radius=0.03, depth=top, location=(pole[0] - 0.03, pole[1], top / 2))
    pole_ob = bpy.context.active_object
    pole_ob.name = f"{name}Pole"
    pole_ob.data.materials.append(_surface(f"{name}PoleMetal", "noise", (0.6, 0.6, 0.62), (0.35, 0.35, 0.38),
                                           scale=20.0, plane=None))
    return flag


def build_walker(width=256, height=144, frames=48):
    """A skinned character walks through the room (palette "walker"). On the reference frame it stands in front
    of the block and faces the camera; it walks to the right, turns and walks away, so its sides and back
    come into view, and what it hid of the block and the floor is uncovered. The camera pans slowly."""
    f = frames
    cam_keys = [(1, (-1.7, -3.6, 1.5), (84, -10)), (f, (0.0, -3.4, 1.5), (84, 6))]
    scene = build_bench_room(width, height, frames, keys=cam_keys, palette="walker")
    add_walker(scene, [(-2.4, 1.05), (-2.0, 0.2), (-0.8, -0.5), (0.6, -0.2), (1.2, 0.9)], frames)
    return scene


def build_props(width=256, height=144, frames=48):
    """Props that move in three ways before a partition wall with a doorway (palette "props"): a ball rolls
    across the floor toward the camera, the door swings open away from the camera (its back and the room behind the doorway
    come into view), a flag waves by shape keys. The camera drifts sideways."""
    f = frames
    cam_keys = [(1, (0.6, -2.9, 1.5), (77, 6)), (f, (-0.4, -2.6, 1.5), (77, -6))]
    scene = build_bench_room(width, height, frames, keys=cam_keys, palette="props", furniture=False)
    partition = _surface("Partition-props", "photo", (0.8, 0.8, 0.85), None, scale=0.7, plane="xz", photo="gravel")
    _slab("PartitionW", (-4.0, 1.9, 0.0), (-0.5, 2.1, 2.8), partition)
    _slab("PartitionE", (0.5, 1.9, 0.0), (4.0, 2.1, 2.8), partition)
    _slab("Lintel", (-0.5, 1.9, 2.1), (0.5, 2.1, 2.8), partition)
    _slab("Cabinet", (-1.8, 4.6, 0.0), (0.2, 5.4, 1.6),
          _surface("Cabinet-props", "magic", (0.45, 0.3, 0.7), (0.12, 0.08, 0.2), scale=1.5, plane="xz"))
    add_door(scene, (-0.48, 2.0), 0.96, 2.08, frames)
    add_ball(scene, (1.0, 1.4), (-0.3, -0.4), frames, radius=0.25)  # toward the camera: 1.4 turns, its far side
    # rolls over the top into view
    add_flag(scene, (-2.1, 1.2), (1.1, 0.7), frames)
    return scene


def build_hall(width=256, height=144, frames=48):
    """An L-shaped hall open to a blue sky, lit by a low warm sun: a long leg of red brick (small bricks),
    mottled sage limewash and photographed stone on a wooden floor, turning into a second leg (wood panelling,
    fine plaster, blue voronoi tiles) that the first frame never sees. The camera walks down the first leg,
    turns into the second and ends looking back at the first leg's other wall."""
    scene, cam = _empty_scene(width, height, frames, (0.45, 0.6, 0.85), 22)
    T, Hh = 0.2, 4.0
    _slab("Floor", (-7.5, -2.5, -0.1), (5.5, 10.5, 0.0),
          _surface("Wood", "wood", (0.55, 0.33, 0.16), (0.25, 0.13, 0.05), scale=0.6, plane="xy", direction="Y"))
    brick = _surface("Brick", "brick", (0.55, 0.16, 0.1), (0.75, 0.72, 0.66), scale=2.0, plane="xz")
    _slab("WallSouth", (-7.5, -2.0 - T, 0), (5.5, -2.0, Hh), brick)
    _slab("WallNorthA", (-7.5, 2.0, 0), (1.0, 2.0 + T, Hh),
          _surface("Sage", "noise", (0.55, 0.68, 0.48), (0.26, 0.36, 0.24), scale=1.5, plane="xz", detail=4.0))
    _slab("WallWest", (-7.0 - T, -2.0, 0), (-7.0, 2.0, Hh),
          _surface("Stone", "photo", (0.85, 0.8, 0.72), None, scale=0.4, plane="yz", photo="brick"))
    _slab("WallEast", (5.0, -2.0, 0), (5.0 + T, 10.0, Hh),
          _surface("Plaster", "plaster", (0.85, 0.8, 0.7), (0.62, 0.56, 0.48), scale=6.0, plane="yz"))
    _slab("WallWestB", (1.0 - T, 2.0, 0), (1.0, 10.0, Hh),
          _surface("Panels", "wood", (0.7, 0.5, 0.3), (0.4, 0.24, 0.12), scale=1.2, plane="yz", direction="X",
                   distortion=2.0))
    _slab("WallNorthB", (1.0, 10.0, 0), (5.0, 10.0 + T, Hh),
          _surface("Blue", "voronoi", (0.2, 0.32, 0.7), (0.06, 0.1, 0.3), scale=2.5, plane="xz"))
    _slab("Plinth", (-3.2, -1.6, 0), (-2.4, -0.8, 1.1),
          _surface("PlinthMarble", "magic", (0.85, 0.83, 0.78), (0.45, 0.42, 0.4), scale=2.0, plane="wrap"))
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
    area light: large floor tiles, a wall of small tiles, a yellow pebble-dash wall (photographed gravel),
    fine blue plaster and a dotted wallpaper. The camera stands near the south wall, walks to the middle and
    turns to face the wall behind it."""
    scene, cam = _empty_scene(width, height, frames, (0.03, 0.03, 0.035), 20)
    T, X, Y, Hh = 0.15, 2.4, 1.9, 2.6
    _slab("Floor", (-X, -Y, -0.1), (X, Y, 0.0),
          _surface("Tiles", "checker", (0.82, 0.8, 0.76), (0.15, 0.15, 0.17), scale=0.8, plane="xy"))
    _slab("Ceiling", (-X, -Y, Hh), (X, Y, Hh + 0.1),
          _surface("White", "noise", (0.92, 0.92, 0.9), (0.78, 0.78, 0.75), scale=2.0, plane="xy", detail=2.0))
    _slab("WallN", (-X, Y, 0), (X, Y + T, Hh),
          _surface("SmallTiles", "brick", (0.3, 0.55, 0.55), (0.9, 0.9, 0.86), scale=5.0, plane="xz",
                   mortar=0.04, brick_width=0.5, row_height=0.5))
    _slab("WallE", (X, -Y, 0), (X + T, Y, Hh),
          _surface("Yellow", "photo", (0.95, 0.8, 0.35), None, scale=0.8, plane="yz", photo="gravel"))
    _slab("WallS", (-X, -Y - T, 0), (X, -Y, Hh),
          _surface("BluePlaster", "plaster", (0.45, 0.55, 0.75), (0.25, 0.32, 0.5), scale=14.0, plane="xz"))
    _slab("WallW", (-X - T, -Y, 0), (-X, Y, Hh),
          _surface("Wallpaper", "dots", (0.85, 0.75, 0.7), (0.45, 0.2, 0.25), scale=7.0, plane="yz",
                   low=0.1, high=0.5))
    _slab("Table", (0.6, 0.7, 0.0), (1.6, 1.5, 0.75), _surface("TableWood", "wood", (0.45, 0.28, 0.14),
                                                             (0.2, 0.11, 0.05), scale=2.5, plane="xy"))
    _slab("Cabinet", (-2.3, -1.0, 0.0), (-1.8, 0.2, 1.4),
          _surface("CabinetPaint", "magic", (0.4, 0.33, 0.5), (0.18, 0.14, 0.24), scale=3.0, plane="wrap"))
    _lamp(scene, "Ceiling lamp", "POINT", 40.0, location=(0.3, 0.2, 2.3), colour=(1.0, 0.85, 0.65))
    _lamp(scene, "Window", "AREA", 40.0, location=(2.3, -0.8, 1.5), rotation=(0, 90, 0), colour=(0.8, 0.9, 1.0),
          size=1.2)
    waypoints = [(0.0, (-0.8, -1.5, 1.55), (78, -10)), (0.35, (-0.5, -0.9, 1.55), (78, -45)),
                 (0.7, (-0.2, -0.2, 1.55), (78, -120)), (1.0, (0.2, 0.4, 1.55), (78, -175))]
    _keyframe_camera(cam, _walk(frames, waypoints))
    return scene


BENCH_BUILDERS = {"pillar": build_pillar_revisit, "objects": build_moving_crate, "hall": build_hall,
                  "studio": build_studio, "walker": build_walker, "props": build_props}


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
