"""Shots of one set through the real add-on in bpy (tests/addon/shots_cases.py, one bpy session): every camera
marker's shot in its own job folder and strips, chained through the memory, one shot on its own, the set's
references, and bad markers refused in one line with nothing of the finished shots lost."""
import json
import os
import subprocess
import sys

import pytest

CASES_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shots_cases.py")


@pytest.fixture(scope="module")
def results(extension_zip, tmp_path_factory, tiny_depth_cache):
    tmp = tmp_path_factory.mktemp("shots")
    result = tmp / "result.json"
    proc = subprocess.run([sys.executable, CASES_PY, extension_zip, str(tmp), str(result)], cwd=str(tmp),
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
                               "HF_HUB_CACHE": str(tiny_depth_cache)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, json.loads(result.read_text())


def strips(r):
    return sorted((s["name"], s["start"], s["end"], s["channel"]) for s in r["after"]["strips"])


def one_line(r, expected):
    assert r["error"] is not None and not r["error"].startswith("UNEXPECTED"), r["error"]
    line = r["error"].strip().removeprefix("Error: ")
    assert line.startswith(expected) and "\n" not in line, line
    assert expected in r["status"]


def test_every_camera_marker_is_a_shot_with_its_folder_and_strips(results):
    tmp, data = results
    r = data["all"]
    assert r["error"] is None, r["error"]
    assert {n: s["frames"] for n, s in r["shots"].items()} == {"A": [1, 2, 3, 4], "B": [5, 6, 7, 8]}
    assert {n: s["folder"] for n, s in r["shots"].items()} == {n: str(tmp / "all" / n) for n in "AB"}
    assert {n: s["state"] for n, s in r["shots"].items()} == {"A": "done", "B": "done"}
    for name in "AB":
        frames = sorted(os.listdir(tmp / "all" / name / "frames"))
        assert frames == [f"{n:06d}.png" for n in r["shots"][name]["frames"]]
    # strips named after the shot and segment, on one channel, each over its own frames
    assert strips(r) == [("A 001", 1, 3, 1), ("A 002", 3, 5, 1), ("B 001", 5, 7, 1), ("B 002", 7, 9, 1)]
    assert r["status"].startswith("Done: 2 shots, 8 frames")
    assert r["after"]["frame_current"] == 3


def test_chained_shots_start_from_the_memory_the_shot_before_left(results):
    _, data = results
    r = data["all"]
    a, b = r["shots"]["A"]["job"], r["shots"]["B"]["job"]
    # A is seeded by the reference painted from its first frame; B starts from A's memory and still knows the
    # reference, from A's camera on frame 1
    assert a["reference"]["frame"] == 1 and a["start"] is None and a["references"] == []
    assert b["reference"] is None and b["references"] == [1]
    assert b["start"] == {"memory": "inputs/start/memory.safetensors", "shot": "A"}
    assert r["start_matches"]


def test_one_shot_on_its_own_leaves_the_others_alone(results):
    _, data = results
    r = data["again_b"]
    assert r["error"] is None, r["error"]
    assert r["shots"]["B"]["job"]["resumed"] == 2  # nothing changed: B's finished segments are kept
    assert strips(r) == strips(data["all"])
    a_files = {k: v for k, v in r["all_before"].items() if k.startswith("A" + os.sep)}
    assert a_files and all(r["all_after"][k] == v for k, v in a_files.items())


@pytest.mark.parametrize("name, expected", [
    ("unknown_shot", "There is no shot named 'C': the shots are 'A', 'B'"),
    ("two_markers_one_frame", "Markers 'B' and 'C' are both on frame 5: move one of them"),
    ("not_a_camera", "Marker 'C' is bound to 'Pillar', which is not a camera"),
    ("unbound_marker", "Marker 'note' is not bound to a camera, so it starts no shot"),
    ("reference_without_camera", "Reference 2 has no camera: choose the camera it was painted from"),
    ("b_before_a", "Shot 'B' starts from what shot 'A' leaves (chained shots), and 'A' is not finished"),
])
def test_bad_shots_are_one_clear_line_and_nothing_is_lost(results, name, expected):
    _, data = results
    r = data[name]
    one_line(r, expected)
    assert r["after"] == r["before"]  # the Sequencer, frame and scene as they were
    assert r["all_after"] == r["all_before"]  # the finished shots' files untouched


def test_markers_without_cameras_leave_one_shot_with_a_notice(results):
    tmp, data = results
    r = data["plain_markers"]
    assert r["error"] is None, r["error"]
    assert list(r["shots"]) == [""] and r["shots"][""]["folder"] == str(tmp / "plain")
    assert r["shots"][""]["job"]["frames"] == list(range(1, 9))
    assert any(n.startswith("The scene's markers are not bound to cameras: the whole frame range is one shot")
               for n in r["notices"]), r["notices"]
    assert [s[0] for s in strips(r)] == ["Mirage 001", "Mirage 002", "Mirage 003", "Mirage 004"]


def test_a_reference_outside_every_shot_seeds_the_set(results):
    _, data = results
    r = data["reference_outside"]
    assert r["error"] is None, r["error"]
    assert "Reference 2 (frame 40) is outside every shot: it seeds the set's memory only" in r["notices"]
    a, b = r["shots"]["A"]["job"], r["shots"]["B"]["job"]
    assert a["reference"]["frame"] == 1 and a["references"] == [40]
    assert b["references"] == [1, 40] and b["start"]["shot"] == "A"


def test_parallel_shots_each_start_from_the_references(results):
    _, data = results
    r = data["parallel"]
    assert r["error"] is None, r["error"]
    b = r["shots"]["B"]["job"]
    assert b["start"] is None and b["references"] == [1] and b["run_frames"] == 4
    assert {n: s["state"] for n, s in r["shots"].items()} == {"A": "done", "B": "done"}


def test_the_ui_path_makes_every_shot(results):
    tmp, data = results
    ui = data["ui"]["ui"]
    assert ui["finished"] and ui["error"] is None, ui
    assert ui["segments_in_vse"] == 4 and len(data["ui"]["after"]["strips"]) == 4
    assert ui["ticks"] > 4
    # Write MP4 (on by default): every finished shot's video in its own folder, from the UI path too
    assert all((tmp / "ui" / name / "flythrough.mp4").stat().st_size > 0 for name in "AB")
    assert ui["status"].endswith("flythrough.mp4 written in each shot's folder"), ui["status"]


def test_a_rendered_reference_is_rendered_once_and_shows_its_own_shot(results):
    tmp, data = results
    r = data["render_reference"]
    assert r["error"] is None, r["error"]
    a, b = r["shots"]["A"]["job"], r["shots"]["B"]["job"]
    # frame 6 is shot B's: B names it by that frame, A gets it with shot B's camera of its own
    assert a["reference"] is None and a["references"] == [6]
    assert b["reference"]["frame"] == 6 and b["references"] == [] and b["start"]["shot"] == "A"
    assert (tmp / "render" / "reference_render_000006.png").is_file()
    rendered = [n for n in r["notices"] if "The reference is frame 6 rendered with" in n]
    assert len(rendered) == 1, r["notices"]  # one render serves every shot
    assert {n: s["state"] for n, s in r["shots"].items()} == {"A": "done", "B": "done"}


def test_depth_from_the_images_scales_every_reference_by_its_own_camera(results):
    tmp, data = results
    r = data["monocular_references"]
    assert r["error"] is None, r["error"]
    a = r["shots"]["A"]["job"]
    # the room has geometry before both cameras: each reference's estimate is scaled by the scene through its camera
    assert a["reference"]["scene_depth"] == "inputs/reference_scene_depth.npy" and a["references"] == [6]
    assert a["references_scene_depth"] == ["inputs/references/02_scene_depth.npy"]
    assert (tmp / "mono" / "A" / "inputs" / "references" / "02_scene_depth.npy").is_file()
    b = r["shots"]["B"]["job"]
    assert b["references"] == [1, 6] and all(b["references_scene_depth"])
    assert {n: s["state"] for n, s in r["shots"].items()} == {"A": "done", "B": "done"}


def test_shot_states_follow_the_markers(results):
    _, data = results
    r = data["states_after_a_marker_moved"]
    # B now starts on frame 4: neither folder holds the run of the shot's frames any more
    assert {n: (s["frames"][0], s["state"]) for n, s in r["shots"].items()} == {"A": (1, "partial"), "B": (4, "partial")}
    assert {n: s["state"] for n, s in data["b_before_a"]["shots"].items()} == {"A": "not started", "B": "not started"}


def test_a_shot_starts_afresh_with_a_notice_when_the_shot_before_changed(results):
    _, data = results
    r = data["changed_a"]
    assert r["error"] is None, r["error"]
    assert r["shots"]["A"]["job"]["resumed"] == 0 and r["shots"]["B"]["job"]["resumed"] == 0
    assert any(n.startswith("B: The memory this shot starts from changed since its last run (shot 'A' was generated "
                            "again") for n in r["notices"]), r["notices"]
    assert r["all_after"]["B/frames/000008.png"] != r["all_before"]["B/frames/000008.png"]


def test_the_panel_lists_the_shots_with_their_state_and_a_button_each(results):
    _, data = results
    panel = data["all"]["panel"]
    labels = [d[1] for d in panel["drawn"] if d[0] == "label"]
    assert "A  1-4  Camera" in labels and "B  5-8  CameraB" in labels and labels.count("done") == 2
    assert [b for b in panel["buttons"] if b[1] == "shot"] == [["mirage.generate", "shot", "A"],
                                                              ["mirage.generate", "shot", "B"]]
    assert ["prop", "shot_mode"] in panel["drawn"] and ["list", "references"] in panel["drawn"]
    operators = {d[1] for d in panel["drawn"] if d[0] == "operator"}
    assert {"mirage.generate", "mirage.write_openjd_job", "mirage.load_shots"} <= operators
    assert "Submit to Flamenco: the Flamenco add-on is not enabled" in labels


def test_the_farm_buttons_say_why_they_cannot_work(results):
    _, data = results
    errors = data["farm_errors"]
    assert errors["submit_flamenco"].strip() == ("Error: The Flamenco add-on is not enabled: install it from your "
                                                 "Flamenco Manager's web interface (docs/farm.md)")
    assert errors["openjd_unsaved"].strip() == "Error: Save the .blend first: a farm opens it from its file"
