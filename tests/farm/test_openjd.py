"""Open Job Description for a set's shots, run for real by the OpenJD runtime (openjd-cli) with the stand-in
Blender: the job bundle Blender writes gives every frame of every shot byte for byte as one Blender session
does, and its last step leaves both shots' strips in the .blend's Sequencer; a task on a worker that lacks the
extension or the backend fails with one line, and nothing of the other shots is lost."""
import json
import os
import sys

import pytest
import yaml

from tests.addon.loader import addon_module
from tests.conftest import ROOT
from tests.farm.conftest import EXPECTED_STRIPS, copy_set, frames, run, strips

farmjob = addon_module("farmjob")
TEMPLATE = os.path.join(ROOT, "farm", "openjd", "mirage.yaml")
def openjd_run(farm, template, *params, env=None):
    args = [farm.openjd, "run", str(template)]
    for p in params:
        args += ["-p", p]
    return run(args, env or farm.env, timeout=900, cwd=str(farm.tmp))


@pytest.fixture(scope="module")
def session_and_farm(farm, in_session):
    """The same set made twice: in one Blender session with bpy.ops.mirage.generate(), and by `openjd run` of
    the bundle Blender writes for it."""
    session, on_farm = in_session, copy_set(farm, "openjd")
    proc = run([farm.blender, "-b", str(on_farm), "--python-exit-code", "1", "--python-expr",
                f"import bpy; bpy.ops.mirage.write_openjd_job(blender={farm.blender!r}, "
                f"backend_python={sys.executable!r})"], farm.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = on_farm.parent / "mirage" / "openjd-job"
    check = run([farm.openjd, "check", str(bundle / "template.json")], farm.env)
    assert check.returncode == 0, check.stdout + check.stderr
    # the workers know no backend of their own: the job's BackendPython tells them
    job = openjd_run(farm, bundle / "template.json", f"file://{bundle / 'job_parameters.json'}")
    return session, on_farm, bundle, job


def test_the_openjd_job_gives_every_frame_as_one_blender_session(session_and_farm, farm):
    session, on_farm, bundle, job = session_and_farm
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    made = frames(session)
    assert sorted(made) == ["A", "B"] and [len(v) for v in made.values()] == [4, 4]
    assert frames(on_farm) == made  # byte for byte
    # the last step put both shots' strips into the .blend itself
    assert strips(farm, on_farm) == EXPECTED_STRIPS
    assert strips(farm, session) == EXPECTED_STRIPS


def test_the_bundle_has_a_step_per_chained_shot(session_and_farm):
    _, _, bundle, job = session_and_farm
    template = json.loads((bundle / "template.json").read_text())
    steps = [(s["name"], [d["dependsOn"] for d in s.get("dependencies", [])]) for s in template["steps"]]
    assert steps == [("Shot 01 A", []), ("Shot 02 B", ["Shot 01 A"]), ("Sequencer", ["Shot 01 A", "Shot 02 B"])]
    values = json.loads((bundle / "parameter_values.json").read_text())["parameterValues"]
    assert [v["name"] for v in values] == ["BlendFile", "BlenderExecutable", "BackendPython"]
    assert values[0]["value"] == str(session_and_farm[1])
    # the tasks' progress lines, as OpenJD reads them
    assert job.stdout.count("openjd_progress: 100.0") == 2 and "openjd_status: B: segment 2 done" in job.stdout


def test_parallel_shots_are_tasks_of_one_step(farm, tmp_path):
    t = farmjob.template(["A", "B"], "PARALLEL", "Mirage: set")
    path = tmp_path / "parallel.json"
    path.write_text(json.dumps(t))
    check = run([farm.openjd, "check", str(path)], farm.env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert [(s["name"], [d["dependsOn"] for d in s.get("dependencies", [])]) for s in t["steps"]] == [
        ("Shots", []), ("Sequencer", ["Shots"])]
    assert t["steps"][0]["parameterSpace"]["taskParameterDefinitions"] == [
        {"name": "Shot", "type": "STRING", "range": ["A", "B"]}]


def test_the_shipped_template_is_valid_and_the_generic_one(farm):
    check = run([farm.openjd, "check", TEMPLATE], farm.env)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(TEMPLATE, encoding="utf-8") as f:
        assert yaml.safe_load(f) == farmjob.generic_template()
    params = {p["name"]: p for p in farmjob.generic_template()["parameterDefinitions"]}
    assert params["BlenderExecutable"]["default"] == "blender" and "default" not in params["BlendFile"]
    assert all("default" in p for n, p in params.items() if n != "BlendFile")


def failing_task(job):
    """The one line a failed task printed for OpenJD."""
    lines = [line.split("openjd_fail: ", 1)[1] for line in job.stdout.splitlines() if "openjd_fail: " in line]
    assert job.returncode != 0 and len(lines) == 1, job.stdout[-3000:]
    return lines[0]


@pytest.mark.parametrize("case, expected", [
    ("no_extension", "Mirage is not installed or not enabled in this worker's Blender: install the extension there"),
    ("no_backend", "Shot 'A': No backend Python is set: press Set Up Backend in Preferences > Add-ons > Mirage, "
                   "choose a Backend Python there, or set MIRAGE_BACKEND_PYTHON"),
    ("chained_shot_first", "Shot 'B' starts from what shot 'A' leaves (chained shots), and 'A' is not finished"),
])
def test_a_task_that_cannot_run_fails_with_one_line_and_loses_nothing(session_and_farm, farm, case, expected, tmp_path):
    on_farm = session_and_farm[1]
    before = frames(on_farm)
    env, blend, shot, python = dict(farm.env), on_farm, "1", ""
    if case == "no_extension":
        env["BLENDER_USER_RESOURCES"] = str(tmp_path / "bare-worker")
    elif case == "chained_shot_first":
        blend, shot, python = copy_set(farm, f"fresh-{tmp_path.name}"), "2", sys.executable
    job = openjd_run(farm, TEMPLATE, f"BlendFile={blend}", f"BlenderExecutable={farm.blender}", f"Shots={shot}",
                     f"BackendPython={python}", env=env)
    line = failing_task(job)
    assert line.startswith(expected), line
    assert frames(on_farm) == before  # the finished shots' frames are untouched
