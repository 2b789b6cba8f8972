"""The camera and depth export (mirage_blender/gather/camera.py, gather/frames.py, core/raster.py) against
real bpy (no mocks).

The modules are loaded without the package ``__init__`` (which registers UI classes).
"""

import math
import time

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Vector  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402

gcam = addon_module("gather.camera")
export = addon_module("gather.frames")
raster = addon_module("core.raster")
ExportError = addon_module("core.errors").ExportError


# ---------------------------------------------------------------------------
# Scene helpers
# ---------------------------------------------------------------------------


def fresh_scene(res=(640, 360), percentage=100):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = res
    scene.render.resolution_percentage = percentage
    scene.frame_start, scene.frame_end = 1, 10
    return scene


def add_camera(scene, name="Camera", animated=True):
    cam = bpy.data.cameras.new(name)
    obj = bpy.data.objects.new(name, cam)
    scene.collection.objects.link(obj)
    scene.camera = obj
    obj.rotation_mode = "XYZ"
    obj.location = (6.0, -6.0, 4.0)
    obj.rotation_euler = (math.radians(65), 0.0, math.radians(45))
    if animated:
        obj.keyframe_insert("location", frame=1)
        obj.keyframe_insert("rotation_euler", frame=1)
        obj.location = (7.0, -3.0, 2.5)
        obj.rotation_euler = (math.radians(75), math.radians(5), math.radians(65))
        obj.keyframe_insert("location", frame=10)
        obj.keyframe_insert("rotation_euler", frame=10)
    return obj


def add_mesh(scene, name, verts, faces, location=(0, 0, 0), collection=None):
    me = bpy.data.meshes.new(name)
    me.from_pydata([tuple(v) for v in verts], [], [tuple(f) for f in faces])
    me.update()
    ob = bpy.data.objects.new(name, me)
    ob.location = location
    (collection or scene.collection).objects.link(ob)
    return ob


def add_quad(scene, name, center, normal, size, collection=None):
    """A square of side ``size`` centred at ``center`` facing ``normal``."""
    n = Vector(normal).normalized()
    t = n.orthogonal().normalized()
    b = n.cross(t)
    h = size / 2
    c = Vector(center)
    verts = [c + (-t - b) * h, c + (t - b) * h, c + (t + b) * h, c + (-t + b) * h]
    return add_mesh(scene, name, verts, [(0, 1, 2, 3)], collection=collection)


def add_cube(scene, name, location, size=2.0, rotation=(0, 0, 0)):
    h = size / 2
    verts = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    ob = add_mesh(scene, name, verts, faces, location)
    ob.rotation_euler = rotation
    return ob


def project(K, c2w, pts):
    w2c = np.linalg.inv(np.asarray(c2w))
    pc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = pc @ np.asarray(K).T
    return uvw[:, :2] / uvw[:, 2:3], pc[:, 2]


def blender_pixels(scene, cam_obj, pts):
    """Pixel coords (centres at integers, v down) from world_to_camera_view."""
    W, H = gcam.render_size(scene)
    out = []
    for p in pts:
        x, y, _ = world_to_camera_view(scene, cam_obj, Vector(p))
        out.append((x * W - 0.5, (1.0 - y) * H - 0.5))
    return np.array(out)


def points_in_view(K, c2w, W, H, n, rng):
    u = rng.uniform(-0.2 * W, 1.2 * W, n)
    v = rng.uniform(-0.2 * H, 1.2 * H, n)
    z = rng.uniform(0.5, 40.0, n)
    pc = np.linalg.solve(np.asarray(K), np.stack([u * z, v * z, z]))  # 3 x n
    c2w = np.asarray(c2w)
    return pc.T @ c2w[:3, :3].T + c2w[:3, 3]


def raycast_depth(scene, cam_obj, W, H):
    """Planar depth from scene.ray_cast, rays built from Camera.view_frame (not K)."""
    dg = bpy.context.evaluated_depsgraph_get()
    frame = [Vector(c) for c in cam_obj.data.view_frame(scene=scene)]
    xs = [c.x for c in frame]
    ys = [c.y for c in frame]
    zc = frame[0].z
    left, right, bottom, top = min(xs), max(xs), min(ys), max(ys)
    mw = cam_obj.matrix_world.normalized()
    rot = mw.to_3x3()
    origin = mw.translation
    forward = (rot @ Vector((0, 0, -1))).normalized()
    out = np.full((H, W), np.inf)
    for v in range(H):
        y = top - (v + 0.5) / H * (top - bottom)
        for u in range(W):
            x = left + (u + 0.5) / W * (right - left)
            d = (rot @ Vector((x, y, zc))).normalized()
            hit, loc, *_ = scene.ray_cast(dg, origin, d)
            if hit:
                out[v, u] = (loc - origin).dot(forward)
    return out


