"""The still world's light (backend/models/synth/light.py): the all-around light's weight read from a reference."""
import torch

from backend.channels import Maps
from backend.models.base import Exemplar
from backend.models.synth.light import AMBIENT_WEIGHTS, ambient_weight, light

H, W = 32, 48


def test_the_all_around_lights_weight_is_read_from_the_reference():
    # two objects of plain colours, half of each in a shadow: the colour over (direct + w x all-around) is flat on
    # each object only for the w the image was lit with
    g = torch.Generator().manual_seed(0)
    parts = torch.zeros(H, W, dtype=torch.long)
    parts[:, W // 2:] = 1
    direct = torch.where(torch.arange(H)[:, None] < H // 2, 2.0, 0.0).expand(H, W).clone()
    around = 0.3 + 0.5 * torch.rand(H, W, generator=g)
    albedo = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.3, 0.6]])[parts].permute(2, 0, 1)
    for w in (0.1, 0.5, 2.0):
        image = (albedo * (direct + w * around) / 3.0).clamp(0, 1)
        e = Exemplar(image, torch.eye(3), torch.eye(4),
                     Maps(depth=torch.full((H, W), 4.0), parts=parts, shade=torch.stack([direct, around])))
        got = ambient_weight([e])
        step = float(AMBIENT_WEIGHTS[1] / AMBIENT_WEIGHTS[0])
        assert w / step <= got <= w * step, (w, got)
        # and the colour divided by that light is each object's own, flat over light and shadow
        own = image / light(torch.stack([direct, around]), got)
        for p in (0, 1):
            assert float(own[:, parts == p].std(1).max()) < 0.02 * float(own[:, parts == p].mean())
    assert ambient_weight([Exemplar(image, torch.eye(3), torch.eye(4), Maps(depth=torch.full((H, W), 4.0)))]) is None
