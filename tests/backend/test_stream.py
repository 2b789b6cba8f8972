"""A streamed job: the backend starts before the export ends and takes each frame as the add-on writes it
(job.json's frame_count, inputs/frames.jsonl). Real subprocesses; orderings checked on protocol messages."""
import json
import os
import subprocess
import sys
import threading

import numpy as np

from backend import protocol
from tests.backend.test_pipeline import frames_of
from tests.conftest import ROOT, backend_env, run_backend
from tests.synth import make_job


def streamed(folder, **job_args):
    """A job made by make_job, rewritten as an export in progress: job.json lists no frame yet and says how many
    will come. Returns (job path, the frame objects still to append)."""
    path = make_job(str(folder), **job_args)
    job = json.load(open(path))
    frames, job["frames"], job["frame_count"] = job["frames"], [], len(job["frames"])
    json.dump(job, open(path, "w"))
    return path, frames


def append(folder, frames, torn=None):
    """What the add-on does after writing a frame's files: one line per frame; `torn` starts one more line
    without finishing it."""
    with open(os.path.join(folder, protocol.STREAM_FILE), "a", encoding="utf-8") as f:
        for fr in frames:
            f.write(json.dumps(fr) + "\n")
        if torn is not None:
            f.write(json.dumps(torn)[:20])


def follow(job, limit=120):
    """The backend following a streamed job; killed after `limit` seconds (a wait that never ends fails the test)."""
    p = subprocess.Popen([sys.executable, "-m", "backend", "run", job, "--jsonl", "--stop-on-eof", "--follow"],
                         cwd=ROOT, env=backend_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    threading.Timer(limit, p.kill).start()
    return p


def messages(proc):
    for line in proc.stdout:
        if line.startswith("{"):
            yield json.loads(line)


def test_streamed_job_gives_the_frames_of_the_whole_job_and_reports_before_the_export_ends(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "streamed"
    proc, _ = run_backend(make_job(str(whole), n=9, segment_length=3))
    assert proc.returncode == 0, proc.stderr
    job, frames = streamed(part, n=9, segment_length=3)
    p = follow(job)
    seen, appended = [], 0
    for msg in messages(p):
        seen.append(msg)
        if msg["type"] == "hello":
            assert msg["frames"] == 9 and msg["segments"] == 3
            append(part, frames[:3], torn=frames[3])  # the first segment, and half a line of the next frame
            appended = 3
        elif msg["type"] == "segment_done" and msg["segment"] == 0:
            # segment 0 is out while the export has written 3 of 9 frames
            assert appended == 3 and msg["frames"] == [1, 3]
            assert all((part / f).is_file() for f in msg["files"])
            with open(part / protocol.STREAM_FILE, "a") as f:
                f.write(json.dumps(frames[3])[20:] + "\n")
            append(part, frames[4:])
            appended = 9
    assert p.wait(timeout=60) == 0, p.stderr.read()
    assert [m["type"] for m in seen].count("segment_done") == 3 and seen[-1]["type"] == "done"
    fa, fb = frames_of(whole), frames_of(part)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
    # the same job either way: its resume state is the same
    ra, rb = (json.load(open(d / "run.json")) for d in (whole, part))
    assert ra["fingerprint"] == rb["fingerprint"]


def test_a_streamed_run_resumes_from_the_whole_job_and_a_changed_frame_does_not(tmp_path):
    job, frames = streamed(tmp_path, n=6, segment_length=2)
    append(tmp_path, frames)
    proc, msgs = run_backend(job, "--jsonl")  # every frame is there: no need to follow
    assert proc.returncode == 0, proc.stderr
    # the export finished: job.json lists every frame, as the add-on writes it last
    whole = json.load(open(job))
    whole["frames"], _ = frames, whole.pop("frame_count")
    json.dump(whole, open(job, "w"))
    proc, msgs = run_backend(job, "--jsonl")
    assert [m.get("resumed") for m in msgs if m["type"] == "segment_done"] == [True, True, True]
    # a camera moved on frame 4 (segment 1): segment 0 still counts, the rest is generated again
    whole["frames"][3]["cam_to_world"][0][3] += 0.05
    json.dump(whole, open(job, "w"))
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    assert not [m for m in msgs if m.get("resumed")]  # the memory saved is the one after segment 2


def test_unfinished_stream_without_follow_fails_in_one_line(tmp_path):
    job, frames = streamed(tmp_path, n=6, segment_length=3)
    append(tmp_path, frames[:4])
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 1
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert errors == ["the job lists 4 of its 6 frames (its export did not finish): generate again from Blender"]


def test_each_streamed_frame_is_checked_like_the_job_file(tmp_path):
    job, frames = streamed(tmp_path, n=6, segment_length=3)
    bad = dict(frames[4], cam_to_world=[[0, 0, 0, 0]] * 4)
    append(tmp_path, frames[:4] + [bad])
    p = follow(job)
    errors = [m["message"] for m in messages(p) if m["type"] == "error"]
    assert p.wait(timeout=60) == 1
    assert errors == ["cam_to_world of frame 5 is singular"]
    os.remove(tmp_path / protocol.STREAM_FILE)
    append(tmp_path, frames[:2] + [dict(frames[2], depth="inputs/depth/missing.npy")])
    p = follow(job)
    errors = [m["message"] for m in messages(p) if m["type"] == "error"]
    assert p.wait(timeout=60) == 1
    assert len(errors) == 1 and errors[0].startswith("the depth of frame 3 does not exist")


def test_cancel_while_waiting_for_frames(tmp_path):
    job, frames = streamed(tmp_path, n=6, segment_length=3)
    p = follow(job)
    for msg in messages(p):
        if msg["type"] == "hello":
            append(tmp_path, frames[:3])
        if msg["type"] == "segment_done":
            p.stdin.write('{"type":"cancel"}\n')  # the backend now waits for frame 4, which never comes
            p.stdin.flush()
        if msg["type"] == "done":
            assert msg["cancelled"]
    assert p.wait(timeout=60) == 3
    # a closed stdin (Blender gone) stops the wait too
    p = follow(job)
    for msg in messages(p):
        if msg["type"] == "segment_done" and msg.get("resumed"):
            p.stdin.close()
    assert p.wait(timeout=60) == 3
