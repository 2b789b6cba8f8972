"""The backend as a real subprocess on small synthetic jobs."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from backend import models
from tests.conftest import ROOT, backend_env, run_backend
from tests.synth import make_job


def frames_of(folder):
    d = os.path.join(folder, "frames")
    return {f: np.asarray(Image.open(os.path.join(d, f))) for f in sorted(os.listdir(d))}


def test_run_speaks_the_protocol_and_writes_every_frame(tmp_path):
    job = make_job(str(tmp_path), n=10, segment_length=4)
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "hello" and kinds[-1] == "done"
    assert msgs[0]["protocol"] == 1 and msgs[0]["device"] == "cpu" and msgs[0]["model"] == "builtin"
    assert msgs[0]["runs"] == "synth"  # what 'builtin' names: the compact codec that invents
    seg = [m for m in msgs if m["type"] == "segment_done"]
    assert [m["frames"] for m in seg] == [[1, 4], [5, 8], [9, 10]]
    assert kinds.count("progress") == 10
    assert sorted(frames_of(tmp_path)) == [f"{i:06d}.png" for i in range(1, 11)]
    run = json.load(open(tmp_path / "run.json"))
    assert run["frames"] == 10 and run["segments"] == 3
    assert all(s["memory_bytes"] > 0 and s["seconds"] > 0 for s in run["per_segment"])
    assert not [f for f in os.listdir(tmp_path / "frames") if f.endswith(".part")]


def test_reference_frame_reproduces_the_reference_exactly(tmp_path):
    # frame 1 is read from a memory holding only the reference: every pixel must come back unchanged
    job = make_job(str(tmp_path), n=3, segment_length=3)
    proc, _ = run_backend(job)
    assert proc.returncode == 0, proc.stderr
    ref = np.asarray(Image.open(tmp_path / "inputs" / "reference.png"))
    out = np.asarray(Image.open(tmp_path / "frames" / "000001.png"))
    assert np.array_equal(ref, out)


def test_same_seed_gives_identical_frames(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        proc, _ = run_backend(make_job(str(d), n=8, segment_length=3, seed=7))
        assert proc.returncode == 0, proc.stderr
    fa, fb = frames_of(a), frames_of(b)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("model", ["builtin", "compact", "patch"])
def test_later_frames_are_consistent_with_the_reference(tmp_path, model):
    # a small sideways move: the wall and box seen in the reference must stay where geometry puts them
    job = make_job(str(tmp_path), n=4, segment_length=2, model=model)
    proc, _ = run_backend(job)
    assert proc.returncode == 0, proc.stderr
    ref = np.asarray(Image.open(tmp_path / "inputs" / "reference.png")).astype(float)
    last = np.asarray(Image.open(tmp_path / "frames" / "000004.png")).astype(float)
    assert np.abs(ref - last).mean() > 1.0  # the camera did move
    # a frame generated at the reference pose again (a revisit) must equal the reference
    j = json.load(open(job))
    j["frames"].append(dict(j["frames"][0], frame=5, depth=j["frames"][0]["depth"]))
    j["segment_length"] = 2
    json.dump(j, open(job, "w"))
    proc, _ = run_backend(job)
    assert proc.returncode == 0, proc.stderr
    again = np.asarray(Image.open(tmp_path / "frames" / "000005.png")).astype(float)
    # the patch model stores the reference exactly; a trained model returns exactly what it stored, its own
    # rendition of the reference (one grey level for PNG rounding)
    if models.load(model).name == "patch":
        assert np.abs(again - ref).max() == 0
    else:
        m = models.load(model)
        x = torch.from_numpy(ref / 255.0).permute(2, 0, 1).float()
        stored = m.render(m.encode(x).half()).permute(1, 2, 0).numpy() * 255.0
        assert np.abs(again - stored).max() <= 1.0


def test_cli_bad_job_is_one_line_error(tmp_path):
    job = tmp_path / "job.json"
    job.write_text('{"version": 1, "model": "builtin", ')
    proc, msgs = run_backend(str(job))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: job file is not valid JSON")
    proc, msgs = run_backend(str(job), "--jsonl")
    assert msgs and msgs[-1]["type"] == "error" and "not valid JSON" in msgs[-1]["message"]


def test_unknown_model_and_unknown_fields(tmp_path):
    proc, msgs = run_backend(make_job(str(tmp_path / "a"), n=2, segment_length=1, model="nope"), "--jsonl")
    assert proc.returncode == 1 and msgs[-1]["type"] == "error"
    assert "unknown model 'nope'" in msgs[-1]["message"] and "builtin" in msgs[-1]["message"]
    proc, msgs = run_backend(make_job(str(tmp_path / "b"), n=2, segment_length=1, colour="blue"), "--jsonl")
    assert proc.returncode == 0
    assert "unknown job field 'colour' ignored" in msgs[0]["notices"]


def test_check_reports_torch_and_models():
    out = subprocess.run([sys.executable, "-m", "backend", "check"], cwd=ROOT, env=backend_env(),
                         capture_output=True, text=True, timeout=60)
    info = json.loads(out.stdout)
    assert out.returncode == 0 and info["ok"] and "builtin" in info["models"]


def test_cancel_keeps_finished_segments(tmp_path):
    job = make_job(str(tmp_path), W=128, H=96, n=40, segment_length=2)
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", job, "--jsonl"], cwd=ROOT, env=backend_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_segments = []
    for line in proc.stdout:
        msg = json.loads(line)
        if msg["type"] == "segment_done":
            done_segments.append(msg["frames"])
            proc.stdin.write('{"type":"cancel"}\n')
            proc.stdin.flush()
        if msg["type"] == "done":
            assert msg["cancelled"]
    assert proc.wait(timeout=30) == 3
    assert 1 <= len(done_segments) < 20
    names = set(os.listdir(tmp_path / "frames"))
    for first, last in done_segments:
        assert all(f"{n:06d}.png" in names for n in range(first, last + 1))
    assert not [n for n in names if n.endswith(".part")]


def test_killed_run_resumes_to_identical_frames(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    proc, _ = run_backend(make_job(str(full), n=9, segment_length=3))
    assert proc.returncode == 0
    job = make_job(str(part), n=9, segment_length=3)
    p = subprocess.Popen([sys.executable, "-m", "backend", "run", job, "--jsonl"], cwd=ROOT, env=backend_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if json.loads(line)["type"] == "segment_done":
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=30)
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    resumed = [m for m in msgs if m["type"] == "segment_done" and m.get("resumed")]
    assert len(resumed) >= 1
    assert json.load(open(part / "run.json"))["resumed_segments"] == len(resumed)
    fa, fb = frames_of(full), frames_of(part)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_changed_job_starts_fresh(tmp_path):
    job = make_job(str(tmp_path), n=6, segment_length=3)
    assert run_backend(job)[0].returncode == 0
    j = json.load(open(job))
    j["seed"] = 99
    json.dump(j, open(job, "w"))
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0
    assert not [m for m in msgs if m.get("resumed")]
