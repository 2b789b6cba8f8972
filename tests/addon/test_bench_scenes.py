"""The bench's varied scenes and its blockout, in real bpy: the camera turns toward walls the first frame
never saw, and the blockout leaves one grey material on everything."""
import os
import sys

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import metrics  # noqa: E402
import scenes  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402

frames = addon_module("gather.frames")
gcam = addon_module("gather.camera")
W, H, FRAMES = 64, 36, 12


def invented_shares(scene):
    """Share of each frame's pixels with a surface the first frame did not see (no erosion)."""
    cam = scene.camera
    views = []
    for n in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(n)
        views.append((frames.scene_depth(scene, cam, W, H).astype(np.float64), gcam.intrinsics(scene, cam),
                      gcam.camera_to_world(cam)))
    return [float(metrics.unseen(*v, [views[0]]).mean()) for v in views]


@pytest.mark.parametrize("build", [scenes.build_hall, scenes.build_studio])
def test_the_walk_turns_toward_walls_the_reference_never_saw(build):
    scene = build(W, H, FRAMES)
    shares = invented_shares(scene)
    assert shares[0] == 0.0
    assert max(shares) > 0.9  # at some point it looks at what the reference never showed
    assert 0.35 < float(np.mean(shares)) < 0.8  # about half of a frame's pixels over the path
    kinds = {n.bl_idname for m in bpy.data.materials if m.node_tree for n in m.node_tree.nodes}
    assert {"ShaderNodeTexBrick", "ShaderNodeTexWave"} <= kinds or {"ShaderNodeTexChecker", "ShaderNodeTexNoise"} <= kinds


def test_blockout_leaves_one_grey_material_and_the_lights_and_camera():
    scene = scenes.build_studio(W, H, FRAMES)
    lamps = {o.name: o.data.energy for o in scene.objects if o.type == "LIGHT"}
    cam = scene.camera.matrix_world.copy()
    grey = scenes.blockout(scene)
    meshes = [o for o in scene.objects if o.type == "MESH"]
    assert len(meshes) >= 8
    assert {slot.material for o in meshes for slot in o.material_slots} == {grey}
    bsdf = grey.node_tree.nodes["Principled BSDF"]
    assert tuple(bsdf.inputs["Base Color"].default_value)[:3] == (0.5, 0.5, 0.5)
    assert not any(i.is_linked for i in bsdf.inputs)  # plain: no texture drives it
    assert {o.name: o.data.energy for o in scene.objects if o.type == "LIGHT"} == lamps
    assert scene.camera.matrix_world == cam
