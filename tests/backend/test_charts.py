"""Invention once per surface (backend/models/synth/charts.py): what a segment's frames see and the memory lacks is
completed in the surface's own coordinates and written into the memory before any frame is drawn, so later
segments read exactly the same content there."""
import json
import os
import signal
import subprocess
import sys

import torch

from backend import protocol
from backend.memory import SceneMemory
from backend.models.synth.charts import Inventor, tangents
from backend.pipeline import Run
from tests.conftest import ROOT, backend_env, run_backend
from tests.synth import make_job

W, H = 96, 64


def run_segments(job_path, tmp_path, upto):
    job, _ = protocol.load_job(job_path)
    run = Run.load(job, str(tmp_path), lambda *a, **k: None)
    run.folder.create()
    memory = run.seed_memory()
    snapshots = []
    for i in range(upto):
        for _ in run.per_frame(memory, run.frames_of(i)):
            pass
        snapshots.append(memory)
    return run, memory


def colours(run, memory, oid, points, normal):
    sp = memory.read_points(oid, points, normal[None].expand(points.shape[0], 3))
    img, covered, _ = run.model.draw(sp, 1, points.shape[0], None)
    return img[:, 0], covered[0]


def test_a_surface_is_invented_once_and_read_back_unchanged(tmp_path):
    # the camera slides right and turns: the wall right of what the reference saw comes into view in segment 1
    path = make_job(str(tmp_path), W=W, H=H, n=8, segment_length=4, addresses=True,
                    xs=[0.25 * i for i in range(8)], yaws=[4.0 * i for i in range(8)])
    job, _ = protocol.load_job(path)
    run = Run.load(job, str(tmp_path), lambda *a, **k: None)
    run.folder.create()
    memory = run.seed_memory()
    # wall points (z = 6) right of anything the reference saw, inside what the last frames see
    ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, 12), torch.linspace(3.9, 4.8, 12), indexing="ij")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((144,), 6.0)], 1).double()
    front = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    _, before = colours(run, memory, 0, points, front)
    assert not before.any()  # nobody saw them
    for _ in run.per_frame(memory, run.frames_of(0)):
        pass
    first, seen = colours(run, memory, 0, points, front)
    assert seen.float().mean() > 0.9  # invented, and written into the memory
    cells = len(memory.static)
    for _ in run.per_frame(memory, run.frames_of(1)):
        pass
    again, seen_again = colours(run, memory, 0, points, front)
    assert seen_again.all() == seen.all() and torch.equal(again[:, seen], first[:, seen])  # read back unchanged
    assert len(memory.static) >= cells
    # the invented wall looks like the wall the reference showed (its texture's colours), not a flat fill
    assert float(first[:, seen].std(1).mean()) > 0.03


def test_a_never_seen_face_of_a_moving_box_is_invented_once(tmp_path):
    # the box slides right while the camera follows and turns to its +x side, which the reference never shows
    n = 8
    path = make_job(str(tmp_path), W=W, H=H, n=n, segment_length=4, addresses=True,
                    xs=[0.3 * i for i in range(n)], yaws=[-5.0 * i for i in range(n)],
                    box_xs=[0.05 * i for i in range(n)])
    job, _ = protocol.load_job(path)
    run = Run.load(job, str(tmp_path), lambda *a, **k: None)
    run.folder.create()
    memory = run.seed_memory()
    # points on the box's +x face, in its own space (x = 0.6)
    zs, ys = torch.meshgrid(torch.linspace(3.1, 3.5, 8), torch.linspace(-0.5, 0.5, 8), indexing="ij")
    points = torch.stack([torch.full((64,), 0.6), ys.reshape(-1), zs.reshape(-1)], 1).double()
    side = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert memory.read_points(1, points, side[None].expand(64, 3)) is None or \
        not colours(run, memory, 1, points, side)[1].any()
    done = None
    for i in range(2):
        for _ in run.per_frame(memory, run.frames_of(i)):
            pass
        got, seen = colours(run, memory, 1, points, side)
        if done is None and seen.float().mean() > 0.5:
            done = (got, seen)
        elif done is not None:
            assert torch.equal(got[:, done[1]], done[0][:, done[1]])  # the same content in the later segment
    assert done is not None, "the box's side was never invented"


