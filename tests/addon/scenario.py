"""Runs one scenario in a fresh bpy session, the way a user or a farm would: install the built zip,
build a scene, call bpy.ops.mirage.generate(). Writes what it saw to a JSON file for the test to check.

  python scenario.py ZIP OUT_DIR SCENARIO RESULT.json

An error from Generate is NOT caught: like `blender -b --python-exit-code 1`, the process must exit
non-zero. The scene's state before and after is written first (in a finally block).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import scenes  # noqa: E402  (sets an isolated Blender user folder before bpy loads)
import bpy  # noqa: E402


def scene_state(scene):
    ed = scene.sequence_editor
    strips = []
    if ed is not None:
        coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
        for s in coll:
            # left_handle/right_handle from Blender 5.1, where frame_final_* are deprecated
            start, end = (s.left_handle, s.right_handle) if hasattr(s, "left_handle") else \
                (s.frame_final_start, s.frame_final_end)
            strips.append({"name": s.name, "channel": s.channel, "start": start, "end": end, "type": s.type,
                           "files": [e.filename for e in s.elements] if s.type == "IMAGE" else [],
                           "directory": getattr(s, "directory", "")})
    return {"frame_current": scene.frame_current, "objects": sorted(o.name for o in scene.objects),
            "has_sequence_editor": ed is not None, "strips": strips,
            "frame_start": scene.frame_start, "frame_end": scene.frame_end}


def render_state(scene):
    """The user's render settings, which writing flythrough.mp4 must leave alone."""
    r = scene.render
    fmt = r.image_settings
    return {"filepath": r.filepath, "fps": r.fps, "use_sequencer": r.use_sequencer, "engine": r.engine,
            "format": [getattr(fmt, k) for k in ("media_type", "file_format") if hasattr(fmt, k)],
            "codec": r.ffmpeg.codec, "scenes": sorted(sc.name for sc in bpy.data.scenes)}


def video_info(path):
    """flythrough.mp4 read back with Blender's own FFmpeg: frame count, size and frame 1's mean colour."""
    if not os.path.isfile(path):
        return None
    import numpy as np
    img = bpy.data.images.load(path)
    w, h = img.size
    px = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1, :, :3]
    info = {"frames": img.frame_duration, "size": [w, h], "first_mean": px.mean(axis=(0, 1)).tolist()}
    bpy.data.images.remove(img)
    clip = bpy.data.movieclips.load(path)
    info["fps"] = clip.fps
    bpy.data.movieclips.remove(clip)
    return info


def drive_like_the_ui(scenario):
    """What the modal operator does on each timer tick, timed: no call may block Blender for long."""
    import importlib
    import signal
    import time
    session_mod = importlib.import_module("bl_ext.user_default.mirage_blender.session")
    prefs = importlib.import_module("bl_ext.user_default.mirage_blender.prefs")
    session = session_mod.Session(bpy.context, prefs.python_pref())
    longest_step = longest_poll = 0.0
    while session.backend is None and not session.ended:
        t = time.perf_counter()
        session.tick(budget=0)  # one export step a tick
        if session.backend is None:
            longest_step = max(longest_step, time.perf_counter() - t)
        else:  # the tick that wrote job.json and started the backend
            longest_poll = time.perf_counter() - t
    polls = 0
    deadline = time.monotonic() + 120
    while not session.ended and time.monotonic() < deadline:
        t = time.perf_counter()
        for msg in session.tick():
            if msg["type"] == "segment_done" and msg["segment"] == 0:
                if scenario == "cancel":
                    session.cancel()
                elif scenario == "cancel_kill":  # what the UI does when a cancelled backend does not stop in time
                    session.cancel()
                    session.backend.kill()
                elif scenario == "kill":
                    session.backend.proc.send_signal(signal.SIGKILL)
        longest_poll = max(longest_poll, time.perf_counter() - t)
        polls += 1
        time.sleep(0.01)
    session.close()
    return {"polls": polls, "longest_poll": longest_poll, "longest_step": longest_step, "finished": session.finished,
            "cancelled": session.cancelled, "error": session.error, "segments_in_vse": session.segments_in_vse,
            "out": session.out}


