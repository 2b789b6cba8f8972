"""The add-on's core on plain numbers, without Blender: camera conventions, the rasteriser, the frame's maps."""
import numpy as np
import pytest

from tests.addon.loader import addon_module

camera = addon_module("core.camera")
raster = addon_module("core.raster")
frame = addon_module("core.frame")
scene = addon_module("core.scene")
ExportError = addon_module("core.errors").ExportError


def test_intrinsics_from_plain_lens_parameters():
    lens = camera.Lens(name="Cam", lens=50.0, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO")
    K = camera.intrinsics(lens, (1920, 1080))
    np.testing.assert_allclose(K, [[50 * 1920 / 36, 0, 959.5], [0, 50 * 1920 / 36, 539.5], [0, 0, 1]])
    # portrait with AUTO fits the sensor width to the larger (vertical) side
    K = camera.intrinsics(lens, (1080, 1920))
    assert K[0, 0] == pytest.approx(50 * 1920 / 36)
    with pytest.raises(ExportError, match="^Camera 'Cam' has an invalid lens or sensor size$"):
        camera.intrinsics(camera.Lens("Cam", 0.0, 36.0, 24.0, "AUTO"), (64, 36))
    assert camera.render_size(1001, 555, 50) == (500, 277)


def test_blender_camera_becomes_opencv():
    # a Blender camera with an identity matrix looks down world -Z with +Y up
    c2w = camera.camera_to_world(np.diag([2.0, 2.0, 2.0, 1.0]))  # scale is removed
    np.testing.assert_array_equal(c2w, np.diag([1.0, -1.0, -1.0, 1.0]))
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 17.5], [0, 0, 1]])
    p = camera.world_points(K, c2w, np.array([17.5, 0.0]), np.array([31.5, 0.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(p[0], [0, 0, -5])  # the principal point, 5 in front
    assert p[1][0] < 0 and p[1][1] > 0  # the top-left pixel: left and up in Blender's world
    camera.check_pose(c2w, 1, "Cam")
    with pytest.raises(ExportError, match="is mirrored"):
        camera.check_pose(c2w @ np.diag([-1.0, 1, 1, 1]), 3, "Cam")


def quad(z, half, x=0.0):
    """Two camera-space triangles of a square facing the camera at depth z."""
    a, b, c, d = [(x - half, -half, z), (x + half, -half, z), (x + half, half, z), (x - half, half, z)]
    return np.array([[a, b, c], [a, c, d]], dtype=np.float64)


def test_rasteriser_depth_and_nearest_triangle(monkeypatch):
    K = np.array([[32.0, 0, 31.5], [0, 32.0, 17.5], [0, 0, 1]])
    tris = np.concatenate([quad(4.0, 100.0), quad(2.0, 0.5, x=0.5)])  # a wall, and a small card before it
    depth, hit = raster.depth_and_hit(tris, K, 64, 36)
    assert depth.shape == hit.shape == (36, 64) and hit.dtype == np.int64
    card = hit > 2
    assert 100 < card.sum() < 400 and set(np.unique(hit[~card])) == {1, 2}
    np.testing.assert_allclose(depth[card], 2.0)
    np.testing.assert_allclose(depth[~card], 4.0)
    np.testing.assert_array_equal(raster.depth_map(tris, K, 64, 36), depth)
    monkeypatch.setattr(raster, "BATCH", 50)  # many small batches: the same result
    d2, h2 = raster.depth_and_hit(tris, K, 64, 36)
    np.testing.assert_array_equal(d2, depth)
    np.testing.assert_array_equal(h2, hit)
    assert np.isposinf(raster.depth_map(quad(-1.0, 100.0), K, 64, 36)).all()  # behind the camera


def test_maps_carry_object_ids():
    K = np.array([[32.0, 0, 31.5], [0, 32.0, 17.5], [0, 0, 1]])
    world = np.concatenate([quad(4.0, 100.0), quad(2.0, 0.5, x=0.5)])  # the camera is the world's origin
    tris = scene.Triangles(world, np.array([0, 0, 7, 7], np.uint16), np.full(4, -1, np.int32), np.zeros((4, 3, 2)))
    maps = frame.render_maps(tris, K, np.eye(4), (64, 36), ids=True)
    assert maps.light is None and maps.albedo is None and maps.ids.dtype == np.uint16
    assert set(np.unique(maps.ids)) == {0, 7}
    np.testing.assert_array_equal(maps.ids == 7, maps.depth < 3.0)
    assert frame.render_maps(tris, K, np.eye(4), (64, 36)).ids is None
