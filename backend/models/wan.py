"""Wan2.1-VACE (diffusers) as a segment-level world model whose memory lives in the video VAE's latent space.

The memory stores normalised Wan VAE latents: 16 channels per 8 x 8 pixels, and along time one latent per
4 frames (latent 0 is the segment's first frame alone, latent k covers frames 4k-3..4k and is read and written
at the camera of frame 4k). A segment is generated jointly: the memory is read once per latent frame, VACE's
conditioning (inactive video, reactive video, mask) is built from those reads directly in latent space, the
transformer denoises the whole segment, the new latents go back into the memory, and only then are the frames
decoded. Nothing is ever decoded to pixels and encoded again between segments.

Weights come from the Hugging Face Hub into the standard cache on first use (HF_HUB_OFFLINE honoured). Needs a
CUDA GPU; a model.json may set "allow_cpu" (the tests do, with tiny random weights).
"""
import gc
import math

import torch
import torch.nn.functional as F

from .base import ModelError, SegmentModel
from .hub import GB, first_line, fetch_weights, gb

TEMPORAL = 4       # frames per latent frame (after the first)
SPATIAL = 8        # pixels per latent cell along each side
PATCH = 2          # the transformer's spatial patch: latent grids are padded to even sizes


def valid_length(n):
    """The segment length nearest to n that the VAE accepts (4k + 1 frames; a tie goes to the shorter one)."""
    return TEMPORAL * ((max(int(n), 1) - 1 + TEMPORAL // 2 - 1) // TEMPORAL) + 1


def latent_count(n):
    """Latent frames for n frames, once padded up to 4k + 1."""
    return (n - 1 + TEMPORAL - 1) // TEMPORAL + 1


def latent_frame_indices(n):
    """Index (into a segment of n frames) of the frame whose camera each latent frame uses: 0, 4, 8, ...;
    a short last segment is padded by holding its last camera."""
    return [min(TEMPORAL * k, n - 1) for k in range(latent_count(n))]


def estimate_vram(transformer_params, vae_params, width, height, frames, dim, ffn_dim, vace_layers,
                  transformer_bytes=2):
    """Rough peak GPU memory of one segment: transformer weights (bf16), VAE weights (fp32), one transformer
    block's activations over all tokens (attention through SDPA, no score matrix), VACE's per-layer hints,
    the tiled VAE decode and 1.5 GB for the CUDA context and workspaces. The text encoder is not counted: it
    runs once, on the GPU only when it fits beside the rest, else on the CPU."""
    tokens = latent_count(frames) * math.ceil(height / (SPATIAL * PATCH)) * math.ceil(width / (SPATIAL * PATCH))
    weights = transformer_params * transformer_bytes + vae_params * 4
    act = tokens * (12 * dim + 2 * ffn_dim) * 2 + tokens * dim * 2 * (len(vace_layers) + 2)
    vae_decode = 96 * 4 * 256 * 256 * 4 * 8  # widest decoder stage on one 256 x 256 tile, 4 frames, 8 live maps
    return int(weights + act + vae_decode + 1.5 * GB)


def _params(module):
    return sum(p.numel() for p in module.parameters())


class WanVACEModel(SegmentModel):
    """Wan2.1-VACE through diffusers: a segment model (the loop calls plan, read_frames, generate and decode)."""
    cell = SPATIAL
    channels = 16

    def __init__(self, name, repo=None, revision=..., title=None, download_gb=None, vram_gb=None, steps=30,
                 guidance_scale=5.0, conditioning_scale=1.0, max_sequence_length=512, allow_cpu=False,
                 folder=None, device="cpu", emit=None):
        self.name, self.title = name, title or name
        self.emit = emit or (lambda *a, **k: None)
        self.notices = []
        if revision is ...:
            raise ModelError(f"model '{name}': model.json has no 'revision' (a commit hash of {repo}, or null for "
                             f"its main branch)")
        if not repo:
            raise ModelError(f"model '{name}': model.json has no 'repo'")
        if revision is None:
            self.notices.append(f"{self.title} is not pinned to a commit: using the newest '{repo}'; set 'revision' "
                                f"in models/{name}/model.json to a commit hash for results that never change")
        self.steps, self.guidance, self.cond_scale = int(steps), float(guidance_scale), float(conditioning_scale)
        self.max_sequence_length = int(max_sequence_length)
        approx = float(download_gb or 0) * GB
        self.vram_hint = float(vram_gb or 0)
        self.device = torch.device(device)
        if self.device.type != "cuda" and not allow_cpu:
            why = "Device is set to CPU" if torch.cuda.is_available() else "this backend's torch sees no CUDA GPU"
            raise ModelError(f"{self.title} needs a CUDA GPU (about {self.vram_hint:g} GB of GPU memory) and {why}: "
                             f"set Device to Auto or CUDA on a machine with an NVIDIA GPU, or choose the Built-in model")
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._setup(self.load_pipeline(repo, revision, approx))

    def load_pipeline(self, repo, revision, approx_bytes):
        """The WanVACEPipeline of repo@revision from the Hugging Face cache, downloaded first when missing (the
        VAE in float32, the rest in the model's dtype). tools/bench_wan.py overrides it with random weights."""
        folder = fetch_weights(repo, revision, self.title, approx_bytes, self.emit, self.name)
        try:
            from diffusers import AutoencoderKLWan, WanVACEPipeline
            vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32,
                                                   use_safetensors=True)
            return WanVACEPipeline.from_pretrained(folder, vae=vae, dtype=self.dtype, use_safetensors=True)
        except ImportError as e:
            raise ModelError(f"{self.title} needs diffusers and transformers in the backend Python: {first_line(e)}") from None
        except Exception as e:
            raise ModelError(f"{self.title}: the weights in {folder} are incomplete or incompatible: {first_line(e)}") from None

    def _setup(self, pipe):
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.vae, self.transformer = self.pipe.vae, self.pipe.transformer
        self.vae.requires_grad_(False).eval()
        self.transformer.requires_grad_(False).eval()
        cfg = self.vae.config
        if cfg.z_dim != self.channels or 2 ** sum(cfg.temperal_downsample) != TEMPORAL \
                or 2 ** len(cfg.temperal_downsample) != SPATIAL:
            raise ModelError(f"{self.title}: unexpected VAE (z_dim {cfg.z_dim}, temporal x{2 ** sum(cfg.temperal_downsample)})")
        self.mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.on_device = False
        self.embeds = {}
        self._gray = {}

    # -- planning, before any work ------------------------------------------------------------
    def vram_needed(self, width, height, frames):
        t = self.transformer.config
        return estimate_vram(_params(self.transformer), _params(self.vae), width, height, frames,
                             t.num_attention_heads * t.attention_head_dim, t.ffn_dim, t.vace_layers,
                             torch.finfo(self.dtype).bits // 8)

    def plan(self, width, height, segment_length, frames):
        """Called by Run before it starts: the 4k + 1 segment rule and, on CUDA, the GPU memory check.
        Returns (segment length to use, notices)."""
        notes = list(self.notices)
        length = valid_length(segment_length)
        if length != segment_length:
            notes.append(f"{self.title} generates 4k+1 frames per segment (the video VAE packs 4 frames per latent): "
                         f"segment length {segment_length} is used as {length}")
        if self.device.type == "cuda":
            need = self.vram_needed(width, height, length)
            free, total = torch.cuda.mem_get_info(self.device)
            if need > free:
                raise ModelError(f"{self.title} needs about {gb(need)} of GPU memory for {length}-frame segments at "
                                 f"{width}x{height}; the GPU has {gb(free)} free of {gb(total)}: lower Segment Length "
                                 f"or the resolution{self._smaller()}")
        self.to_device()
        return length, notes

    def _smaller(self):
        return ", or choose Wan2.1 VACE 1.3B" if "14b" in self.name.lower() else ""

    def to_device(self):
        if not self.on_device:
            self.transformer.to(self.device)  # from_pretrained set the dtype and kept its fp32 modules in fp32
            self.vae.to(self.device)
            if self.device.type == "cuda":
                self.vae.enable_tiling()
            self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
            self.on_device = True

    # -- latents <-> pixels --------------------------------------------------------------------
    def _encode_video(self, video):
        """[3, T, H, W] in 0..1 -> normalised latents [16, T', H/8, W/8] (the mode, as VACE conditions)."""
        self.to_device()
        x = (video.to(self.device, torch.float32) * 2 - 1)[None].to(self.vae.dtype)
        with torch.no_grad():
            z = self.vae.encode(x).latent_dist.mode()[0].float()
        return (z - self.mean) / self.std

    def encode(self, image):
        """One picture [3, H, W] in 0..1 -> its single-frame latent [16, H/8, W/8] (a segment's first latent)."""
        return self._encode_video(image[:, None])[:, 0].to(image.device)

    def decode(self, latents, n):
        """Normalised latents [T, 16, h, w] of one segment -> its first n frames [n, 3, 8h, 8w] in 0..1 (CPU)."""
        z = latents.to(self.device, torch.float32).permute(1, 0, 2, 3)
        z = (z * self.std + self.mean)[None].to(self.vae.dtype)
        try:
            with torch.no_grad():
                video = self.vae.decode(z, return_dict=False)[0][0]
        except torch.cuda.OutOfMemoryError:
            raise self._oom(z.shape[-1] * SPATIAL, z.shape[-2] * SPATIAL, n) from None
        return ((video.float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3)[:n].cpu()

    def gray(self, T, h, w):
        """Normalised latents [16, T, h, w] of an all-gray (zero) video of the segment's size, which VACE sees where
        nothing is known. The VAE's own encoding of a constant video (never of anything in the memory), once per
        segment shape: it is not constant near the borders nor along time (the VAE is causal)."""
        if (T, h, w) not in self._gray:
            frames = TEMPORAL * (T - 1) + 1
            self._gray[(T, h, w)] = self._encode_video(torch.full((3, frames, h * SPATIAL, w * SPATIAL), 0.5))
        return self._gray[(T, h, w)]

    # -- one segment -----------------------------------------------------------------------------
    def read_frames(self, seg):
        """The frame (of the segment's list) whose camera each latent frame is read and written at."""
        return [seg[i] for i in latent_frame_indices(len(seg))]

    def prompt_embeds(self, prompt, negative_prompt):
        """Text embeddings, computed once per job. The text encoder (UMT5-XXL, about 11 GB) runs on the GPU only
        when it fits beside the transformer, else on the CPU, and is freed afterwards."""
        key = (prompt, negative_prompt)
        if key not in self.embeds:
            pipe, te = self.pipe, self.pipe.text_encoder
            run_on = torch.device("cpu")
            if self.device.type == "cuda" and te is not None:
                free, _ = torch.cuda.mem_get_info(self.device)
                if _params(te) * 2 * 1.2 < free:
                    run_on = self.device
            if te is None:
                raise ModelError(f"{self.title}: the text encoder was already released")
            te.to(run_on)
            with torch.no_grad():
                pos, neg = pipe.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance=self.guidance > 1,
                                              max_sequence_length=self.max_sequence_length, device=run_on)
            self.release_text_encoder()  # one job, one prompt: its ~11 GB of weights are not needed again
            self.embeds[key] = (pos.to(self.device, self.dtype), None if neg is None else neg.to(self.device, self.dtype))
        return self.embeds[key]

    def release_text_encoder(self):
        self.pipe.text_encoder = None
        gc.collect()

    def conditioning(self, latents, holes):
        """VACE's control input built in latent space from the memory reads.

        The diffusers pipeline encodes `video * (1 - mask)` (inactive) and `video * mask` (reactive) and appends
        the pixel mask folded to 8 x 8 = 64 channels. Here the reads are already latents: inactive is the read
        where it is known and the gray-video latent in holes, reactive is the gray-video latent everywhere (the
        holes hold no video), and the mask is the hole mask at latent resolution repeated into the 64 channels.
        latents [T, 16, h, w], holes [T, h, w] -> [1, 96, T, h, w]."""
        T, _, h, w = latents.shape
        g = self.gray(T, h, w).to(latents.device, latents.dtype)
        lat = latents.permute(1, 0, 2, 3)
        hole = holes[None].to(latents.device)
        inactive = torch.where(hole, g, lat)
        reactive = g
        mask = hole.to(latents.dtype).expand(SPATIAL * SPATIAL, -1, -1, -1)
        return torch.cat([inactive, reactive, mask], 0)[None]

    def generate(self, reads, prompt="", negative_prompt="", generator=None, step=None):
        """Denoise one segment jointly from T memory reads (one per latent frame: latent [16, h, w], hole [h, w],
        True = unknown). Returns the generated normalised latents [T, 16, h, w] on the memory's device.
        step(i, steps) is called before every denoising step (it may raise to cancel)."""
        out_device = reads[0].latent.device
        lat = torch.stack([r.latent.float() for r in reads]).to(self.device)
        hole = torch.stack([r.hole.bool() for r in reads]).to(self.device)
        T, C, h, w = lat.shape
        ph, pw = (-h) % PATCH, (-w) % PATCH
        if ph or pw:  # the transformer patches 2 x 2 cells: pad, mark the padding unknown, crop afterwards
            lat = F.pad(lat, (0, pw, 0, ph), mode="replicate")
            hole = F.pad(hole, (0, pw, 0, ph), value=True)
        self.to_device()
        try:
            pos, neg = self.prompt_embeds(prompt, negative_prompt)
            cond = self.conditioning(lat, hole).to(self.dtype)
            scale = torch.full((len(self.transformer.config.vace_layers),), self.cond_scale,
                               device=self.device, dtype=self.dtype)
            sched = self.pipe.scheduler
            sched.set_timesteps(self.steps, device=self.device)
            x = torch.randn((1, C, T, h + ph, w + pw), generator=generator, dtype=torch.float32).to(self.device)
            timesteps = sched.timesteps
            with torch.no_grad():
                for i, t in enumerate(timesteps):
                    if step is not None:
                        step(i, len(timesteps))
                    inp, tt = x.to(self.dtype), t.expand(1)
                    noise = self.transformer(hidden_states=inp, timestep=tt, encoder_hidden_states=pos,
                                             control_hidden_states=cond, control_hidden_states_scale=scale,
                                             return_dict=False)[0]
                    if neg is not None:
                        uncond = self.transformer(hidden_states=inp, timestep=tt, encoder_hidden_states=neg,
                                                  control_hidden_states=cond, control_hidden_states_scale=scale,
                                                  return_dict=False)[0]
                        noise = uncond + self.guidance * (noise - uncond)
                    x = sched.step(noise, t, x, return_dict=False)[0]
        except torch.cuda.OutOfMemoryError:
            raise self._oom((w + pw) * SPATIAL, (h + ph) * SPATIAL, TEMPORAL * (T - 1) + 1) from None
        return x[0, :, :, :h, :w].permute(1, 0, 2, 3).float().to(out_device)

    def _oom(self, width, height, frames):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        need = self.vram_needed(width, height, frames)
        return ModelError(f"the GPU ran out of memory generating {frames}-frame segments at {width}x{height} with "
                          f"{self.title} (estimated {gb(need)}): lower Segment Length or the resolution{self._smaller()}")
