"""Shots from timeline markers on plain values, without Blender (the rule Blender switches cameras by)."""
import pytest

from tests.addon.loader import addon_module

shots = addon_module("core.shots")
InputError = addon_module("core.errors").InputError
M, R = shots.Marker, shots.ShotRange


def ranges(markers, start=1, end=20, camera="Scene"):
    return shots.shot_ranges(markers, start, end, camera)


def test_camera_markers_start_shots_until_the_next_one_or_the_end():
    found, notices = ranges([M("B", 12, "CamB"), M("A", 5, "CamA"), M("note", 8)])
    # frames before the first marker are seen through its camera, as Blender renders them
    assert found == [R("A", 1, 11, "CamA"), R("B", 12, 20, "CamB")]
    assert notices == []
    assert list(found[1].frames) == list(range(12, 21))
    assert shots.shot_of_frame(found, 11) == found[0] and shots.shot_of_frame(found, 30) is None


def test_without_camera_markers_the_range_is_one_shot_with_the_scene_camera():
    assert ranges([]) == ([R("", 1, 20, "Scene")], [])
    found, notices = ranges([M("note", 3)])
    assert found == [R("", 1, 20, "Scene")]
    assert notices == ["The scene's markers are not bound to cameras: the whole frame range is one shot with the "
                       "scene camera (bind a camera to a marker to start a shot there)"]


def test_markers_outside_the_range_and_hidden_cameras_start_no_shot():
    found, notices = ranges([M("early", -5, "C0"), M("A", 0, "CamA"), M("B", 10, "Hidden", renders=False),
                             M("late", 40, "C2")], start=1, end=20)
    assert found == [R("A", 1, 20, "CamA")]
    assert any(n.startswith("Marker 'early' (frame -5) starts no shot") for n in notices)
    assert any(n.startswith("Marker 'late' (frame 40) starts no shot") for n in notices)
    assert any("'Hidden', which is hidden from the render" in n for n in notices)


@pytest.mark.parametrize("markers, message", [
    ([M("A", 5, "CamA"), M("B", 5, "CamB")], "Markers 'A' and 'B' are both on frame 5: move one of them"),
    ([M("A", 5, "Cube", is_camera=False)], "Marker 'A' is bound to 'Cube', which is not a camera"),
    ([M("A", 1, "C"), M("a", 9, "D")], "Two camera markers are named 'A' (or differ only in case)"),
    ([M("x/y", 1, "C")], "Marker 'x/y' cannot name a shot's folder: its name holds '/', which a folder name cannot"),
    ([M("..", 1, "C")], "Marker '..' cannot name a shot's folder: its name starts or ends with a space, or ends"),
    ([M(" A", 1, "C")], "Marker ' A' cannot name a shot's folder: its name starts or ends with a space"),
    ([M("frames", 1, "C")], "Marker 'frames' cannot name a shot's folder: its name is a folder every job folder"),
])
def test_bad_markers_are_one_clear_line(markers, message):
    with pytest.raises(InputError) as e:
        ranges(markers)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_empty_range_is_refused_first():
    with pytest.raises(InputError, match=r"^The frame range is empty \(End is before Start\)$"):
        ranges([M("A", 5, "CamA")], start=10, end=3)


def test_selecting_a_shot_by_name():
    markers = [M("A", 1, "CamA"), M("B", 10, "CamB"), M("note", 4), M("late", 90, "CamC")]
    found, _ = ranges(markers)
    assert shots.select(found, "B", markers, 1, 20) == R("B", 10, 20, "CamB")
    cases = [("nope", "There is no shot named 'nope': the shots are 'A', 'B'"),
             ("note", "Marker 'note' is not bound to a camera, so it starts no shot"),
             ("late", "Shot 'late' has no frames in the frame range 1-20 (its marker is on frame 90)")]
    for name, message in cases:
        with pytest.raises(InputError) as e:
            shots.select(found, name, markers, 1, 20)
        assert str(e.value).startswith(message)
    with pytest.raises(InputError, match="the scene has no camera markers, so its only shot is the whole frame range"):
        shots.select([R("", 1, 20, "Scene")], "A", [], 1, 20)


def test_shots_follow_blenders_camera_switching_on_every_frame():
    # Blender's rule, frame by frame: the camera of the last marker at or before the frame, else of the first
    import random
    rng = random.Random(4)
    for _ in range(200):
        frames = rng.sample(range(-10, 40), rng.randint(1, 6))
        markers = [M(f"m{f}", f, f"C{f}") for f in frames]
        start, end = rng.randint(-5, 10), rng.randint(10, 30)
        found, _ = ranges(markers, start, end)
        ordered = sorted(markers, key=lambda m: m.frame)
        for f in range(start, end + 1):
            owner = ([m for m in ordered if m.frame <= f] or ordered[:1])[-1]
            assert shots.shot_of_frame(found, f).camera == owner.camera, (frames, start, end, f)
        assert [f for r in found for f in r.frames] == list(range(start, end + 1))
