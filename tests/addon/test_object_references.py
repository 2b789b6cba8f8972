"""An object's own references through the real add-on in bpy (tests/addon/object_reference_cases.py, one bpy
session): the panel in Object Properties > Mirage, its buttons, the references in job.json with the object's name
and the object numbering, and what cannot work refused in one line."""
import json
import os
import subprocess
import sys

import pytest

CASES_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "object_reference_cases.py")


@pytest.fixture(scope="module")
def results(extension_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("object_references")
    result = tmp / "result.json"
    proc = subprocess.run([sys.executable, CASES_PY, extension_zip, str(tmp), str(result)], cwd=str(tmp),
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, json.loads(result.read_text())


def test_the_property_comes_and_goes_with_the_add_on(results):
    _, data = results
    assert data["registered"] == [True, True]
    assert data["unregistered"] == [False, False]


def test_the_object_panel_lists_its_references_with_add_and_remove(results):
    _, data = results
    p = data["panel"]
    assert p["poll"] == [True, False]  # a mesh has the panel, a camera has not
    assert ["list", "MIRAGE_UL_object_references", "mirage_references"] in p["empty"]
    assert ["operator", "mirage.object_reference_add"] in p["empty"]
    assert ["operator", "mirage.object_reference_remove"] in p["empty"]
    assert ["prop", "mirage_dynamic"] in p["empty"]
    assert p["remove_without_any"] is False
    assert p["added"] == [["Camera", 3], ["Camera", 3]]  # the scene camera and this frame
    assert p["left"] == 1
    assert not any(e[0] == "label" and "Depth" in e[1] for e in p["with_two"])
    assert ["label", "An object's references need Depth set to Scene"] in p["plane"]


def test_an_objects_reference_is_in_the_job_with_its_name_and_number(results):
    tmp, data = results
    r = data["ok"]
    assert r["error"] is None, r["error"]
    job = r["job"]
    assert job["reference"]["frame"] == 1
    ref, = job["references"]
    assert ref["object"] == "Crate" and ref["frame"] == 2 and ref["image"] == "inputs/references/02.png"
    assert os.path.isfile(tmp / "ok" / ref["image"]) and "parts" in ref and "depth" in ref
    # the job's numbering is the object map's, and the reference's camera sees the crate
    assert job["parts"] == r["part_numbers"] and job["parts"]["Crate"] >= 1
    assert job["parts"]["Crate"] in r["reference_parts"]["0"]
    assert r["frames"] == [f"{n:06d}.png" for n in range(1, 5)]
    from backend import protocol
    parsed, _ = protocol.validate_job(job, str(tmp / "ok"))
    assert [x.object for x in parsed.references] == [None, "Crate"]


@pytest.mark.parametrize("name, expected", [
    ("no_camera", "'Crate' reference 2 has no camera: choose the camera it was painted from"),
    ("no_image", "'Crate' reference 2 has no image: choose one, or remove the reference"),
    ("square", "'Crate' reference 1 is 64x64, which does not have the render's aspect ratio (64x36)"),
    ("hidden", "'Crate' has references of its own but does not render (it is hidden in renders or its collection "
               "is): show it in renders, or remove its references"),
    ("plane", "'Crate' has references of its own, which need Depth set to Scene"),
    ("empty", "'Marker' has references of its own but no surfaces to show them (it is an empty object)"),
])
def test_what_cannot_work_is_one_line(results, name, expected):
    _, data = results
    r = data[name]
    assert r["error"] is not None and not r["error"].startswith("UNEXPECTED"), r["error"]
    line = r["error"].strip().removeprefix("Error: ")
    assert line.startswith(expected) and "\n" not in line, line


def test_a_reference_that_does_not_show_its_object_says_so(results):
    _, data = results
    r = data["looks_away"]
    assert r["error"] is None, r["error"]
    assert "'Crate' reference 1 does not show 'Crate' (camera 'CrateCam', frame 2): it adds nothing" in r["notices"]
