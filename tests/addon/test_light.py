"""The light maps the add-on exports with moving objects: their shadows and their faces turning to the sun, in real bpy."""
import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402
from tests.addon.test_objects_export import cube  # noqa: E402

motion = addon_module("gather.motion")
export_frames = addon_module("gather.frames")
materials = addon_module("gather.materials")
W, H = 96, 64


@pytest.fixture
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = W, H, 100
    sc.frame_start, sc.frame_end = 1, 3
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    cam.location = (0, 0, 10)  # looking straight down
    ground = cube("Ground", (0, 0, -0.05))
    ground.scale = (20, 20, 0.1)
    crate = cube("Crate", (0, 0, 1.5))
    crate.keyframe_insert("rotation_euler", frame=1)
    crate.rotation_euler = (0, math.radians(45), 0)  # on frame 3 its top tilts toward the sun
    crate.keyframe_insert("rotation_euler", frame=3)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0, math.radians(30), 0)  # toward the sun: (0.5, 0, 0.866)
    sc.collection.objects.link(sun)
    sc.world = bpy.data.worlds.new("World")
    sc.world.color = (0.2, 0.2, 0.2)
    return sc


def export(sc):
    objects = motion.moving_objects(sc, [1, 2, 3])
    assert [ob.name for ob in objects] == ["Crate"]
    textures = {ob.name: tex for ob in materials.worth_baking(objects) if (tex := materials.bake(sc, ob)) is not None}
    return {it.frame: it for it in export_frames.iter_frames(sc, [1, 3], (W, H), objects, textures=textures or None)}


def world_points(item):
    K, c2w, z = np.array(item.K), np.array(item.cam_to_world), item.maps.depth.astype(np.float64)
    v, u = np.mgrid[0:H, 0:W]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def lamp(sc, kind):
    """Replace the sun by a lamp of `kind` that lights the ground from up right, through the crate."""
    if kind == "SUN":
        return None
    bpy.data.objects.remove(bpy.data.objects["Sun"])
    ob = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", kind))
    ob.data.energy = 20000.0
    ob.location = (3.0, 0.0, 6.0)
    if kind == "SPOT":  # pointing at the crate, its cone wide enough for the whole shadow
        ob.data.spot_size = math.radians(120)
        ob.rotation_euler = (0.0, math.radians(27), 0.0)
    sc.collection.objects.link(ob)
    return Vector(ob.location)


@pytest.mark.parametrize("kind", ["SUN", "POINT", "SPOT"])
def test_shadow_of_a_moving_object_matches_blenders_ray_cast(scene, kind):
    position = lamp(scene, kind)
    item = export(scene)[1]
    light, ids, pts = item.maps.light, item.maps.ids, world_points(item)
    assert light.shape == (H, W) and light.dtype == np.float32 and np.isfinite(light).all()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    blocked = np.zeros((H, W), bool)
    for v in range(H):
        for u in range(W):
            if ids[v, u] == 0:
                p = Vector(pts[v, u])
                to = Vector((0.5, 0.0, math.sqrt(0.75))) if position is None else (position - p).normalized()
                reach = 1e6 if position is None else (position - p).length
                blocked[v, u] = scene.ray_cast(depsgraph, p + to * 1e-3, to, distance=reach)[0]
    # away from the shadow's outline (two pixels each side: the maps' edges are filtered) it agrees with Blender
    sure = np.ones((H, W), bool)
    for dv in range(-2, 3):
        for du in range(-2, 3):
            sure &= np.roll(np.roll(blocked, dv, 0), du, 1) == blocked
    ground = (ids == 0) & sure
    assert (ground & blocked).sum() > 50 and (ground & ~blocked).sum() > 1000
    lit = light[ground & ~blocked]
    # lit ground: the crate changes nothing (a few pixels at its foot fall in the maps' filtered edge)
    assert (lit == 1.0).mean() > 0.995 and lit.min() > 0.3
    shade = light[ground & blocked]
    assert shade.max() < 0.5 and shade.min() > 0.05  # the sun is gone, the sky and the bounce remain


