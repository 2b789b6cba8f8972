"""The learned model's code (backend/learned.py) on weights this test makes: loading, the interface's
promises, and clear errors. No trained weights are shipped (see models/compact/README.md)."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backend import models
from backend.learned import Decoder, Encoder, FillNet, LearnedModel
from backend.models import ModelError
from tests.synth import texture


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """A models folder holding 'tiny': the learned architecture with seeded random weights, saved the way
    tools/train.py saves (float16, one file, encoder./decoder./filler. prefixes)."""
    torch.manual_seed(0)
    cfg = {"channels": 6, "cell": 8, "widths": [8, 12, 16], "fill_width": 8, "weights": "weights.safetensors"}
    folder = tmp_path / "tiny"
    folder.mkdir()
    nets = {"encoder.": Encoder(6, (8, 12, 16)), "decoder.": Decoder(6, (8, 12, 16)), "filler.": FillNet(6, 8)}
    save_file({p + k: v.half().contiguous() for p, n in nets.items() for k, v in n.state_dict().items()},
              str(folder / "weights.safetensors"))
    (folder / "model.json").write_text(json.dumps({"kind": "learned", "args": cfg}))
    monkeypatch.setattr(models, "MODELS_DIR", str(tmp_path))
    return tmp_path


def image():
    return torch.from_numpy(texture(64, 48, seed=3).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def test_loads_through_the_registry(models_dir):
    model = models.load("tiny")
    assert isinstance(model, LearnedModel) and model.cell == 8 and model.channels == 6
    z = model.encode(image())
    assert z.shape == (6, 6, 8)
    y = model.decode(z.half())
    assert y.shape == (3, 48, 64) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_fill_fills_every_hole_and_keeps_known_cells(models_dir):
    model = models.load("tiny")
    z = model.encode(image())
    hole = torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) < 0.4
    hole[:, -2:] = True
    depth = torch.where(hole, torch.full((6, 8), float("inf")), torch.full((6, 8), 4.0))
    target = torch.full((6, 8), 4.0)
    target[:2] = float("inf")  # sky at the top of the target frame
    read = torch.where(hole[None], torch.zeros_like(z), z).half()
    for td in (target, None):
        out = model.fill(read, hole, depth, target_depth=td)
        assert out.shape == z.shape and torch.isfinite(out).all()
        assert torch.equal(out[:, ~hole], read.float()[:, ~hole])  # exactly what was read
        assert (out[:, hole] != 0).any()
    every = model.fill(torch.zeros(6, 6, 8), torch.ones(6, 8, dtype=torch.bool), torch.full((6, 8), float("inf")))
    assert torch.isfinite(every).all()


def test_deterministic(models_dir):
    a, b = models.load("tiny"), models.load("tiny")
    z = a.encode(image())
    assert torch.equal(z, b.encode(image()))
    hole = torch.zeros(6, 8, dtype=torch.bool)
    hole[2:5, 3:7] = True
    depth = torch.where(hole, torch.full(hole.shape, float("inf")), torch.full(hole.shape, 3.0))
    assert torch.equal(a.fill(z, hole, depth), b.fill(z, hole, depth))


def test_missing_and_corrupt_weights_are_clear_errors(models_dir):
    path = os.path.join(models_dir, "tiny", "weights.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x07garbage, not a safetensors header" * 10)
    with pytest.raises(ModelError, match=r"model 'tiny': weights file .*weights\.safetensors is corrupt or incompatible"):
        models.load("tiny")
    save_file({"encoder.x": torch.zeros(3)}, path)  # valid safetensors, wrong tensors
    with pytest.raises(ModelError, match="corrupt or incompatible"):
        models.load("tiny")
    os.remove(path)
    with pytest.raises(ModelError, match=r"model 'tiny': weights file missing: .*weights\.safetensors"):
        models.load("tiny")


def test_compact_without_trained_weights_says_so():
    with pytest.raises(ModelError, match=r"model 'compact': weights file missing"):
        models.load("compact")