def main():
    zip_path, out, scenario, result_path = sys.argv[1:5]
    scenes.install_extension(zip_path)
    # "moving": the crate slides and turns, so it gets its own memory and light maps
    scene = scenes.build_room(width=128, height=72, frames=24, moving_crate=scenario in ("moving", "poll_moving"))
    ref = os.path.join(out, "reference.png")
    os.makedirs(out, exist_ok=True)
    scenes.render_reference(scene, ref, samples=4)
    s = scene.mirage
    s.reference_image = ref
    s.output_dir = os.path.join(out, "mirage")
    s.segment_length = 10
    scene.frame_set(7)
    result = {"background": bpy.app.background}

    if scenario == "user_strip":
        # a strip of the user's on channel 1 over the whole range must not be covered or touched
        ed = scene.sequence_editor_create()
        coll = ed.strips if hasattr(ed, "strips") else ed.sequences
        try:
            coll.new_effect(name="UserColor", type="COLOR", channel=1, frame_start=1, length=30)
        except TypeError:  # Blender 4.x: the end frame, not the length
            coll.new_effect(name="UserColor", type="COLOR", channel=1, frame_start=1, frame_end=31)
    elif scenario == "no_camera":
        scene.camera = None
    elif scenario == "ortho":
        scene.camera.data.type = "ORTHO"
    elif scenario == "missing_reference":
        s.reference_image = os.path.join(out, "nope.png")
    elif scenario == "corrupt_reference":
        bad = os.path.join(out, "corrupt.png")
        with open(bad, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n this is not an image")
        s.reference_image = bad
    elif scenario == "segment_too_long":
        s.segment_length = 500
    elif scenario == "relative_output":
        # "rel_out/" without "//": the working folder while unsaved, then the .blend's folder once saved
        scene.frame_end = 6
        s.segment_length = 3
        s.output_dir = "rel_out/"
        bpy.ops.mirage.generate()
        result["unsaved_out"] = os.path.abspath("rel_out")
        os.makedirs(os.path.join(out, "shots"), exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "shots", "shot.blend"))
        bpy.ops.mirage.generate()
        import gc
        gc.collect()  # anything left unclosed warns now, while the test still reads stderr
        result["after"] = scene_state(bpy.context.scene)
        result["status"] = bpy.context.window_manager.mirage.text
        with open(result_path, "w") as f:
            json.dump(result, f)
        return
    elif scenario in ("monocular", "monocular_no_weights"):
        # a camera move and a piece of concept art: no geometry at all (the render stands in for the art)
        for ob in [o for o in scene.objects if o.type != "CAMERA"]:
            bpy.data.objects.remove(ob)
        s.depth_source = "MONOCULAR"
        s.monocular_distance = 4.0
    elif scenario not in ("ok", "moving", "poll", "poll_moving", "cancel", "cancel_kill", "kill"):
        raise SystemExit(f"unknown scenario {scenario}")

    result["before"] = scene_state(scene)
    scene.render.fps = 12  # the video must follow the scene's frame rate
    result["render_before"] = render_state(scene)
    if scenario in ("cancel", "cancel_kill", "kill"):
        s.segment_length = 1  # many small segments: the stop lands long before the last one
    if scenario in ("poll", "poll_moving", "cancel", "cancel_kill", "kill"):
        result.update(drive_like_the_ui(scenario))
        result["after"] = scene_state(scene)
        with open(result_path, "w") as f:
            json.dump(result, f)
        return
    try:
        bpy.ops.mirage.generate()
        if scenario in ("ok", "user_strip"):
            result["first"] = scene_state(scene)
            result["render_after"] = render_state(scene)
            result["video"] = video_info(os.path.join(out, "mirage", "flythrough.mp4"))
            result["first_status"] = bpy.context.window_manager.mirage.text
            path = os.path.join(out, "saved.blend")
            bpy.ops.wm.save_as_mainfile(filepath=path)
            bpy.ops.mirage.generate()  # a rerun replaces its own strips, never stacks copies
            bpy.ops.wm.save_as_mainfile(filepath=path)
            bpy.ops.wm.open_mainfile(filepath=path)
            scene = bpy.context.scene
    finally:
        result["after"] = scene_state(scene)
        result["status"] = bpy.context.window_manager.mirage.text
        with open(result_path, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    scenes.run_script(main)
