"""The bench's scenes, their other layout and the ground truth's own maps, in real bpy."""
import os
import sys

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import actors  # noqa: E402
import metrics  # noqa: E402
import scenes  # noqa: E402
import surface_maps  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402


def test_the_bench_textures_are_mostly_stochastic_and_differ_per_scene():
    kinds, per_scene = [], {}
    for name, build in scenes.BENCH_BUILDERS.items():
        scene = build(32, 18, 6)
        k = scenes.texture_kinds(scene)
        per_scene[name] = sorted(k.values())
        kinds += list(k.values())
        for mat_name, kind in k.items():
            if kind == "paint":
                continue
            layout = bpy.data.materials[mat_name].node_tree.nodes[scenes.LAYOUT]
            # the texture follows the surface: Object, Generated or UV coordinates feed the layout
            src = layout.inputs["Vector"].links[0].from_node
            while src.bl_idname != "ShaderNodeTexCoord":
                src = next(i for i in src.inputs if i.is_linked).links[0].from_node
            used = {link.from_socket.name for link in src.outputs["Object"].links + src.outputs["Generated"].links
                    + src.outputs["UV"].links}
            assert used and used <= {"Object", "Generated", "UV"}, mat_name
    stochastic = [k for k in kinds if k in scenes.STOCHASTIC]
    photos = [k for k in kinds if k.startswith("photo:")]
    periodic = [k for k in kinds if k in scenes.PERIODIC]
    assert len(stochastic) >= len(kinds) / 2
    assert {p.split(":")[1] for p in photos} == set(scenes.PHOTOS) and periodic
    assert per_scene.pop("objects") == per_scene["pillar"]  # the crate slides in the pillar's room
    assert len({tuple(v) for v in per_scene.values()}) == len(per_scene)  # the other rooms are textured apart
    assert all(any(k in scenes.STOCHASTIC for k in v) for v in per_scene.values())


def render(scene, path):
    scene.render.resolution_x, scene.render.resolution_y = 48, 27
    scenes.render_still(scene, path, samples=4, denoise=False)
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float64) / 255.0


def test_the_other_layout_is_the_same_place_laid_out_differently(tmp_path):
    scene = scenes.build_props(48, 27, 6)
    scene.frame_set(1)
    poses = {o.name: [list(r) for r in o.matrix_world] for o in scene.objects}
    first = render(scene, str(tmp_path / "a.png"))
    saved = scenes.other_layout(scene)
    other = render(scene, str(tmp_path / "b.png"))
    moved = 0
    for m in bpy.data.materials:
        if m.node_tree is not None and scenes.LAYOUT in m.node_tree.nodes:
            loc = tuple(m.node_tree.nodes[scenes.LAYOUT].inputs["Location"].default_value)
            moved += loc != (0.0, 0.0, 0.0)
            for node in m.node_tree.nodes:
                if node.bl_idname in ("ShaderNodeTexNoise", "ShaderNodeTexVoronoi"):
                    assert node.inputs["W"].default_value != 0.0  # another seed
    assert moved == len([m for m in bpy.data.materials if m.node_tree and scenes.LAYOUT in m.node_tree.nodes]) >= 8
    assert {o.name: [list(r) for r in o.matrix_world] for o in scene.objects} == poses
    scenes.restore_layout(saved)
    again = render(scene, str(tmp_path / "c.png"))
    assert np.abs(again - first).max() < 1e-6  # undone exactly
    diff = np.abs(other - first).mean(-1)
    assert (diff > 0.05).mean() > 0.2  # the textures are elsewhere on much of the picture
    assert np.abs(other.mean((0, 1)) - first.mean((0, 1))).max() < 0.03  # the same colours, the same light


