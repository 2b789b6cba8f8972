"""The export streamed into a running backend, in real bpy: the first segment lands before the last frame is
exported, and the frames are those of the finished job run on its own."""
import json
import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, backend_env

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streaming.py")


def test_1080p_first_segment_lands_before_the_last_frame_is_exported(extension_zip, tmp_path):
    frames, segment = 6, 2
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, DRIVER, extension_zip, str(tmp_path), "1920", "1080", str(frames),
                           str(segment), str(result)], cwd=str(tmp_path), capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(result.read_text())
    assert data["finished"] and data["error"] is None, data
    events = data["events"]
    # the backend started before the export ended and reported segment 0 with only the first segment's frames
    # exported; every later frame was exported after that
    first = events.index(next(e for e in events if e[0] == "segment_done"))
    assert events[first] == ["segment_done", 0, segment] and data["started_with"] == segment
    assert events.index(["exported", frames]) > first
    assert [e[1] for e in events if e[0] == "segment_done"] == [0, 1, 2]
    assert data["segments_in_vse"] == 3 and len(data["after"]["strips"]) == 3
    # the folder ends as a whole job, every frame listed
    assert not data["streamed_job"] and data["job_frames"] == list(range(1, frames + 1))
    # the same job run on its own, after the export (as a farm would): the same frames, byte for byte
    job_dir = os.path.join(data["out"])
    alone = tmp_path / "alone"
    shutil.copytree(os.path.join(job_dir, "inputs"), alone / "inputs")
    shutil.copy(os.path.join(job_dir, "job.json"), alone / "job.json")
    os.remove(alone / "inputs" / "frames.jsonl")
    run = subprocess.run([sys.executable, "-m", "backend", "run", str(alone / "job.json")], cwd=ROOT,
                         env=backend_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    names = sorted(os.listdir(os.path.join(job_dir, "frames")))
    assert names == [f"{n:06d}.png" for n in range(1, frames + 1)] == sorted(os.listdir(alone / "frames"))
    for name in names:
        with open(os.path.join(job_dir, "frames", name), "rb") as a, open(alone / "frames" / name, "rb") as b:
            assert a.read() == b.read(), name


def test_a_backend_that_ends_before_the_exports_last_step_still_gets_the_whole_job_json(extension_zip, tmp_path):
    # the UI's tick after the last frame comes only once the backend has finished: the export's last step (the
    # whole job.json) must still run, so the folder resumes, runs on a farm and tells its shot's state alone
    frames, segment = 4, 2
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, DRIVER, extension_zip, str(tmp_path), "64", "36", str(frames),
                           str(segment), str(result), "late"], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=900, env={**os.environ, "MIRAGE_BACKEND_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(result.read_text())
    assert data["finished"] and data["error"] is None, data
    assert ["backend_ended", frames] in data["events"]
    assert not data["streamed_job"] and data["job_frames"] == list(range(1, frames + 1))
