"""Scenes of several shots of one set, for the tests and the shots bench (bpy only; built from code).

The room of tools/scenes.py. Shot A is the scene camera's: it starts where the reference was painted and turns to
walls the reference never showed (what Mirage invents there). Shot B is a second camera's, bound by a marker:
it looks from elsewhere at what shot A invented, so the two shots must agree there.
"""
import math

import bpy

import scenes

SHOT_A_KEYS = [((-3.0, -4.5, 1.6), (85, -30)), ((-1.0, -3.8, 1.6), (85, 20)), ((0.5, -3.6, 1.6), (85, 55))]
SHOT_B_KEYS = [((2.5, -3.0, 1.6), (85, 40)), ((1.5, -3.5, 1.6), (85, 60))]


def _keys(cam, first, count, keys):
    """Keyframe `cam` over frames first .. first + count - 1 along `keys` (evenly spread, linear)."""
    for i, (loc, (pitch, yaw)) in enumerate(keys):
        f = first + round(i * (count - 1) / max(len(keys) - 1, 1))
        cam.location = loc
        cam.rotation_euler = (math.radians(pitch), 0.0, math.radians(yaw))
        cam.keyframe_insert("location", frame=f)
        cam.keyframe_insert("rotation_euler", frame=f)
    action = cam.animation_data.action
    for fc in getattr(action, "fcurves", []):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"


def build_two_shots(width=64, height=36, frames_a=4, frames_b=4, moving_crate=False):
    """The room with two camera-marker shots: A (frames 1 .. frames_a, the scene camera) and B (the rest,
    'CameraB'). Returns the scene."""
    frames = frames_a + frames_b
    scene = scenes.build_room(width, height, frames, keys=[(1, *SHOT_A_KEYS[0])], moving_crate=moving_crate)
    cam_a = scene.camera
    cam_a.animation_data_clear()
    _keys(cam_a, 1, frames_a, SHOT_A_KEYS)
    cam_b = bpy.data.objects.new("CameraB", bpy.data.cameras.new("CameraB"))
    cam_b.data.lens = cam_a.data.lens
    scene.collection.objects.link(cam_b)
    _keys(cam_b, frames_a + 1, frames_b, SHOT_B_KEYS)
    scene.timeline_markers.new("A", frame=1).camera = cam_a
    scene.timeline_markers.new("B", frame=frames_a + 1).camera = cam_b
    return scene
