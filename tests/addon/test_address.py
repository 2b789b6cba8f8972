"""Surface addresses in the export (real bpy): every pixel says where on its object it lies, before deformation for
an object that changes shape, in the object's own space for one that moves, in the world for the still world."""
import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from tests.addon.loader import addon_module  # noqa: E402
from tests.addon.test_objects_export import camera, cube  # noqa: E402

motion = addon_module("gather.motion")
export = addon_module("gather.frames")
geometry = addon_module("gather.geometry")
address = addon_module("core.address")

W, H = 96, 64


def grid(name, n=12, size=2.0):
    """A flat n x n grid of quads in its own XZ plane (facing -Y), `size` wide, with its rest shape as the basis."""
    mesh = bpy.data.meshes.new(name)
    xs = np.linspace(-size / 2, size / 2, n + 1)
    verts = [(x, 0.0, z) for z in xs for x in xs]
    faces = [(r * (n + 1) + c, r * (n + 1) + c + 1, (r + 1) * (n + 1) + c + 1, (r + 1) * (n + 1) + c)
             for r in range(n) for c in range(n)]
    mesh.from_pydata(verts, [], faces)
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    return ob


@pytest.fixture
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = W, H, 100
    sc.frame_start, sc.frame_end = 1, 6
    camera(sc, (0, -6, 1))
    cube("Wall", (0, 4, 1), 6.0)
    # a flag: its shape keys bend it out of its plane (y moves with x), the basis is flat at y = 0
    flag = grid("Flag")
    flag.location = (-1.2, 0, 1)
    flag.shape_key_add(name="Basis")
    wave = flag.shape_key_add(name="Wave")
    for i, v in enumerate(flag.data.vertices):
        wave.data[i].co = (v.co.x, 0.6 * math.sin(2.5 * v.co.x), v.co.z)
    wave.value = 0.0
    wave.keyframe_insert("value", frame=1)
    wave.value = 1.0
    wave.keyframe_insert("value", frame=6)
    # a crate that slides and turns
    crate = cube("Crate", (1.5, 0, 1), 1.0)
    crate.keyframe_insert("location", frame=1)
    crate.keyframe_insert("rotation_euler", frame=1)
    crate.location = (1.8, 0.5, 1.2)
    crate.rotation_euler = (0, 0, math.radians(35))
    crate.keyframe_insert("location", frame=6)
    crate.keyframe_insert("rotation_euler", frame=6)
    return sc


def frame(sc, n, objects, deforming=frozenset()):
    parts = geometry.part_numbers(sc)
    item, = export.iter_frames(sc, [n], (W, H), objects, parts=parts, shading=False, deforming=deforming)
    return item, parts


def test_a_deforming_surface_keeps_its_rest_address(scene):
    deforming, remeshed = motion.shape_changes(scene, range(1, 7))
    assert [ob.name for ob in deforming] == ["Flag"] and remeshed == []
    flag = bpy.data.objects["Flag"]
    assert flag.add_rest_position_attribute is False
    objects = motion.moving_objects(scene, range(1, 7)) + deforming
    with geometry.rest_positions(deforming):
        assert flag.add_rest_position_attribute is True
        item, parts = frame(scene, 6, objects, frozenset({"Flag"}))
    assert flag.add_rest_position_attribute is False  # the user's setting is back
    maps = item.maps
    on = maps.parts == parts["Flag"]
    assert on.sum() > 200
    # bent on frame 6 (its world points leave the plane y = 0 of its own space) but addressed at rest: y = 0
    world = export_world_points(item)[on]
    assert np.abs(world[:, 1]).max() > 0.3
    rest = maps.rest[on]
    assert np.abs(rest[:, 1]).max() < 1e-4
    assert np.all(np.abs(rest[:, [0, 2]]) <= 1.0 + 1e-4)  # on the flag's rest grid
    # the rest normal is the flat flag's, facing the camera (which looks along +Y at it)
    assert np.allclose(maps.normal[on], [0.0, -1.0, 0.0], atol=1e-3)
    # the same rest point on frames 1 and 6: the address is the point's, not the pixel's
    first, _ = frame(scene, 1, objects, frozenset({"Flag"}))
    a = first.maps.rest[first.maps.parts == parts["Flag"]]
    assert np.abs(a[:, 1]).max() < 1e-4
    # without the attribute (not named deforming) the address is the bent shape itself
    bent, _ = frame(scene, 6, objects)
    assert np.abs(bent.maps.rest[on][:, 1]).max() > 0.3


