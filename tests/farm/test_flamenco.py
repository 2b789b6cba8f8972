"""The Flamenco job type (farm/flamenco/mirage.js). No Flamenco Manager can run here: the job is compiled in Node
by a harness implementing the Manager's documented compiler API (tests/farm/flamenco_harness.js), and the
commands it authors are then run the way a Flamenco worker runs blender-render ({blender} {blenderArgs} <file>
<args>) with the stand-in Blender: they give the frames one Blender session gives, the worker's progress lines,
and both shots' strips in the .blend."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.addon.loader import addon_module
from tests.conftest import ROOT
from tests.farm.conftest import EXPECTED_STRIPS, copy_set, frames, run, strips

farmjob = addon_module("farmjob")
JOB_TYPE = os.path.join(ROOT, "farm", "flamenco", "mirage.js")
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flamenco_harness.js")
NODE = shutil.which("node")
# what a Flamenco worker reads in blender-render's output (internal/worker/command_blender.go)
SAVED, STEP, SKIPPED = re.compile(r"^Saved: '(.*)'"), re.compile(r"^Time: ([0-9:.]+)"), re.compile(r"^skipping existing frame")
BLENDER_ARGS = "-b -y"  # the Manager's default {blenderArgs}


def compile_job(tmp_path, settings):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "Mirage set", "type": "mirage", "settings": settings}))
    proc = subprocess.run([NODE, HARNESS, JOB_TYPE, str(job)], capture_output=True, text=True, timeout=60)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def settings(**kw):
    return {"shots": json.dumps([{"name": "A", "frames": 4}, {"name": "B", "frames": 4}]), "mode": "CHAINED",
            "backend_python": "", "blendfile": "/shared/set.flamenco.blend", **kw}


def test_the_job_type_is_valid_javascript():
    assert NODE, "Node.js is needed to check the Flamenco job type"
    proc = subprocess.run([NODE, "--check", JOB_TYPE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_chained_shots_are_tasks_in_a_chain_then_the_sequencer(tmp_path):
    rc, out = compile_job(tmp_path, settings())
    assert rc == 0 and out["error"] is None, out
    assert [(t["name"], t["type"], t["dependencies"]) for t in out["tasks"]] == [
        ("shot A", "blender", []), ("shot B", "blender", ["shot A"]), ("sequencer", "blender", ["shot A", "shot B"])]
    shot_a, _, strips_task = out["tasks"]
    [cmd] = shot_a["commands"]
    assert cmd["name"] == "blender-render" and cmd["totalStepCount"] == 4  # one step per frame: its Time: line
    assert cmd["parameters"] == {"exe": "{blender}", "exeArgs": "{blenderArgs}", "argsBefore": [],
                                 "blendfile": "/shared/set.flamenco.blend",
                                 "args": ["--python-exit-code", "1", "--python-expr", farmjob.SHOT_TASK, "--", "A", ""]}
    assert strips_task["commands"][0]["parameters"]["args"][3] == farmjob.STRIPS_TASK


def test_parallel_shots_depend_on_nothing_but_the_sequencer_on_all(tmp_path):
    rc, out = compile_job(tmp_path, settings(mode="PARALLEL", backend_python="/opt/mirage/bin/python"))
    assert rc == 0, out
    assert [t["dependencies"] for t in out["tasks"]] == [[], [], ["shot A", "shot B"]]
    assert out["tasks"][1]["commands"][0]["parameters"]["args"][-2:] == ["B", "/opt/mirage/bin/python"]


@pytest.mark.parametrize("change, message", [
    ({"shots": "[]"}, "Mirage: the scene has no shots to generate: check its camera markers in Blender"),
    ({"shots": "not json"}, "Mirage: the shots setting is not JSON"),
    ({"shots": json.dumps([{"name": "A"}])}, "Mirage: every shot needs a name and a number of frames"),
    ({"mode": "SOMETIMES"}, "Mirage: mode must be CHAINED or PARALLEL, not SOMETIMES"),
    ({"blendfile": ""}, "Mirage: the job has no blendfile setting"),
])
def test_a_job_the_manager_must_refuse_is_one_line(tmp_path, change, message):
    rc, out = compile_job(tmp_path, settings(**change))
    assert rc == 1 and out["error"].startswith(message) and out["tasks"] == [], out


def test_its_settings_are_flamencos_and_its_programs_the_extensions(tmp_path):
    _, out = compile_job(tmp_path, settings())
    jt = out["job_type"]
    assert jt["label"] == "Mirage Flythrough"
    for s in jt["settings"]:
        assert s["type"] in ("string", "int32", "float", "bool") and re.fullmatch(r"[a-z_]+", s["key"]), s
    assert {s["key"] for s in jt["settings"]} >= {"blendfile", "shots", "mode"}  # blendfile: set by the add-on
    proc = subprocess.run([NODE, HARNESS, JOB_TYPE, "--globals"], input="SHOT_TASK STRIPS_TASK", capture_output=True,
                          text=True, timeout=60)
    assert json.loads(proc.stdout) == {"SHOT_TASK": farmjob.SHOT_TASK, "STRIPS_TASK": farmjob.STRIPS_TASK}


def worker_command(cmd, blender):
    """A blender-render command as a Flamenco worker runs it: exe, exeArgs, argsBefore, blendfile, args."""
    p = cmd["parameters"]
    exe = p["exe"].replace("{blender}", blender)
    return [exe, *p["exeArgs"].replace("{blenderArgs}", BLENDER_ARGS).split(), *p["argsBefore"], p["blendfile"],
            *p["args"]]


def test_the_authored_commands_make_the_set_as_one_session_does(farm, in_session, tmp_path):
    blend = copy_set(farm, "flamenco")
    # the submitting Blender evaluates the job type's settings (the Flamenco add-on's `eval`, with C = context)
    evals = {s["key"]: s["eval"] for s in compile_job(tmp_path, settings())[1]["job_type"]["settings"] if "eval" in s}
    out = tmp_path / "evaluated.json"
    expr = (f"import bpy, json, sys; C = bpy.context; json.dump({{k: eval(v) for k, v in {evals!r}.items()}}, "
            f"open(sys.argv[-1], 'w'))")
    proc = run([farm.blender, "-b", str(blend), "--python-expr", expr, "--", str(out)], farm.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads(out.read_text())
    assert json.loads(evaluated["shots"]) == [{"name": "A", "frames": 4}, {"name": "B", "frames": 4}]
    assert evaluated["mode"] == "CHAINED"
    rc, job = compile_job(tmp_path, {**evaluated, "blendfile": str(blend), "backend_python": sys.executable})
    assert rc == 0, job
    for task in job["tasks"]:  # in dependency order, as the Manager hands them out
        [cmd] = task["commands"]
        proc = run(worker_command(cmd, farm.blender), farm.env)
        assert proc.returncode == 0, task["name"] + proc.stdout[-2000:] + proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        steps = sum(1 for line in lines if STEP.match(line) or SKIPPED.match(line))
        assert steps == cmd["totalStepCount"], (task["name"], steps)
        for line in lines:
            if SAVED.match(line):
                assert os.path.isfile(SAVED.match(line).group(1)), line
        if cmd["totalStepCount"]:
            assert any(SAVED.match(line) for line in lines)
    assert frames(blend) == frames(in_session)  # byte for byte
    assert strips(farm, blend) == EXPECTED_STRIPS