# ---------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------


def _setup_landscape(scene, cam):
    cam.data.lens = 35


def _setup_portrait(scene, cam):
    scene.render.resolution_x, scene.render.resolution_y = 360, 640
    cam.data.lens = 50


def _setup_horizontal(scene, cam):
    scene.render.resolution_x, scene.render.resolution_y = 360, 640
    cam.data.lens = 18
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width, cam.data.sensor_height = 32.0, 18.0


def _setup_vertical(scene, cam):
    cam.data.lens = 50
    cam.data.sensor_fit = "VERTICAL"
    cam.data.sensor_width, cam.data.sensor_height = 30.0, 20.0


def _setup_shift(scene, cam):
    cam.data.lens = 35
    cam.data.shift_x, cam.data.shift_y = 0.15, -0.25


def _setup_shift_portrait(scene, cam):
    scene.render.resolution_x, scene.render.resolution_y = 300, 500
    cam.data.shift_x, cam.data.shift_y = -0.1, 0.2


def _setup_pixel_aspect(scene, cam):
    scene.render.pixel_aspect_x = 2.0
    cam.data.shift_x, cam.data.shift_y = 0.05, 0.1


def _setup_pixel_aspect_y_vertical(scene, cam):
    scene.render.resolution_x, scene.render.resolution_y = 400, 300
    scene.render.pixel_aspect_y = 1.5
    cam.data.sensor_fit = "VERTICAL"
    cam.data.shift_y = 0.1


def _setup_percentage(scene, cam):
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.resolution_percentage = 50
    cam.data.lens = 18
    cam.data.shift_x = 0.05


def _setup_scaled(scene, cam):
    cam.scale = (2.0, 0.5, 3.0)
    cam.data.lens = 35


SETUPS = {
    "lens35_landscape_auto": _setup_landscape,
    "lens50_portrait_auto": _setup_portrait,
    "lens18_horizontal_portrait": _setup_horizontal,
    "vertical": _setup_vertical,
    "shift": _setup_shift,
    "shift_portrait_auto": _setup_shift_portrait,
    "pixel_aspect_x2": _setup_pixel_aspect,
    "pixel_aspect_y_vertical": _setup_pixel_aspect_y_vertical,
    "percentage50": _setup_percentage,
    "scaled_camera": _setup_scaled,
}


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_projection_matches_blender(name):
    scene = fresh_scene()
    cam = add_camera(scene)
    SETUPS[name](scene, cam)
    W, H = gcam.render_size(scene)
    rng = np.random.default_rng(0)
    frames = [1, 4, 10]
    result = export.export_cameras(scene, frames)
    assert [r.frame for r in result] == frames
    for rec in result:
        K = np.array(rec.K)
        c2w = np.array(rec.cam_to_world)
        assert K.shape == (3, 3) and c2w.shape == (4, 4)
        R = c2w[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)
        scene.frame_set(rec.frame)
        pts = points_in_view(K, c2w, W, H, 40, rng)
        uv, z = project(K, c2w, pts)
        assert np.all(z > 0)
        ref = blender_pixels(scene, cam, pts)
        err = np.abs(uv - ref).max()
        assert err < 0.01, f"{name} frame {rec.frame}: max error {err:.4g} px"


def test_intrinsics_values_and_render_size():
    scene = fresh_scene(res=(1920, 1080))
    cam = add_camera(scene, animated=False)
    cam.data.lens = 50
    cam.data.sensor_width = 36
    K = gcam.intrinsics(scene, cam)
    assert K.dtype == np.float64
    np.testing.assert_allclose(K, [[50 * 1920 / 36, 0, 959.5], [0, 50 * 1920 / 36, 539.5], [0, 0, 1]])
    # Blender truncates percentage sizes: 1001 px at 50 % renders 500 px.
    scene.render.resolution_x, scene.render.resolution_y = 1001, 555
    scene.render.resolution_percentage = 50
    assert gcam.render_size(scene) == (500, 277)
    K = gcam.intrinsics(scene, cam)
    assert K[0, 2] == pytest.approx(249.5) and K[1, 2] == pytest.approx(138.0)


def test_camera_pose_follows_animation():
    scene = fresh_scene()
    cam = add_camera(scene)
    cam.scale = (3.0, 3.0, 3.0)
    res = export.export_cameras(scene, [1, 10])
    for rec, loc in zip(res, [(6.0, -6.0, 4.0), (7.0, -3.0, 2.5)]):
        c2w = np.array(rec.cam_to_world)
        np.testing.assert_allclose(c2w[:3, 3], loc, atol=1e-5)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
    # OpenCV +Z is Blender's -Z (viewing direction), +Y is Blender's -Y (down).
    scene.frame_set(1)
    mw = np.array(cam.matrix_world.normalized())
    c2w = np.array(res[0].cam_to_world)
    np.testing.assert_allclose(c2w[:3, 2], -mw[:3, 2], atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 1], -mw[:3, 1], atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 0], mw[:3, 0], atol=1e-6)
    np.testing.assert_allclose(gcam.camera_to_world(cam), c2w, atol=1e-6)