@pytest.mark.parametrize("inside_out", [False, True])
def test_a_face_turning_to_the_sun_gets_lighter(scene, inside_out):
    if inside_out:  # faces wound the other way round light the same
        bpy.data.objects["Crate"].data.flip_normals()
    items = export(scene)
    flat, tilted = items[1], items[3]
    oid = 1
    top = flat.maps.light[flat.maps.ids == oid]
    assert top.std() < 1e-4  # one face, one normal, one light
    x = world_points(tilted)[..., 0]
    on = tilted.maps.ids == oid
    toward = tilted.maps.light[on & (x > 0.1)]  # normal (0.71, 0, 0.71): 0.97 of the sun
    away = tilted.maps.light[on & (x < -0.1)]  # normal (-0.71, 0, 0.71): 0.26 of the sun
    assert toward.size > 50 and away.size > 50
    assert toward.mean() > top.mean() * 1.05 > away.mean() * 1.5


def test_without_suns_or_sky_the_light_does_not_change(scene):
    bpy.data.objects.remove(bpy.data.objects["Sun"])
    scene.world = None
    for item in export(scene).values():
        assert np.all(item.maps.light == 1.0)


def test_a_spot_casts_no_shadow_outside_its_cone(scene):
    lamp(scene, "SPOT")
    spot = bpy.data.objects["Lamp"]
    spot.data.spot_size = math.radians(40)
    spot.rotation_euler = (0.0, math.radians(-40), 0.0)  # away from the crate: its shadow would fall in the dark
    item = export(scene)[1]
    assert np.all(item.maps.light[item.maps.ids == 0] == 1.0)
    spot.rotation_euler = (0.0, math.radians(27), 0.0)  # at the crate again: its shadow is back
    item = export(scene)[1]
    assert (item.maps.light[item.maps.ids == 0] < 0.5).sum() > 50


def two_tone(ob):
    """A node material, red on one half of the object (generated x < 0.5), blue on the other."""
    mat = bpy.data.materials.new("TwoTone")
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    nt = mat.node_tree
    coords = nt.nodes.new("ShaderNodeTexCoord")
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs["A"].default_value = (0.8, 0.1, 0.1, 1.0)
    mix.inputs["B"].default_value = (0.1, 0.2, 0.9, 1.0)
    step = nt.nodes.new("ShaderNodeMath")
    step.operation = "GREATER_THAN"
    step.inputs[1].default_value = 0.5
    nt.links.new(coords.outputs["Generated"], sep.inputs[0])
    nt.links.new(sep.outputs["X"], step.inputs[0])
    nt.links.new(step.outputs[0], mix.inputs["Factor"])
    nt.links.new(mix.outputs["Result"], nt.nodes["Principled BSDF"].inputs["Base Color"])
    ob.data.materials.append(mat)
    return mat


def test_surface_colour_comes_from_the_material(scene):
    crate = bpy.data.objects["Crate"]
    bpy.ops.object.select_all(action="DESELECT")
    crate.data.uv_layers.new(name="UVMap")
    mat = two_tone(crate)
    nodes_before = len(mat.node_tree.nodes)
    scene.render.engine = "BLENDER_WORKBENCH"
    item = export(scene)[1]
    colour, ids, x = item.maps.albedo, item.maps.ids, world_points(item)[..., 0]
    assert colour.shape == (H, W, 3) and colour.dtype == np.uint8
    assert not colour[ids == 0].any()  # moving objects only
    on = ids == 1
    want = {True: (0.8, 0.1, 0.1), False: (0.1, 0.2, 0.9)}  # generated x < 0.5 is world x < 0 here
    for left in (True, False):
        px = colour[on & ((x < -0.1) if left else (x > 0.1))]
        assert len(px) > 50
        expect = np.round(np.array(want[left]) ** (1 / 2.2) * 255)
        # the Principled BSDF's diffuse colour is its base colour less what its specular layer takes (~2 %)
        assert np.abs(np.median(px, 0) - expect).max() <= 6
    # the user's material and render settings are as they were
    assert len(mat.node_tree.nodes) == nodes_before and scene.render.engine == "BLENDER_WORKBENCH"
    assert not bpy.data.images


def test_no_uv_map_no_surface_colour(scene):
    two_tone(bpy.data.objects["Crate"])  # a material, but nothing to bake it onto
    assert all(item.maps.albedo is None for item in export(scene).values())
    assert materials.why_not(bpy.data.objects["Crate"]) == "has no UV map"


