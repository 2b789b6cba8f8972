"""Procedural scenes for the demo, the tests and the bench (bpy only).

Everything is built from code so no binary .blend needs to live in the repository.
"""
import math
import os
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


def build_room(width=256, height=144, frames=48, keys=None):
    """A checkered room with coloured pillars; the camera passes a pillar, looks away and comes back."""
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
    _box("Crate", (2.2, 2.5, 0.5), (1.0, 1.0, 1.0), _material("Crate", (0.6, 0.3, 0.8), 2))
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


def write_mp4(scene, path):
    """Render the Sequencer to H.264 with Blender's own FFmpeg."""
    r = scene.render
    r.use_sequencer = True
    if hasattr(r.image_settings, "media_type"):  # Blender 5.0 picks image vs video here first
        r.image_settings.media_type = "VIDEO"
    r.image_settings.file_format = "FFMPEG"
    r.ffmpeg.format = "MPEG4"
    r.ffmpeg.codec = "H264"
    r.ffmpeg.constant_rate_factor = "HIGH"
    r.filepath = path
    bpy.ops.render.render(animation=True)
    return path


# -- bench scenes (tools/bench.py) ------------------------------------------------------------------
BENCH_SCENES_VERSION = 1  # bump when a bench scene changes, so cached ground truth is re-rendered


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
