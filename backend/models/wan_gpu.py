"""GPU memory, RAM and precision for Wan2.1-VACE segments, from the modules' configs alone (no weights needed).

What is counted and what is computed:
  - weights: counted exactly, from the module built on the meta device with the dtypes from_pretrained gives it
    (the transformer keeps its norms, time embedder and rope in float32).
  - activations: closed forms of what is alive at the peak. The transformer's peak is inside one block: the FFN's
    hidden layer twice (the projection and its GELU) or the three float32 copies of a norm, beside the hidden
    states and VACE's hints for every VACE layer; attention runs in a fused kernel (no score matrix). The VAE
    runs tiled (diffusers' 256-pixel tiles), so its peak is per tile plus the frames it gathers; its constants
    were counted on the real Wan2.1 VAE. tools/bench_wan.py --count recounts all of them (every tensor the
    real-config modules allocate, on the meta device) and tests/backend/test_wan.py checks the closed forms
    against those counts.
  - margins, computed and not measured on a GPU: ALLOC_MARGIN of the activations for the caching allocator's
    rounding and fragmentation, WORKSPACE for cuBLAS/cuDNN workspaces. The CUDA context is not counted: the
    free memory the driver reports is what is left beside it.
"""
import math
import os
from dataclasses import dataclass

import torch

from .hub import GB

