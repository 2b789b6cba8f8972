"""Depth from the reference image itself (depth source MONOCULAR): Depth Anything V2 Small through transformers,
its weights fetched once into the Hugging Face cache (hub.py: pinned revision, HF_HUB_OFFLINE, disk check,
download progress), then scaled to scene units.

The model gives relative inverse depth (disparity, known up to scale and shift). Scene units come from the
scene's own geometry where the reference frame shows some (its exact depth is kept there, and fits the scale and
shift of the rest), else from the user's distance: what the reference shows at its centre is that far away.
"""
import json
import os
from typing import Callable, Optional

import numpy as np
import torch

from .models import hub

REPO = "depth-anything/Depth-Anything-V2-Small-hf"
REVISION = "5426e4f0f36572d16453bbda7a8389317b1bef99"
TITLE = "Depth Anything V2 Small (depth from the image)"
APPROX_BYTES = 99_000_000
# the model's input: the shorter side this many pixels, both sides multiples of its patch (14)
INPUT_SIDE = 518
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# disparity below this share of the image's largest is taken as nothing there (sky, far away)
SKY_SHARE = 0.01
# geometry must cover this share of the reference for the scene to set the scale
MIN_GEOMETRY_SHARE = 0.02
# the centre window (share of each side) whose median the user's distance sets
CENTRE = 0.2


class DepthModel:
    """The depth network from a snapshot folder (config.json, model.safetensors, preprocessor_config.json)."""

    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoModelForDepthEstimation
        self.device = device
        self.net = AutoModelForDepthEstimation.from_pretrained(folder).to(device).eval()
        self.patch = int(getattr(self.net.config, "patch_size", 14))
        self.side, self.mean, self.std = INPUT_SIDE, MEAN, STD
        pre = os.path.join(folder, "preprocessor_config.json")
        if os.path.isfile(pre):
            with open(pre, encoding="utf-8") as f:
                cfg = json.load(f)
            size = cfg.get("size") or {}
            self.side = int(min(size.get("height", self.side), size.get("width", self.side)))
            self.mean = tuple(cfg.get("image_mean", self.mean))
            self.std = tuple(cfg.get("image_std", self.std))

    def input_size(self, H: int, W: int) -> tuple:
        """(h, w): the shorter side `side`, aspect kept, both multiples of the patch."""
        scale = self.side / min(H, W)
        return (max(self.patch, round(H * scale / self.patch) * self.patch),
                max(self.patch, round(W * scale / self.patch) * self.patch))

    @torch.no_grad()
    def disparity(self, image: torch.Tensor) -> torch.Tensor:
        """image [3, H, W] in 0..1 -> [H, W] relative inverse depth (>= 0, larger is nearer)."""
        H, W = image.shape[-2:]
        h, w = self.input_size(H, W)
        x = torch.nn.functional.interpolate(image[None].float(), size=(h, w), mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1) - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        pred = self.net(pixel_values=x.to(self.device)).predicted_depth  # [1, h, w]
        pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)
        return pred[0, 0].cpu().clamp_min(0)


def load(device: str = "cpu", emit: Optional[Callable] = None) -> DepthModel:
    """The model, downloaded first when missing (one ModelError line naming it and its size when it cannot be)."""
    folder = hub.fetch_weights(REPO, REVISION, TITLE, APPROX_BYTES, emit=emit, model="depth")
    return DepthModel(folder, device)


def to_depth(disparity: torch.Tensor, scene_depth: Optional[torch.Tensor] = None,
             distance: float = 5.0) -> tuple:
    """Relative disparity [H, W] -> (planar depth [H, W] in scene units, inf where nothing is there; how it was
    scaled: 'scene' or 'distance'). `scene_depth` [H, W]: the scene's depth at the reference (inf where it has
    no geometry), kept exactly where finite."""
    d = disparity.double()
    sky = d <= SKY_SHARE * float(d.max()) if float(d.max()) > 0 else torch.ones_like(d, dtype=torch.bool)
    geo = None if scene_depth is None else torch.isfinite(scene_depth) & (scene_depth > 0) & ~sky
    if geo is not None and float(geo.double().mean()) >= MIN_GEOMETRY_SHARE:
        # 1/z = a*d + b on the geometry's pixels (least squares); a plain scale when that fit is degenerate
        inv = 1.0 / scene_depth.double()[geo]
        A = torch.stack([d[geo], torch.ones_like(d[geo])], 1)
        a, b = torch.linalg.lstsq(A, inv[:, None]).solution[:, 0].tolist()
        inv_all = a * d + b
        if a <= 0 or float((inv_all[~sky] <= 0).double().mean()) > 0.01:
            a, b = float(torch.median(inv / d[geo])), 0.0
            inv_all = a * d
        depth = torch.where(inv_all > 0, 1.0 / inv_all.clamp_min(1e-12), torch.full_like(d, float("inf")))
        depth = torch.where(geo, scene_depth.double(), depth)
        how = "scene"
    else:
        H, W = d.shape
        ch, cw = max(1, int(H * CENTRE)), max(1, int(W * CENTRE))
        centre = d[(H - ch) // 2:(H + ch) // 2, (W - cw) // 2:(W + cw) // 2]
        centre = centre[centre > SKY_SHARE * float(d.max())]
        ref = float(torch.median(centre)) if centre.numel() else float(torch.median(d[~sky])) if (~sky).any() else 1.0
        depth = float(distance) * ref / d.clamp_min(1e-12)
        how = "distance"
    depth = torch.where(sky, torch.full_like(depth, float("inf")), depth)
    return depth.float(), how


def save(depth: torch.Tensor, path: str) -> None:
    """The estimated depth beside the job's inputs, for the user to look at (float32 .npy, inf = nothing)."""
    np.save(path, depth.numpy().astype(np.float32))