def test_shade_map_keeps_the_still_worlds_shadows_and_leaves_the_moving_crate_out(scene):
    # a still pillar beside the moving crate: its shadow is in the direct light, the crate's is not (the light
    # ratio carries that one), and the crate itself has no shading (0)
    pillar = cube("Pillar", (-1.6, 1.2, 1.0))
    pillar.scale = (1.0, 1.0, 4.0)
    geometry = addon_module("gather.geometry")
    scene.frame_set(1)
    maps = export_frames.frame_maps(scene, scene.camera, (W, H), objects={"Crate": 1},
                                    parts=geometry.part_numbers(scene))
    shade, ids, parts = maps.shade, maps.ids, maps.parts
    assert shade.shape == (H, W, 2) and np.isfinite(shade).all() and (shade >= 0).all()
    assert np.all(shade[ids == 1] == 0)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    item = export(scene)[1]
    pts = world_points(item)
    to = Vector((0.5, 0.0, math.sqrt(0.75)))
    ground = (ids == 0) & (parts == geometry.part_numbers(scene)["Ground"])
    by_pillar = np.zeros((H, W), bool)
    for v, u in zip(*np.nonzero(ground)):
        hit, _, _, _, ob, _ = scene.ray_cast(depsgraph, Vector(pts[v, u]) + to * 1e-3, to)
        by_pillar[v, u] = hit and ob.name == "Pillar"
    sure = np.ones((H, W), bool)
    for dv in range(-2, 3):
        for du in range(-2, 3):
            sure &= np.roll(np.roll(by_pillar, dv, 0), du, 1) == by_pillar
    dark, lit = ground & by_pillar & sure, ground & ~by_pillar & sure
    assert dark.sum() > 30 and lit.sum() > 1000
    direct = shade[..., 0]
    assert direct[dark].max() < 0.05 * direct[lit].min()
    # the crate's shadow is not in this map: the lit ground's direct light is the sun's, 3 x cos 30 degrees
    assert (np.abs(direct[lit] - 3.0 * math.sqrt(0.75)) < 1e-4).mean() > 0.99
    assert shade[..., 1][ground].min() > 0  # sky and bounce reach the shadow too


def test_an_area_lamps_size_keeps_its_light_finite_close_to_it(scene):
    lights = addon_module("gather.lights")
    bpy.data.objects.remove(bpy.data.objects["Sun"])
    ob = bpy.data.objects.new("Panel", bpy.data.lights.new("Panel", "AREA"))
    ob.data.energy, ob.data.size = 100.0, 2.0
    ob.location = (0.0, 0.0, 0.05)
    scene.collection.objects.link(ob)
    scene.frame_set(1)
    lamp, = lights.scene_lighting(scene, {"Panel"}).lamps
    assert lamp.radius == pytest.approx(1.0)
    near, far = np.array([[0.0, 0.0, -0.01]]), np.array([[0.0, 0.0, -10.0]])
    e_near, e_far = lamp.incoming(near)[1][0], lamp.incoming(far)[1][0]
    assert e_near == pytest.approx(100.0 / math.pi / (0.06 ** 2 + 1.0), rel=1e-6)  # a disc's falloff, not 1/d^2
    assert e_far == pytest.approx(100.0 / math.pi / (10.05 ** 2 + 1.0), rel=1e-6)
    point = bpy.data.lights.new("Bulb", "POINT")
    point.shadow_soft_size = 0.5
    bulb = bpy.data.objects.new("Bulb", point)
    scene.collection.objects.link(bulb)
    assert [lp.radius for lp in lights.scene_lighting(scene, {"Bulb"}).lamps] == [0.0]  # a sphere lights as a point


def test_without_shading_the_object_map_comes_alone(scene):
    # a model that does not use the still world's light (compact, patch) is not made to wait for it
    geometry = addon_module("gather.geometry")
    parts = geometry.part_numbers(scene)
    item, = export_frames.iter_frames(scene, [1], (W, H), parts=parts, shading=False)
    assert item.maps.parts is not None and item.maps.parts.max() > 0 and item.maps.shade is None
    item, = export_frames.iter_frames(scene, [1], (W, H), parts=parts)
    assert item.maps.shade is not None and item.maps.shade.shape == (H, W, 2)