def export_world_points(item):
    K, c2w, z = item.K, item.cam_to_world, item.maps.depth.astype(np.float64)
    v, u = np.mgrid[0:z.shape[0], 0:z.shape[1]].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def test_a_rigid_mover_is_addressed_in_its_own_space_and_the_world_in_the_world(scene):
    objects = motion.moving_objects(scene, range(1, 7))
    assert [ob.name for ob in objects] == ["Crate"]
    item, parts = frame(scene, 6, objects)
    maps, world = item.maps, export_world_points(item)
    crate = maps.ids == 1
    pose = item.objects[1]
    local = world[crate] @ np.linalg.inv(pose)[:3, :3].T + np.linalg.inv(pose)[:3, 3]
    assert np.abs(maps.rest[crate] - local).max() < 1e-4
    assert np.abs(maps.rest[crate]).max() <= 0.5 + 1e-4  # on the unit cube
    wall = maps.parts == parts["Wall"]
    assert np.abs(maps.rest[wall] - world[wall]).max() < 1e-4
    assert np.isnan(maps.rest[~np.isfinite(maps.depth)]).all()
    # normals face the camera: the wall's front (y = 1 in the world) looks back along -Y
    assert np.allclose(maps.normal[wall], [0.0, -1.0, 0.0], atol=1e-3)
    n = maps.normal[crate]
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-3)
    to_camera = item.cam_to_world[:3, 3] - world[crate]
    assert (np.einsum("ij,ij->i", n @ pose[:3, :3].T, to_camera) > 0).all()


def test_barycentric_transfer_is_exact_on_a_known_triangle():
    world = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])
    rest = np.array([[[1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]])
    p = np.array([[0.5, 1.0, 0.0]])  # a quarter along both edges
    w = address.barycentric(world, p)
    assert np.allclose(w, [[0.5, 0.25, 0.25]])
    assert np.allclose(np.einsum("ij,ijk->ik", w, rest), [[1.25, 1.25, 1.0]])


def test_an_object_whose_topology_changes_gets_its_notice(scene):
    # a Build modifier adds faces frame by frame: no vertex keeps an address, so the object is followed rigidly and
    # the user is told which object and what Mirage does with it
    grower = grid("Grower", n=6)
    grower.location = (0.0, 1.0, 1.0)
    build = grower.modifiers.new("Build", "BUILD")
    build.frame_start, build.frame_duration = 1, 5
    emitter = grid("Emitter", n=2)
    emitter.location = (0.0, 2.0, 0.0)
    emitter.modifiers.new("Particles", "PARTICLE_SYSTEM")
    emitter.particle_systems[0].settings.render_type = "HALO"
    deforming, remeshed = motion.shape_changes(scene, range(1, 7))
    assert [ob.name for ob in deforming] == ["Flag"]
    assert [ob.name for ob in remeshed] == ["Emitter", "Grower"]
    job = addon_module("job")
    builder = job.JobBuilder.__new__(job.JobBuilder)
    builder.scene, builder.notices = scene, []
    objects = builder._moving_objects(range(1, 7))
    assert {"Grower", "Emitter", "Flag", "Crate"} <= {ob.name for ob in objects}
    assert [ob.name for ob in builder.deforming] == ["Flag"]  # addressed before its deformation
    lines = [n for n in builder.notices if "topology" in n]
    assert len(lines) == 2 and all("rigid object" in n for n in lines)
    assert any(n.startswith("'Grower' changes its topology") for n in lines)