# ---------------------------------------------------------------------------
# Errors and scene state
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cam_type,word", [("ORTHO", "orthographic"), ("PANO", "panoramic")])
def test_non_perspective_camera_raises(cam_type, word):
    scene = fresh_scene()
    cam = add_camera(scene)
    cam.data.type = cam_type
    msg = f"Mirage needs a perspective camera; 'Camera' is {word}"
    with pytest.raises(ExportError) as err:
        gcam.intrinsics(scene, cam)
    assert str(err.value) == msg
    scene.frame_set(3)
    with pytest.raises(ExportError, match=word):
        export.export_cameras(scene, [1, 2])
    assert scene.frame_current == 3
    with pytest.raises(ExportError, match="perspective"):
        export.scene_depth(scene, cam, 8, 6)


def test_non_camera_object_raises():
    scene = fresh_scene()
    ob = add_cube(scene, "Cube", (0, 0, 0))
    with pytest.raises(ExportError, match="'Cube'"):
        gcam.intrinsics(scene, ob)


def test_no_camera_raises():
    scene = fresh_scene()
    add_cube(scene, "Cube", (0, 0, 0))
    assert scene.camera is None
    with pytest.raises(ExportError, match="^The scene has no camera$"):
        export.export_cameras(scene, [1])


def test_frame_restored_after_export():
    scene = fresh_scene()
    cam = add_camera(scene)
    scene.frame_set(7)
    loc7 = tuple(cam.matrix_world.translation)
    res = export.export_cameras(scene, range(1, 11))
    assert len(res) == 10
    assert scene.frame_current == 7
    assert tuple(cam.matrix_world.translation) == pytest.approx(loc7)


def test_frame_restored_when_export_raises():
    scene = fresh_scene()
    cam = add_camera(scene, animated=False)
    cam.scale = (1, 1, 1)
    cam.keyframe_insert("scale", frame=1)
    cam.scale = (0, 0, 0)
    cam.keyframe_insert("scale", frame=5)
    cam.scale = (1, 1, 1)
    cam.keyframe_insert("scale", frame=9)
    scene.frame_set(8)
    with pytest.raises(ExportError, match="frame 5"):
        export.export_cameras(scene, [1, 3, 5, 7])
    assert scene.frame_current == 8


# ---------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------


def test_depth_fronto_parallel_plane_is_exact():
    scene = fresh_scene(res=(96, 54))
    cam = add_camera(scene)
    cam.data.shift_x = 0.2  # off-axis rays must still give planar depth
    scene.frame_set(6)
    c2w = gcam.camera_to_world(cam)
    dist = 7.25
    center = c2w[:3, 3] + dist * c2w[:3, 2]
    add_quad(scene, "Wall", center, -c2w[:3, 2], 200.0)
    depth = export.scene_depth(scene, cam, 96, 54)
    assert depth.shape == (54, 96) and depth.dtype == np.float32
    assert np.all(np.isfinite(depth))
    np.testing.assert_allclose(depth, dist, rtol=1e-4, atol=0)


def test_depth_empty_scene_is_inf():
    scene = fresh_scene(res=(32, 18))
    cam = add_camera(scene)
    add_cube(scene, "Behind", (20.0, -20.0, 10.0), size=1.0)  # behind the camera
    depth = export.scene_depth(scene, cam, 32, 18)
    assert depth.shape == (18, 32)
    assert np.all(np.isposinf(depth))


def _cube_scene(res=(64, 36)):
    scene = fresh_scene(res=res)
    cam = add_camera(scene)
    cam.data.lens = 30
    cam.data.shift_y = 0.1
    # Partly in view: the camera looks at the origin-ish; the cube is off to one side.
    cube = add_cube(scene, "Cube", (1.5, 1.5, 0.5), size=2.5, rotation=(0.3, 0.2, 0.7))
    arr = cube.modifiers.new("Array", "ARRAY")  # evaluated geometry must count
    arr.count = 2
    arr.relative_offset_displace = (1.3, 0, 0)
    add_quad(scene, "Ground", (0, 0, -1.0), (0, 0, 1), 12.0)
    scene.frame_set(7)
    return scene, cam


