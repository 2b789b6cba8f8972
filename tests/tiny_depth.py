"""A tiny random Depth Anything V2 (the real transformers classes, 40k parameters) saved into a throw-away
Hugging Face cache as backend.depth's repo at its pinned revision: the backend finds it through the same cache
lookup and from_pretrained as the real weights, with HF_HUB_OFFLINE=1 and nothing downloaded."""
import json
import os

from backend import depth


def build_tiny_depth_cache(cache: str) -> str:
    """Write the tiny model into `cache` (an HF_HUB_CACHE folder). Returns its snapshot folder."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
                                 fusion_hidden_size=8, head_hidden_size=4, patch_size=14,
                                 depth_estimation_type="relative")
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():  # random weights give near-zero disparity: lift it so every pixel is something
        model.head.conv3.bias.fill_(1.0)
    repo_dir = os.path.join(cache, "models--" + depth.REPO.replace("/", "--"))
    snapshot = os.path.join(repo_dir, "snapshots", depth.REVISION)
    model.save_pretrained(snapshot)
    with open(os.path.join(snapshot, "preprocessor_config.json"), "w") as f:
        json.dump({"size": {"height": 28, "width": 28}, "image_mean": list(depth.MEAN), "image_std": list(depth.STD)}, f)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(depth.REVISION)
    return snapshot
