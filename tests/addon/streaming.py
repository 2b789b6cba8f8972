"""Generate with a streamed export, driven as the UI's timer drives it, in a fresh bpy session:

  python streaming.py ZIP OUT_DIR WIDTH HEIGHT FRAMES SEGMENT RESULT.json [late]

Installs the built zip, builds the room with its moving crate at WIDTH x HEIGHT, and ticks the session one export
step at a time until the backend has started and the first segment's frames are exported; then only reads the
backend's messages (no further export step) until the first segment is reported, and ticks on to the end. The
order of what happened (frames exported, segments reported) goes to RESULT.json. With `late`, once the last
frame is exported no tick comes until the backend has finished: the export's last step (the whole job.json)
then runs after the backend's end.
"""
import importlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scenario import scene_state  # noqa: E402  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

PKG = "bl_ext.user_default.mirage_blender"


def main():
    zip_path, out = sys.argv[1], sys.argv[2]
    width, height, frames, segment = (int(x) for x in sys.argv[3:7])
    result_path = sys.argv[7]
    late = sys.argv[8:] == ["late"]
    scenes.install_extension(zip_path)
    scene = scenes.build_room(width=width, height=height, frames=frames, moving_crate=True)
    os.makedirs(out, exist_ok=True)
    ref = os.path.join(out, "reference.png")  # any picture of the render's shape: what is measured is the order
    y, x = np.mgrid[0:height, 0:width]
    Image.fromarray(np.stack([x * 255 // width, y * 255 // height, (x // 16 + y // 16) % 2 * 200], -1)
                    .astype(np.uint8)).save(ref)
    s = scene.mirage
    s.reference_image = ref
    s.output_dir = os.path.join(out, "mirage")
    s.segment_length = segment
    session = importlib.import_module(PKG + ".session").Session(bpy.context, importlib.import_module(PKG + ".prefs").python_pref())
    stream = os.path.join(s.output_dir, "inputs", "frames.jsonl")
    events = []

    def exported():
        if not os.path.isfile(stream):
            return 0
        with open(stream, encoding="utf-8") as f:
            return sum(1 for line in f if line.endswith("\n"))

    def note(msgs):
        for m in msgs:
            if m["type"] == "segment_done":
                events.append(["segment_done", m["segment"], exported()])

    deadline = time.monotonic() + 600
    # the UI's ticks, one export step each, until the first segment's frames are in the stream
    while not session.ended and (session.backend is None or exported() < segment):
        before = exported()
        note(session.tick(budget=0))
        if exported() > before:
            events.append(["exported", exported()])
    started_at = exported()
    # no export step now: the backend must report the first segment with what it has
    while not session.ended and not any(e[0] == "segment_done" for e in events) and time.monotonic() < deadline:
        note(session.poll())
        time.sleep(0.02)
    while not session.ended and time.monotonic() < deadline:
        before = exported()
        if late and before == frames:  # every frame is out: the UI's next tick comes after the backend's end
            while session.backend.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            events.append(["backend_ended", exported()])
        note(session.tick(budget=0))
        if exported() > before:
            events.append(["exported", exported()])
        time.sleep(0.005)
    session.close()
    with open(os.path.join(s.output_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    result = {"events": events, "started_with": started_at, "finished": session.finished, "error": session.error,
              "segments_in_vse": session.segments_in_vse, "out": session.out, "after": scene_state(scene),
              "job_frames": [fr["frame"] for fr in job["frames"]], "streamed_job": "frame_count" in job}
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    scenes.run_script(main)