def test_depth_matches_scene_ray_cast():
    scene, cam = _cube_scene()
    W, H = gcam.render_size(scene)
    ref = raycast_depth(scene, cam, W, H)
    depth = export.scene_depth(scene, cam, W, H).astype(np.float64)
    hit_ref, hit = np.isfinite(ref), np.isfinite(depth)
    assert 0.2 < hit_ref.mean() < 0.98, "test scene should have both hits and background"
    mismatch = (hit_ref != hit).mean()
    assert mismatch < 0.005, f"hit/miss disagree on {mismatch:.2%} of pixels"
    both = hit_ref & hit
    rel = np.abs(depth[both] - ref[both]) / ref[both]
    assert rel.max() < 1e-4
    # The cube must actually be in front of the ground somewhere (depth varies).
    assert np.ptp(depth[both]) > 1.0

    # A requested size other than the render size keeps the field of view.
    ref_small = raycast_depth(scene, cam, 32, 18)
    small = export.scene_depth(scene, cam, 32, 18).astype(np.float64)
    assert (np.isfinite(ref_small) != np.isfinite(small)).mean() < 0.01
    b = np.isfinite(ref_small) & np.isfinite(small)
    assert b.sum() > 100 and (np.abs(small[b] - ref_small[b]) / ref_small[b]).max() < 1e-4

    # Tiny batches exercise the tiling / flushing paths; result must not change.
    old = raster.BATCH
    try:
        raster.BATCH = 200
        np.testing.assert_array_equal(export.scene_depth(scene, cam, W, H), depth.astype(np.float32))
    finally:
        raster.BATCH = old


def test_hidden_objects_do_not_occlude():
    scene = fresh_scene(res=(48, 27))
    cam = add_camera(scene, animated=False)
    c2w = gcam.camera_to_world(cam)
    fwd, pos = c2w[:3, 2], c2w[:3, 3]
    add_quad(scene, "Far", pos + 10.0 * fwd, -fwd, 500.0)
    near = add_quad(scene, "Near", pos + 3.0 * fwd, -fwd, 500.0)
    coll = bpy.data.collections.new("HiddenColl")
    scene.collection.children.link(coll)
    add_quad(scene, "InHiddenColl", pos + 4.0 * fwd, -fwd, 500.0, collection=coll)
    coll.hide_render = True
    near.hide_render = True
    depth = export.scene_depth(scene, cam, 48, 27)
    np.testing.assert_allclose(depth, 10.0, rtol=1e-4)
    # Sanity: the same object does occlude once it is visible in render.
    near.hide_render = False
    depth = export.scene_depth(scene, cam, 48, 27)
    np.testing.assert_allclose(depth, 3.0, rtol=1e-4)
    near.hide_render = True
    coll.hide_render = False
    depth = export.scene_depth(scene, cam, 48, 27)
    np.testing.assert_allclose(depth, 4.0, rtol=1e-4)


def test_depth_geometry_crossing_camera_plane():
    """A ground plane extending behind the camera still gives exact depth."""
    scene = fresh_scene(res=(40, 30))
    cam = add_camera(scene, animated=False)
    cam.location = (0.0, 0.0, 1.0)
    cam.rotation_euler = (math.radians(80), 0.0, 0.0)  # looking along +Y, slightly down
    add_quad(scene, "Ground", (0, 0, 0), (0, 0, 1), 400.0)
    W, H = gcam.render_size(scene)
    ref = raycast_depth(scene, cam, W, H)
    depth = export.scene_depth(scene, cam, W, H).astype(np.float64)
    assert np.isfinite(ref).any() and np.isinf(ref).any()
    assert (np.isfinite(ref) != np.isfinite(depth)).mean() < 0.005
    both = np.isfinite(ref) & np.isfinite(depth)
    assert (np.abs(depth[both] - ref[both]) / ref[both]).max() < 1e-4


def test_depth_timing_256x144(capsys):
    scene = fresh_scene(res=(256, 144))
    cam = add_camera(scene)
    cam.location = (0.0, -6.0, 1.5)
    cam.rotation_euler = (math.radians(85), 0.0, 0.0)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=64, ring_count=32, radius=1.2, location=(0, 0, 1))
    bpy.ops.mesh.primitive_torus_add(location=(2, 1, 0.5))
    bpy.ops.mesh.primitive_plane_add(size=20)
    scene.frame_set(3)
    dg = bpy.context.evaluated_depsgraph_get()
    ntri = sum(len(o.data.polygons) for o in scene.objects if o.type == "MESH")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        depth = export.scene_depth(scene, cam, 256, 144, dg)
        times.append(time.perf_counter() - t0)
    assert depth.shape == (144, 256) and np.isfinite(depth).mean() > 0.3
    with capsys.disabled():
        print(f"\n[scene_depth] 256x144, ~{ntri} faces: best {min(times) * 1000:.1f} ms/frame")