ALLOC_MARGIN = 0.10
WORKSPACE = int(0.25 * GB)
TEXT_LEN = 512        # prompt tokens the transformer cross-attends to (max_sequence_length)
SPATIAL, TEMPORAL, PATCH = 8, 4, 2
# the tiled Wan2.1 VAE (fp32), counted: a fixed part per tile and a part per pixel of the frames it holds
VAE_VIDEO_ENCODE = (0.93 * GB, 0.7)    # bytes, bytes per pixel and frame (5 frames or more)
VAE_VIDEO_DECODE = (1.27 * GB, 16.5)
VAE_IMAGE_ENCODE = (0.255 * GB, 2.5)   # one frame through the first-frame path
VAE_IMAGE_DECODE = (0.455 * GB, 18.0)
# placements, least moving first: everything stays on the GPU; the VAE leaves it while the transformer runs;
# the transformer also leaves it while the VAE runs (it then needs its size in free RAM)
MODES = ("resident", "vae_offloaded", "offloaded")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they are (works on the meta device)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def cast_like_pretrained(module: torch.nn.Module, dtype: torch.dtype, keep=()) -> torch.nn.Module:
    """Floating weights to `dtype`, those whose name has a part in `keep` to float32: what from_pretrained(dtype=)
    leaves (diffusers matches its float32 modules by parameter name parts)."""
    for name, p in list(module.named_parameters()) + list(module.named_buffers()):
        if p.is_floating_point():
            p.data = p.data.to(torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    return module


def meta_module(build, dtype: torch.dtype, keep=()) -> torch.nn.Module:
    """The module `build()` makes, on the meta device (no memory), cast as from_pretrained casts it."""
    with torch.device("meta"):
        module = build()
    return cast_like_pretrained(module, dtype, keep)


def latent_cells(frames: int, width: int, height: int) -> int:
    """Latent elements per channel of a segment: (4k + 1 frames -> k + 1 latents) x (H/8) x (W/8)."""
    return ((frames - 1) // TEMPORAL + 1) * (height // SPATIAL) * (width // SPATIAL)


def transformer_forward_bytes(config: dict, frames: int, width: int, height: int, elem: int = 2) -> int:
    """Peak activations inside one transformer forward (bf16 or fp16: `elem` bytes) over a segment."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    hints, ffn = len(config["vace_layers"]), config["ffn_dim"]
    tokens = latent_cells(frames, width, height) // (PATCH * PATCH)
    per_token = max(2 * elem * ffn + elem * dim * (hints + 5), 12 * dim + elem * dim * (hints + 6))
    per_token += 8 * config["attention_head_dim"]  # rope: cos and sin in float32
    return tokens * per_token + 9 * TEXT_LEN * dim * elem  # the text embedder's projections and their copies


def denoise_input_bytes(config: dict, frames: int, width: int, height: int, elem: int = 2) -> int:
    """What the denoising loop keeps beside the forward: the noisy latents (float32 and a copy), VACE's
    96-channel control input, the prediction and guidance terms, the scheduler's history and both prompts."""
    return latent_cells(frames, width, height) * (96 * elem + 16 * 4 * 8) + 2 * TEXT_LEN * config["text_dim"] * elem


def vae_activation_bytes(frames: int, width: int, height: int, job_width: int, job_height: int) -> int:
    """Peak of the VAE's work on one segment: encoding the conditioning video and decoding the generated one at
    the generation size (with the float32 video they read or write), and the single frames the memory holds
    at the job's size (canvases decoded for reading, generated frames encoded for writing)."""
    px, job = frames * width * height, job_width * job_height
    video = 12 * px  # [3, F, H, W] float32 on the GPU
    return int(max(VAE_VIDEO_ENCODE[0] + VAE_VIDEO_ENCODE[1] * px + video,
                   VAE_VIDEO_DECODE[0] + VAE_VIDEO_DECODE[1] * px,
                   VAE_IMAGE_ENCODE[0] + VAE_IMAGE_ENCODE[1] * job + 12 * job,
                   VAE_IMAGE_DECODE[0] + VAE_IMAGE_DECODE[1] * job))


@dataclass(frozen=True)
class Estimate:
    """Bytes a segment needs on the GPU: the two modules' weights and the peak activations of each phase."""
    transformer: int
    vae: int
    denoise: int
    decode: int

    def need(self, mode: str = "resident") -> int:
        a, v = int(self.denoise * (1 + ALLOC_MARGIN)), int(self.decode * (1 + ALLOC_MARGIN))
        if mode == "resident":
            return self.transformer + self.vae + max(a, v) + WORKSPACE
        if mode == "vae_offloaded":
            return max(self.transformer + a, self.transformer + self.vae + v) + WORKSPACE
        if mode == "offloaded":
            return max(self.transformer + a, self.vae + v) + WORKSPACE
        raise ValueError(f"unknown placement {mode!r}")

    def fit(self, free: int, ram: int | None) -> str | None:
        """The first placement that fits `free` GPU bytes (and, to offload the transformer, `ram` free bytes of
        RAM; None: unknown, assumed enough), else None."""
        for mode in MODES:
            if self.need(mode) <= free and (mode != "offloaded" or ram is None or ram >= self.transformer):
                return mode
        return None


def estimate(transformer_config: dict, transformer_bytes: int, vae_bytes: int, frames: int, width: int, height: int,
             job_width: int, job_height: int, elem: int = 2) -> Estimate:
    """The Estimate of one `frames`-frame segment generated at width x height for a job_width x job_height job."""
    return Estimate(transformer_bytes, vae_bytes,
                    transformer_forward_bytes(transformer_config, frames, width, height, elem)
                    + denoise_input_bytes(transformer_config, frames, width, height, elem),
                    vae_activation_bytes(frames, width, height, job_width, job_height))


def available_ram() -> int | None:
    """Free RAM in bytes (what the OS can hand out without swapping), or None where it cannot be read."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for row in f:
                if row.startswith("MemAvailable:"):
                    return int(row.split()[1]) * 1024
    except OSError:
        pass
    return None


def compute_dtype(device: torch.device, capability: tuple[int, int] | None = None) -> tuple[torch.dtype, str | None]:
    """The transformer's dtype on `device` and a notice, or None. bfloat16 needs compute capability 8.0 (Ampere);
    below it attention has no fused bfloat16 kernel and falls back to the math one, whose score matrices do not
    fit, so those GPUs run float16 (fused kernels exist there), checked for overflow at every step."""
    if device.type != "cuda":
        return torch.float32, None
    major, minor = capability if capability is not None else torch.cuda.get_device_capability(device)
    if (major, minor) >= (8, 0):
        return torch.bfloat16, None
    return torch.float16, (f"this GPU (compute capability {major}.{minor}) has no bfloat16 kernels: Wan runs in "
                           f"float16, and a step that overflows stops the job with a message")


def trained_size(width: int, height: int, tiers: list[dict]) -> tuple[int, int, float]:
    """(width, height, flow_shift) to generate a width x height job at: the job's aspect ratio at the pixel area of
    the largest trained resolution not above the job's area (the smallest one for smaller jobs), both sides
    multiples of 16 (VAE cell x transformer patch), as the Wan pipelines size their videos."""
    tiers = sorted(tiers, key=lambda t: t["size"][0] * t["size"][1])
    area = width * height
    tier = tiers[0]
    for t in tiers:
        if t["size"][0] * t["size"][1] <= area:
            tier = t
    target = tier["size"][0] * tier["size"][1]
    mod = SPATIAL * PATCH
    w = max(mod, int(round(math.sqrt(target * width / height))) // mod * mod)
    h = max(mod, int(round(math.sqrt(target * height / width))) // mod * mod)
    return w, h, float(tier["flow_shift"])


def set_allocator() -> None:
    """Expandable segments keep the caching allocator from fragmenting between the phases' different shapes;
    read by torch when it first allocates on the GPU, so set before that (a user's own setting wins)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
