"""The classical patch model: exact round trip, and pixels placed with sub-cell precision on a read."""
import numpy as np
import torch

from backend.fill import depth_aware_fill
from backend.memory import LatentMemory
from backend.models.base import Completion, FrameModel, FrameNeeds
from backend.models.patch import PatchModel
from tests.synth import intrinsics, look_camera, texture


def image(W=64, H=48):
    return torch.from_numpy(texture(W, H, seed=5).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def test_round_trip_is_exact():
    m = PatchModel("patch", cell=4)
    x = image()
    assert torch.equal(m.render(m.encode(x)), x)


def test_a_one_pixel_move_moves_pixels_by_one_pixel():
    # a wall at z = 4 facing the camera; the camera slides so the wall moves exactly 1 pixel left, a quarter
    # of a cell: pixel placement must reproduce that shift, the cell grid alone cannot
    m, x = PatchModel("patch", cell=4), image()
    K = intrinsics(64, 48)
    z = 4.0
    mem = LatentMemory(m.channels, m.cell)
    mem.write(m.encode(x), torch.full((12, 16), z), K, look_camera(0.0))
    moved = look_camera(z / K[0, 0])  # 1 pixel of parallax at depth z
    r = mem.read(K, moved, 12, 16, splats=False)  # the cell-grid read: cells and where they land
    hole, geometry = r.hole, r.geometry
    assert geometry.shape == (3, 12, 16) and torch.isnan(geometry[:, hole]).all()
    full = m.complete(r, FrameNeeds()).latent
    placed = m.render(full, r)
    snapped = m.render(full)
    inner = (slice(None), slice(4, 44), slice(4, 56))
    want = torch.roll(x, -1, dims=2)[inner]
    assert (placed[inner] - want).abs().max() < 1e-3
    assert (snapped[inner] - want).abs().mean() > 0.05


def test_geometry_at_the_writing_camera_changes_nothing():
    m, x = PatchModel("patch", cell=4), image()
    K, cam = intrinsics(64, 48), look_camera(0.3, yaw_deg=10)
    mem = LatentMemory(m.channels, m.cell)
    mem.write(m.encode(x), torch.full((12, 16), 5.0), K, cam)
    r = mem.read(K, cam, 12, 16, splats=False)
    assert not r.hole.any()
    assert torch.equal(m.render(r.latent, r), m.render(r.latent))


def test_fill_borrows_from_the_same_depth_and_object():
    # a hole at the floor's depth (2) beside floor cells and a far wall (9): it must take the floor's colour
    C, h, w = 3, 8, 8
    lat = torch.zeros(C, h, w)
    depth = torch.full((h, w), float("inf"))
    lat[:, :4], depth[:4] = 1.0, 9.0      # wall, top half
    lat[:, 4:, :4], depth[4:, :4] = 0.2, 2.0  # floor, bottom left
    hole = torch.isinf(depth)
    target = torch.where(hole, torch.tensor(2.0), depth)
    out = depth_aware_fill(lat, hole, depth, target)
    assert (out[:, 4:, 4:] - 0.2).abs().max() < 0.05
    # the same hole, marked as another object whose only known cell is wall-coloured, fills from that object
    ids = torch.zeros(h, w, dtype=torch.long)
    ids[4:, 4:] = 1
    ids[0, 7] = 1
    out = depth_aware_fill(lat, hole, depth, target, ids)
    assert (out[:, 4:, 4:] - 1.0).abs().max() < 0.05


class FlatModel(FrameModel):
    """The smallest frame model: a cell is its pixels' mean colour; holes take the mean of what was read."""
    cell, channels = 4, 3

    def __init__(self, name="flat", folder=None, device="cpu", emit=None):
        self.name = name

    def encode(self, image):
        return torch.nn.functional.avg_pool2d(image[None], self.cell)[0]

    def complete(self, read, needs, generator=None):
        known = ~read.hole
        mean = read.latent.float()[:, known].mean(1) if known.any() else torch.full((3,), 0.5)
        return Completion(torch.where(read.hole[None], mean[:, None, None], read.latent.float()))

    def render(self, latent, read=None, needs=None, completion=None):
        return latent.float().repeat_interleave(self.cell, 1).repeat_interleave(self.cell, 2).clamp(0, 1)


def test_a_model_with_only_the_frame_interface_runs_a_job_end_to_end(tmp_path):
    from PIL import Image

    from backend.pipeline import Run
    from backend.protocol import load_job
    from tests.synth import make_job
    job, warnings = load_job(make_job(str(tmp_path), n=6, segment_length=3, box_xs=[0.1 * i for i in range(6)]))
    msgs = []
    report = Run(job, FlatModel(), str(tmp_path), lambda kind, **f: msgs.append(kind), notices=warnings).run()
    assert report["runs"] == "flat" and report["frames"] == 6 and report["latent"] == [3, 12, 16]
    assert msgs[0] == "hello" and msgs[-1] == "done" and msgs.count("segment_done") == 2
    frames = [np.asarray(Image.open(tmp_path / "frames" / f"{n:06d}.png")) for n in range(1, 7)]
    assert all(f.shape == (48, 64, 3) for f in frames)
    assert not np.array_equal(frames[1], frames[5])  # the camera moved: the frames show it


def test_the_registry_loads_a_model_class_from_its_folder(tmp_path, monkeypatch):
    import json

    import pytest

    from backend import catalog, models
    from backend.protocol import ModelError
    monkeypatch.setattr(catalog, "MODELS_DIR", str(tmp_path))

    def model_json(name, cfg):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text(json.dumps(cfg))
    model_json("fine", {"class": "patch:PatchModel", "args": {"cell": 2}, "title": "Fine patches"})
    model_json("default", {"alias": "fine", "title": "Default"})
    model_json("nowhere", {"class": "nosuchmodule:Model"})
    model_json("notamodel", {"class": "base:FrameNeeds"})
    model_json("outside", {"class": "os.path:join"})
    m = models.load("fine")
    assert isinstance(m, PatchModel) and (m.name, m.cell, m.channels) == ("fine", 2, 12)
    assert models.load("default").name == "fine"  # an alias runs the model it names
    assert catalog.describe("default").title == "Default" and catalog.describe("default").runs == "fine"
    for name, message in (("nowhere", "names a module that does not exist"), ("notamodel", "is not a model class"),
                          ("outside", "names a module that does not exist"), ("missing", "unknown model 'missing'")):
        with pytest.raises(ModelError, match=message):
            models.load(name)


def test_only_the_models_that_use_the_shading_map_ask_the_add_on_for_it():
    # the add-on exports the still world's light only where a model's needs say so (it costs export time)
    from backend import catalog
    assert catalog.describe("synth").needs["shading"] and catalog.describe("builtin").needs["shading"]
    assert not any(catalog.describe(m).needs["shading"] for m in ("compact", "patch", "wan-vace-1.3b"))