def test_a_charts_cells_are_drawn_from_the_front():
    # tangents turned as a camera facing the surface sees it: e1 x e2 = -n, so the forward drawing's determinant
    # is positive from the front (a mirrored chart would not be drawn at all)
    for n in ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.6, 0.0, 0.8]):
        n = torch.tensor(n, dtype=torch.float64)
        e1, e2 = tangents(n)
        assert torch.allclose(torch.linalg.cross(e1, e2), -n, atol=1e-9)
        assert abs(float(e1 @ e2)) < 1e-9


def test_the_inventor_keeps_one_chart_per_plane(tmp_path):
    path = make_job(str(tmp_path), W=W, H=H, n=8, segment_length=4, addresses=True,
                    xs=[0.25 * i for i in range(8)], yaws=[4.0 * i for i in range(8)])
    job, _ = protocol.load_job(path)
    run = Run.load(job, str(tmp_path), lambda *a, **k: None)
    run.folder.create()
    memory = run.seed_memory()
    for i in range(2):
        for _ in run.per_frame(memory, run.frames_of(i)):
            pass
    inventor = run.model.inventor
    assert isinstance(inventor, Inventor)
    walls = [c for c in inventor.charts if c.oid == 0 and c.part == 1 and float(c.n[2]) < -0.99]
    assert len(walls) == 1  # the wall's chart made once, its texel size fixed, reused by both segments


def test_the_charts_are_kept_with_the_memory_so_a_resumed_run_draws_the_same(tmp_path):
    # a run stopped after its first segment and resumed from the saved memory ends with the frames of a run that
    # never stopped: the charts made in the first segment come back with the memory, texel size and all
    kw = dict(W=W, H=H, n=8, segment_length=4, addresses=True, xs=[0.25 * i for i in range(8)],
              yaws=[4.0 * i for i in range(8)])
    whole, part = tmp_path / "whole", tmp_path / "part"
    proc, _ = run_backend(make_job(str(whole), **kw))
    assert proc.returncode == 0, proc.stderr
    job = make_job(str(part), **kw)
    p = subprocess.Popen([sys.executable, "-m", "backend", "run", job, "--jsonl"], cwd=ROOT, env=backend_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if json.loads(line)["type"] == "segment_done":
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=60)
    saved = SceneMemory.load(os.path.join(part, "state", "memory.safetensors"))
    assert saved.notes["charts"] and all(c["texel"] > 0 for c in saved.notes["charts"])
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    assert [m["segment"] for m in msgs if m["type"] == "segment_done" and m.get("resumed")] == [0]
    names = sorted(os.listdir(whole / "frames"))
    assert names == sorted(os.listdir(part / "frames")) and len(names) == 8
    for name in names:
        assert (whole / "frames" / name).read_bytes() == (part / "frames" / name).read_bytes(), name


def test_a_segment_completes_at_most_its_budget_of_texels_whatever_the_frame_size():
    # a floor seen by a large frame: a million pixels a millimetre apart. The new chart's texels grow until what
    # the samples need fits the budget; a chart made in an earlier segment keeps its texel size
    from backend.models.synth.charts import BUDGET, Chart
    inventor = Inventor(model=None)
    n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    e1, e2 = tangents(n)
    fresh = Chart(0, 1, n, 0.0, e1, e2, 0.001, 0)
    old = Chart(0, 2, n, 0.5, e1, e2, 0.002, 0)
    g = torch.linspace(0.0, 1.0, 1000, dtype=torch.float64)
    y, x = torch.meshgrid(g, g, indexing="ij")
    floor = torch.stack([x.reshape(-1), y.reshape(-1), torch.zeros(x.numel(), dtype=torch.float64)], 1)
    reach = torch.full((floor.shape[0],), 0.001, dtype=torch.float64)
    small = torch.stack([floor[:, 0] * 0.2, floor[:, 1] * 0.2, torch.full_like(floor[:, 0], 0.5)], 1)[::50]
    needs = inventor._budget([(fresh, [(floor, reach)], True), (old, [(small, reach[::50])], False)])
    assert old.texel == 0.002  # made before: unchanged
    assert fresh.texel > 0.0015  # a million texels asked for: coarser
    total = sum(int(need.sum()) for _, _, _, need in needs)
    assert total <= 1.2 * BUDGET, total
    # and below the budget nothing changes
    lone = Chart(0, 3, n, 1.0, e1, e2, 0.05, 0)
    inventor._budget([(lone, [(floor[::97], reach[::97])], True)])
    assert lone.texel == 0.05
