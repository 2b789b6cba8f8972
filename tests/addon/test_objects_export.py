"""Moving objects in the export: which objects move, their matrices and their id masks, in real bpy."""
import dataclasses
import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402

motion = addon_module("gather.motion")
export = addon_module("gather.frames")


def cube(name, location, size=1.0):
    mesh = bpy.data.meshes.new(name)
    h = size / 2
    verts = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    ob.location = location
    return ob


def camera(sc, location, pitch=90.0):
    """The scene's camera at `location`, looking along +Y tilted by `pitch` degrees from straight down."""
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    cam.location = location
    cam.rotation_euler = (math.radians(pitch), 0, 0)
    return cam


@pytest.fixture
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 96, 64, 100
    sc.frame_start, sc.frame_end = 1, 6
    camera(sc, (0, -8, 1))
    cube("Wall", (0, 4, 1), 6.0)
    slider = cube("Slider", (-2, 0, 1))
    slider.keyframe_insert("location", frame=1)
    slider.location = (2, 0, 1)
    slider.keyframe_insert("location", frame=6)
    anchor = bpy.data.objects.new("Anchor", None)
    sc.collection.objects.link(anchor)
    anchor.keyframe_insert("rotation_euler", frame=1)
    anchor.rotation_euler = (0, 0, math.radians(30))
    anchor.keyframe_insert("rotation_euler", frame=6)
    child = cube("Child", (0, -2, 2.5), 0.5)
    child.parent = anchor
    follower = cube("Follower", (0, -3, -0.5), 0.5)
    c = follower.constraints.new("COPY_LOCATION")
    c.target, c.use_y, c.use_z = slider, False, False
    cube("Still", (3, 1, 0), 0.6)
    return sc


def test_finds_animated_parented_and_constrained_objects(scene):
    names = [ob.name for ob in motion.moving_objects(scene, range(1, 7))]
    assert {"Slider", "Child", "Follower"} <= set(names)
    assert "Still" not in names and "Wall" not in names
    assert scene.frame_current == 1


def test_marked_object_is_forced_moving(scene):
    bpy.types.Object.mirage_dynamic = bpy.props.BoolProperty(default=False)
    try:
        bpy.data.objects["Still"].mirage_dynamic = True
        names = [ob.name for ob in motion.moving_objects(scene, range(1, 7))]
        assert "Still" in names
    finally:
        del bpy.types.Object.mirage_dynamic


def test_matrices_and_masks_match_blender(scene):
    objects = motion.moving_objects(scene, range(1, 7))
    ids = {ob.name: i for i, ob in enumerate(objects, 1)}
    scene.frame_set(4)
    items = list(export.iter_frames(scene, [2, 5], depth_size=(96, 64), objects=objects))
    assert scene.frame_current == 4
    for item in items:
        scene.frame_set(item.frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        for ob in objects:
            want = np.array(ob.evaluated_get(depsgraph).matrix_world)
            assert np.allclose(item.objects[ids[ob.name]], want, atol=1e-9)
        # every pixel's id against the object Blender's own ray cast hits
        K = np.array(item.K)
        c2w = np.array(item.cam_to_world)
        mask = item.maps.ids
        assert mask.shape == (64, 96) and mask.dtype == np.uint16
        seen = set()
        wrong = 0
        for v in range(0, 64, 3):
            for u in range(0, 96, 3):
                d = c2w[:3, :3] @ np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
                hit, _, _, _, ob, _ = scene.ray_cast(depsgraph, Vector(c2w[:3, 3]), Vector(d / np.linalg.norm(d)))
                want = ids.get(ob.name, 0) if hit else 0
                seen.add(want)
                wrong += int(mask[v, u] != want)
        assert wrong <= 2  # silhouette ties only
        assert {0, ids["Slider"]} <= seen
    # the slider really moved between the two frames, and its mask moved with it
    cols = [np.nonzero((it.maps.ids == ids["Slider"]).any(0))[0].mean() for it in items]
    assert cols[1] > cols[0] + 10


def test_objects_that_change_shape_are_found(scene):
    bender = cube("Bender", (0, 2, 1))
    twist = bender.modifiers.new("Twist", "SIMPLE_DEFORM")
    twist.deform_method = "TWIST"
    twist.angle = 0.0
    twist.keyframe_insert("angle", frame=1)
    twist.angle = math.radians(90)
    twist.keyframe_insert("angle", frame=6)
    smooth = cube("Smooth", (-3, 2, 1))
    smooth.modifiers.new("Smooth", "SUBSURF")  # a modifier, but the same shape on every frame
    keyed = cube("Keyed", (3, 2, 1))
    keyed.shape_key_add(name="Basis")
    key = keyed.shape_key_add(name="Squash")
    key.data[0].co = (0.0, 0.0, 0.0)
    key.value = 0.0
    key.keyframe_insert("value", frame=1)
    key.value = 1.0
    key.keyframe_insert("value", frame=6)
    scene.frame_set(3)
    names = [ob.name for ob in motion.deforming_objects(scene, range(1, 7))]
    assert names == ["Bender", "Keyed"]  # not the sliding cube (rigid) nor the subdivided one (still)
    assert scene.frame_current == 3


def test_frame_export_has_one_shape(scene):
    frame_export = addon_module("core.frame").FrameExport
    fields = [f.name for f in dataclasses.fields(frame_export)]
    assert fields == ["frame", "K", "cam_to_world", "objects", "maps"]
    objects = motion.moving_objects(scene, range(1, 7))
    cameras = export.export_cameras(scene, [2])[0]
    depth = next(export.iter_frames(scene, [2], depth_size=(96, 64)))
    full = next(export.iter_frames(scene, [2], depth_size=(96, 64), objects=objects))
    poses = next(export.iter_frames(scene, [2], objects=objects))
    for item in (cameras, depth, full, poses):
        assert type(item) is frame_export and item.frame == 2
        assert item.K.shape == (3, 3) and item.cam_to_world.shape == (4, 4)
    # a channel is there exactly when it was exported (the object map, the still world's light and the surface
    # addresses come with parts= only)
    assert cameras.objects is None and cameras.maps.names() == ()
    assert depth.objects is None and depth.maps.names() == ("depth",)
    assert poses.objects is not None and poses.maps.names() == ()
    assert full.maps.names() == ("depth", "ids", "light")  # no textures baked
    assert full.maps.depth.shape == full.maps.ids.shape == full.maps.light.shape == (64, 96)
    assert full.maps.depth.dtype == np.float32 and full.maps.ids.dtype == np.uint16 and full.maps.light.dtype == np.float32
    assert sorted(full.objects) == list(range(1, len(objects) + 1))
    # the maps the objects add leave the depth as it was
    np.testing.assert_array_equal(full.maps.depth, depth.maps.depth)
