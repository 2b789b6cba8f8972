"""The Model menu and the job's prompt come from the models folder's model.json files, never from model
names: a folder with one more model.json shows one more model. Real bpy, the add-on's props registered."""
import json
import os
import shutil

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from PIL import Image  # noqa: E402

from tests.addon.loader import addon_module  # noqa: E402
from tests.addon.test_objects_export import camera, cube  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

props = addon_module("props")
job_module = addon_module("job")

EXTRA = {"class": "wan:WanVACEModel", "title": "Prompted test model", "description": "a model that takes a prompt",
         "panel": {"number": 9, "label": "Prompted", "tooltip": "Takes a text prompt"},
         "needs": {"cuda": True, "prompt": True}}
# what the menu offered before it was read from model.json: (name, label, number)
SHIPPED = [("builtin", "Built-in", 0), ("compact", "Compact (trained)", 1), ("patch", "Exact Patches", 4),
           ("wan-vace-1.3b", "Wan2.1 VACE 1.3B", 2), ("wan-vace-14b", "Wan2.1 VACE 14B", 3),
           ("synth", "Invent (synthesis)", 5)]


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """The add-on's settings registered over a copy of the shipped model.json files plus one more model."""
    models = tmp_path / "models"
    for name in os.listdir(os.path.join(ROOT, "models")):
        src = os.path.join(ROOT, "models", name, "model.json")
        if os.path.isfile(src):
            (models / name).mkdir(parents=True)
            shutil.copy(src, models / name / "model.json")
    (models / "test-prompted").mkdir()
    (models / "test-prompted" / "model.json").write_text(json.dumps(EXTRA))
    monkeypatch.setenv("MIRAGE_MODELS_DIR", str(models))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    props.register()
    try:
        yield bpy.context.scene
    finally:
        props.unregister()


def menu(scene):
    return [(e.identifier, e.name, e.description, e.value)
            for e in scene.mirage.bl_rna.properties["model"].enum_items]


def test_menu_lists_each_model_json_with_a_panel_entry(registered):
    items = menu(registered)
    names = [i[0] for i in items]
    assert "test-prompted" in names and "compact-fillnet" not in names  # no panel entry: not offered
    assert ("test-prompted", "Prompted", "Takes a text prompt", 9) in items
    for name, label, number in SHIPPED:
        with open(os.path.join(ROOT, "models", name, "model.json")) as f:
            tooltip = json.load(f)["panel"]["tooltip"]
        assert (name, label, tooltip, number) in items
    assert len(items) == len(SHIPPED) + 1
    # the menu's order comes from the panel entries (their "order"), not from the folders' names
    assert [n for n in names if n in dict((s[0], s) for s in SHIPPED)] == ["builtin", "synth", "patch", "compact",
                                                                           "wan-vace-1.3b", "wan-vace-14b"]
    assert names[-1] == "test-prompted"  # no order given: after the ordered ones
    assert registered.mirage.model == "builtin"  # the default


def test_a_saved_file_stores_the_models_number(registered):
    s = registered.mirage
    s.model = "patch"
    assert s.get("model") == 4  # what a .blend keeps, whatever the menu's order
    s["model"] = 9
    assert s.model == "test-prompted"


def scene_for_a_job(scene, tmp_path, model):
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 36, 100
    scene.frame_start, scene.frame_end = 1, 2
    camera(scene, (0.0, -5.0, 1.0))
    cube("Wall", (0.0, 0.5, 1.0), 1.0).scale = (18.0, 1.0, 18.0)  # its near face 5 units before the camera
    ref = tmp_path / "reference.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)).save(ref)
    s = scene.mirage
    s.reference_image, s.output_dir, s.segment_length, s.model = str(ref), str(tmp_path / "out"), 1, model
    s.prompt, s.negative_prompt = "a sunny courtyard", "blur"


@pytest.mark.parametrize("model, prompted", [("test-prompted", True), ("builtin", False), ("wan-vace-1.3b", True)])
def test_the_job_gets_a_prompt_where_the_model_needs_one(registered, tmp_path, model, prompted):
    scene_for_a_job(registered, tmp_path, model)
    notices = []
    builder = job_module.JobBuilder(registered, registered.mirage, notices)
    steps = list(builder.steps())
    # the backend may start before the first frame is exported; the whole job.json comes after the last
    assert [s.ready for s in steps] == [True, False, False] and steps[-1].status == "Exporting cameras and depth: frame 2"
    with open(builder.job_path) as f:
        job = json.load(f)
    assert job["model"] == model
    if prompted:
        assert (job["prompt"], job["negative_prompt"]) == ("a sunny courtyard", "blur")
    else:
        assert "prompt" not in job and "negative_prompt" not in job
    assert [fr["frame"] for fr in job["frames"]] == [1, 2]
    depth = np.load(os.path.join(builder.out, job["frames"][0]["depth"]))
    np.testing.assert_allclose(depth, 5.0, rtol=1e-5)  # the wall, 5 units in front of the camera
    assert not [n for n in os.listdir(builder.out) if n.endswith(".part")]