def test_maps_follow_the_walking_character_along_its_rest_surface(tmp_path):
    W, H = 96, 54
    scene = scenes.build_walker(W, H, 12)
    body = bpy.data.objects["WalkerBody"]
    assert body.add_rest_position_attribute is False
    assert surface_maps.export(scene, [1, 2, 7, 12], str(tmp_path)) == 4
    assert body.add_rest_position_attribute is False and scene.frame_current == 1  # restored
    m = surface_maps.Maps(str(tmp_path))
    assert list(m.actors.values()) == ["WalkerBody"]
    oid = m.ids["WalkerBody"]
    f1, f2, f7 = m.frame(1), m.frame(2), m.frame(7)
    # the depth is the add-on's own depth of the same frame (same rasteriser, same evaluated triangles)
    frames = addon_module("gather.frames")
    scene.frame_set(7)
    assert np.array_equal(np.isfinite(f7["depth"]), np.isfinite(frames.scene_depth(scene, scene.camera, W, H)))
    assert np.allclose(f7["depth"][np.isfinite(f7["depth"])],
                       frames.scene_depth(scene, scene.camera, W, H)[np.isfinite(f7["depth"])], atol=1e-4)
    for f in (f1, f7):
        rest = f["rest"][f["obj"] == oid]
        assert len(rest) > 50
        assert np.abs(rest[:, 0]).max() < 0.35 and np.abs(rest[:, 1]).max() < 0.2  # the body at rest, whatever pose
        assert rest[:, 2].min() > -0.01 and rest[:, 2].max() < 1.85
    # in the world the body walked on; on its surface a frame sees itself, and the next frame mostly what it saw
    world = {n: metrics.unproject(np.where(f["obj"] == oid, f["depth"], 1.0), f["K"], f["c2w"]).numpy()[f["obj"] == oid]
             for n, f in ((1, f1), (7, f7))}
    assert np.linalg.norm(world[7].mean(0) - world[1].mean(0)) > 0.5
    assert actors.seen_on_surface(f1, [f1], oid)[f1["obj"] == oid].all()
    assert actors.seen_on_surface(f2, [f1], oid)[f2["obj"] == oid].mean() > 0.8
    f12 = m.frame(12)  # walking away: its back, which the reference (its front) never showed
    assert actors.seen_on_surface(f12, [f1], oid)[f12["obj"] == oid].mean() < 0.6


def test_the_props_roll_swing_and_wave_into_sides_the_reference_never_saw(tmp_path):
    frames = 24
    scene = scenes.build_props(96, 54, frames)
    ball = bpy.data.objects["Ball"]
    radius = ball.dimensions[2] / 2
    # rolling without slipping: on every frame the turn since the first is the distance rolled over the radius
    scene.frame_set(1)
    first = ball.matrix_world.copy()
    from mathutils import Matrix, Vector
    for n in range(2, frames + 1):
        scene.frame_set(n)
        m = ball.matrix_world
        moved = m.translation - first.translation
        assert abs(moved.z) < 1e-6  # on the floor
        across = Vector((0, 0, 1)).cross(moved).normalized()  # the horizontal axis across the path
        rolled = Matrix.Rotation(moved.length / radius, 3, across)
        turned = first.to_3x3().inverted() @ m.to_3x3()
        assert max(abs(a - b) for r1, r2 in zip(turned, rolled) for a, b in zip(r1, r2)) < 1e-4, n
    surface_maps.export(scene, [1, frames // 2, frames], str(tmp_path))
    m = surface_maps.Maps(str(tmp_path))
    assert sorted(m.actors.values()) == ["Ball", "Door", "Flag"]
    ref = m.frame(1)

    def seen_share(n, name):
        f, oid = m.frame(n), m.ids[name]
        mine = f["obj"] == oid
        return actors.seen_on_surface(f, [ref], oid)[mine].mean()
    assert seen_share(frames, "Ball") < 0.7  # its far side came over the top
    assert seen_share(frames, "Door") < 0.3  # open: its edge and back face the camera
    assert seen_share(frames, "Flag") > 0.9  # waving changes its shape, not which side shows
    # what the door hid on the reference (the room behind the doorway) is still world never shown
    last = m.frame(frames)
    assert (actors.unseen_mask(last, [ref], m.actors) & (last["obj"] == m.ids["Cabinet"])).sum() > 20
