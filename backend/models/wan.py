"""Wan2.1-VACE (diffusers) as a segment-level world model whose memory holds Wan VAE image latents.

What the memory holds, one kind only: every cell is a latent of the VAE's first-frame path (16 channels per 8 x 8
pixels of one frame encoded on its own): the reference, and every fourth generated frame of a segment (and its
last), each encoded alone and written at its own camera.

A segment is conditioned as WanVACEPipeline conditions a video from pixels:
  1. the memory is read at every frame's camera and drawn at pixel precision (each stored cell decoded in the
     frame it was written with, drawn as the small tilted plane it is): the segment's known pixels;
  2. those frames, gray where nothing is known, are encoded by the VAE as one video, as the pipeline encodes
     `video * (1 - mask)`: latent 0 through the first-frame path, latents 1.. through the temporal path, so each
     latent slot holds the kind the transformer was trained with; the mask is the pixel mask folded as the
     pipeline folds it (1 = generate);
  3. the transformer denoises the segment, the VAE decodes it, and the frames to remember are encoded alone.

Weights come from the Hugging Face Hub into the standard cache on first use (hub). Needs a CUDA GPU; a
model.json may set "allow_cpu" (the tests do, with small random weights). GPU memory, RAM and precision are
planned before any work from the modules' configs (wan_gpu).
"""
import gc
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..memory import SPLAT_TENSORS
from ..splats import CanvasCache, DecodedCanvas, canvas_fill, draw_canvases
from . import wan_gpu
from .base import ModelError, SegmentFrame, SegmentModel, SegmentResult
from .hub import fetch_weights, first_line, gb

TEMPORAL = 4       # frames per latent frame (after the first)
SPATIAL = 8        # pixels per latent cell along each side
MIN_FRAMES, MAX_FRAMES = 5, 81    # shortest joint segment (two latents), and the length Wan was trained on
CANVAS_MARGIN = 4                 # latent cells of context decoded around the cells a canvas still holds
CANVAS_CACHE_BYTES = 512 << 20    # decoded canvases kept between frames and segments
TRAINED_480P = [{"size": [832, 480], "flow_shift": 3.0}]


def valid_length(n: int) -> int:
    """The segment length to use for n: the nearest 4k + 1 (a tie goes to the shorter), within 5..81."""
    k = (max(int(n), 1) - 1 + TEMPORAL // 2 - 1) // TEMPORAL
    return min(max(TEMPORAL * k + 1, MIN_FRAMES), MAX_FRAMES)


def generated_length(n: int) -> int:
    """Frames generated for a segment of n: n rounded up to 4k + 1, at least 5 (a short last segment holds its
    last camera for the rest)."""
    return max(TEMPORAL * ((n - 1 + TEMPORAL - 1) // TEMPORAL) + 1, MIN_FRAMES)


def write_indices(n: int) -> list[int]:
    """The frames of an n-frame segment written back to the memory: 0, 4, 8, ... and the last."""
    return sorted(set(range(0, n, TEMPORAL)) | {n - 1})


def fold_mask(hole: torch.Tensor, latents: int) -> torch.Tensor:
    """The pixel mask [F, H, W] (True = generate) as VACE's 64 mask channels [64, T, H/8, W/8]: each 8 x 8 block
    unfolded into channels, frames picked by nearest-exact sampling (as WanVACEPipeline.prepare_masks)."""
    n, H, W = hole.shape
    m = hole.float().view(n, H // SPATIAL, SPATIAL, W // SPATIAL, SPATIAL).permute(2, 4, 0, 1, 3)
    m = m.reshape(SPATIAL * SPATIAL, n, H // SPATIAL, W // SPATIAL)
    return F.interpolate(m[None], size=(latents, H // SPATIAL, W // SPATIAL), mode="nearest-exact")[0]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images [N, 3, H, W] to size (H', W'), antialiased (unchanged when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def resize_hole(hole: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks [N, H, W] to size: a pixel is unknown when any unknown pixel reaches it, so the gray of a hole never
    passes as known content."""
    if tuple(hole.shape[-2:]) == tuple(size):
        return hole
    return F.interpolate(hole.float()[:, None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[:, 0] > 1e-3


def splats_to(sp, device):
    """memory.Splats (and their canvases) on `device`."""
    canvases = [cv._replace(latent=cv.latent.to(device), known=cv.known.to(device), members=cv.members.to(device),
                            source=tuple(s.to(device) for s in cv.source)) for cv in sp.canvases]
    pairs = None if sp.pairs is None else type(sp.pairs)(*(x.to(device) for x in sp.pairs))
    return sp._replace(**{f: getattr(sp, f).to(device) for f in SPLAT_TENSORS if getattr(sp, f) is not None},
                       canvases=canvases, pairs=pairs,
                       target=None if sp.target is None else sp.target.to(device))


@dataclass
class WanParts:
    """What the model is built from. `vae` and `scheduler` are loaded; `config` is the transformer's config and
    `text_config` the text encoder's (None: there is none, the prompt embeddings are given). `transformer`,
    `tokenizer` and `text_encoder` are the modules where they are already built; None: loaded from the snapshot
    folder `snapshot` when first needed, each straight onto the device it runs on."""
    vae: torch.nn.Module
    scheduler: object
    config: dict
    text_config: object = None
    snapshot: Optional[str] = None
    transformer: Optional[torch.nn.Module] = None
    tokenizer: object = None
    text_encoder: Optional[torch.nn.Module] = None

    @classmethod
    def of(cls, pipe) -> "WanParts":
        """The parts of a WanVACEPipeline already built (tools/bench_wan.py and the tests: random weights); its
        transformer is used as it is (its dtype decides the precision)."""
        text = pipe.text_encoder.config if pipe.text_encoder is not None else None
        return cls(pipe.vae, pipe.scheduler, dict(pipe.transformer.config), text, None, pipe.transformer,
                   pipe.tokenizer, pipe.text_encoder)


class WanVACEModel(SegmentModel):
    """Wan2.1-VACE through diffusers: a segment model. The segment loop calls plan() once, then per segment
    generate() with the memory read at every frame, and writes back the frames it names."""
    cell = SPATIAL
    channels = 16

    def __init__(self, name, repo=None, revision=..., title=None, download_gb=None, steps=30, guidance_scale=5.0,
                 conditioning_scale=1.0, max_sequence_length=512, trained=None, allow_cpu=False, folder=None,
                 device="cpu", emit=None):
        self.name, self.title = name, title or name
        self.emit = emit or (lambda *a, **k: None)
        self.notices = []
        self.steps, self.guidance, self.cond_scale = int(steps), float(guidance_scale), float(conditioning_scale)
        self.max_sequence_length = int(max_sequence_length)
        self.trained = trained or TRAINED_480P
        self.device = torch.device(device)
        if revision is ...:
            raise ModelError(f"model '{name}': model.json has no 'revision' (a commit hash of {repo}, or null for "
                             f"its main branch)")
        if not repo:
            raise ModelError(f"model '{name}': model.json has no 'repo'")
        if revision is None:
            self.notices.append(f"{self.title} is not pinned to a commit: using the newest '{repo}'; set 'revision' "
                                f"in models/{name}/model.json to a commit hash for results that never change")
        if self.device.type != "cuda" and not allow_cpu:
            why = "Device is set to CPU" if torch.cuda.is_available() else "this backend's torch sees no CUDA GPU"
            raise ModelError(f"{self.title} needs a CUDA GPU and {why}: set Device to Auto or CUDA on a machine with "
                             f"an NVIDIA GPU, or choose the Built-in model")
        if self.device.type == "cuda":
            wan_gpu.set_allocator()
        self._setup(self.load_pipeline(repo, revision, float(download_gb or 0) * wan_gpu.GB))

    def load_pipeline(self, repo: str, revision: Optional[str], approx_bytes: float) -> WanParts:
        """The pipeline's parts for repo@revision from the Hugging Face cache, downloaded first when missing: the
        VAE (float32), the scheduler and both configs; the transformer and the text encoder load later, when
        first needed. tools/bench_wan.py overrides it with modules built with random weights."""
        snapshot = fetch_weights(repo, revision, self.title, approx_bytes, self.emit, self.name)
        try:
            from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
            from transformers import UMT5Config
            vae = AutoencoderKLWan.from_pretrained(snapshot, subfolder="vae", dtype=torch.float32,
                                                   use_safetensors=True)
            # UniPC with flow sigmas, as diffusers' Wan examples run it; its flow_shift is set per resolution
            scheduler = UniPCMultistepScheduler.from_pretrained(snapshot, subfolder="scheduler")
            config = dict(WanVACETransformer3DModel.load_config(snapshot, subfolder="transformer"))
            text_config = UMT5Config.from_pretrained(snapshot, subfolder="text_encoder")
        except ImportError as e:
            raise ModelError(f"{self.title} needs diffusers and transformers in the backend Python: "
                             f"{first_line(e)}") from None
        except Exception as e:
            raise ModelError(f"{self.title}: the weights in {snapshot} are incomplete or incompatible: "
                             f"{first_line(e)}") from None
        return WanParts(vae, scheduler, config, text_config, snapshot)

    def _setup(self, parts: WanParts):
        cfg = parts.vae.config
        if cfg.z_dim != self.channels or 2 ** sum(cfg.temperal_downsample) != TEMPORAL \
                or 2 ** len(cfg.temperal_downsample) != SPATIAL or getattr(cfg, "patch_size", None):
            raise ModelError(f"{self.title}: not a Wan2.1 VAE (z_dim {cfg.z_dim}, temporal x"
                             f"{2 ** sum(cfg.temperal_downsample)}, patch {getattr(cfg, 'patch_size', None)}; expected "
                             f"16 channels, x4 in time, x8 in space, no patch)")
        config = parts.config
        got = (tuple(config.get("patch_size", ())), config.get("in_channels"), config.get("out_channels"),
               config.get("vace_in_channels"))
        if got != ((1, 2, 2), 16, 16, 96):
            raise ModelError(f"{self.title}: not a Wan2.1-VACE transformer (patch_size {got[0]}, in/out channels "
                             f"{got[1]}/{got[2]}, vace_in_channels {got[3]}; expected (1, 2, 2), 16/16 and 96)")
        self.vae = parts.vae.requires_grad_(False).eval()
        self.scheduler, self.config, self.text_config = parts.scheduler, config, parts.text_config
        self.snapshot = parts.snapshot
        self.mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.tokenizer, self.text_encoder = parts.tokenizer, parts.text_encoder
        self.text_released = False
        self.transformer = parts.transformer
        if self.transformer is None:
            self.dtype = wan_gpu.compute_dtype(self.device)[0]
        else:  # built already: used as it is, its blocks' dtype decides the precision
            self.transformer.requires_grad_(False).eval()
            self.dtype = next(p.dtype for n, p in self.transformer.named_parameters() if "blocks" in n)
        self.mode = "resident"
        self.job_size = self.gen_size = None
        self.flow_shift = float(self.trained[0]["flow_shift"])
        self.text_on = self.device
        self.embeds, self._gray, self._sizes = {}, {}, {}
        self._canvases = CanvasCache(nbytes=CANVAS_CACHE_BYTES)
        if self.device.type == "cuda":
            self.vae.enable_tiling()  # the estimate's VAE constants are those of the tiled VAE

    # -- sizes and memory, before any work ---------------------------------------------------------
    def transformer_bytes(self) -> int:
        """The transformer's weights as loaded (counted from its config while it is not loaded yet)."""
        if self.transformer is not None:
            return wan_gpu.module_bytes(self.transformer)
        if self.dtype not in self._sizes:
            from diffusers import WanVACETransformer3DModel
            cls = WanVACETransformer3DModel
            self._sizes[self.dtype] = wan_gpu.module_bytes(wan_gpu.meta_module(
                lambda: cls.from_config(self.config), self.dtype, cls._keep_in_fp32_modules))
        return self._sizes[self.dtype]

    def text_encoder_bytes(self) -> int:
        if self.text_config is None:
            return 0
        from transformers import UMT5EncoderModel
        return wan_gpu.module_bytes(wan_gpu.meta_module(lambda: UMT5EncoderModel(self.text_config), self.text_dtype()))

    def text_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def estimate(self, frames: int, job_size: tuple[int, int] | None = None,
                 gen_size: tuple[int, int] | None = None) -> wan_gpu.Estimate:
        """GPU memory of one `frames`-frame segment; sizes (width, height) default to the planned ones."""
        jw, jh = job_size or self.job_size
        gw, gh = gen_size or self.gen_size
        return wan_gpu.estimate(self.config, self.transformer_bytes(), wan_gpu.module_bytes(self.vae), frames, gw, gh,
                                jw, jh, torch.finfo(self.dtype).bits // 8)

    def plan(self, width: int, height: int, segment_length: int, frames: int) -> tuple[int, list[str]]:
        """Called by the segment loop before it starts: the segment length to use (4k + 1, 5..81), the size to
        generate at (a trained resolution) and, on CUDA, precision and the GPU memory and RAM checks. Returns
        (segment length, notices); refuses with one line when the job cannot run here."""
        notes = list(self.notices)
        length = valid_length(segment_length)
        if length != segment_length:
            notes.append(f"{self.title} generates 4k+1 frames per segment, {MIN_FRAMES} to {MAX_FRAMES} (the video "
                         f"VAE packs 4 frames per latent; Wan is trained on {MAX_FRAMES}): segment length "
                         f"{segment_length} is used as {length}")
        self.job_size = (-(-width // SPATIAL) * SPATIAL, -(-height // SPATIAL) * SPATIAL)
        gw, gh, self.flow_shift = wan_gpu.trained_size(width, height, self.trained)
        self.gen_size = (gw, gh)
        if self.gen_size != (width, height):
            trained = ", ".join(f"{t['size'][0]}x{t['size'][1]}" for t in self.trained)
            notes.append(f"{self.title} generates at {gw}x{gh} (its trained resolutions: {trained}, any aspect) and "
                         f"the frames are resized to {width}x{height}")
        if self.device.type == "cuda":
            if self.transformer is None:
                self.dtype, note = wan_gpu.compute_dtype(self.device)
                if note:
                    notes.append(note)
            free, total = torch.cuda.mem_get_info(self.device)
            # modules already on the GPU (a pipeline built there) hold memory the estimate counts again
            here = [m for m in (self.transformer, self.vae) if m is not None and next(m.parameters()).is_cuda]
            free += sum(wan_gpu.module_bytes(m) for m in here)
            notes += self.check_memory(length, free, total, wan_gpu.available_ram())
        return length, notes

    def check_memory(self, frames: int, free: int, total: int, ram: int | None) -> list[str]:
        """Choose where the modules live for `frames`-frame segments with `free` of `total` GPU bytes and `ram`
        bytes of free RAM (None: unknown), and where the prompt is encoded. Returns notices; raises ModelError."""
        est = self.estimate(frames)
        gw, gh = self.gen_size
        what = f"{frames}-frame segments generated at {gw}x{gh}"
        mode = est.fit(free, ram)
        if mode is None and est.need("offloaded") <= free:
            raise ModelError(f"{self.title} fits {what} on this GPU only with its transformer moved to the CPU while "
                             f"the VAE works, which needs {gb(est.transformer)} of free RAM; {gb(ram)} are free: "
                             f"lower Segment Length or free RAM")
        if mode is None:
            raise ModelError(f"{self.title} needs about {gb(est.need('offloaded'))} of GPU memory for {what}; the "
                             f"GPU has {gb(free)} free of {gb(total)}: lower Segment Length{self._smaller()}")
        self.mode = mode
        notes = []
        if mode != "resident":
            moved = "the VAE" if mode == "vae_offloaded" else "the VAE and the transformer"
            notes.append(f"GPU memory is short for {what} ({gb(est.need())} with everything on the GPU, {gb(free)} "
                         f"free): {moved} move to the CPU while the other works (slower)")
        # the text encoder runs once, before the transformer is loaded: on the GPU where it fits alone
        text = self.text_encoder_bytes()
        self.text_on = self.device
        on_gpu = self.dtype == torch.bfloat16 and text * 1.1 + 0.5 * wan_gpu.GB <= free  # UMT5 overflows in float16
        if self.text_encoder is None and text and self.dtype != torch.float32 and not on_gpu:
            self.text_on = torch.device("cpu")
            if ram is not None and ram < text * 1.1:
                raise ModelError(f"{self.title} encodes the prompt on the CPU on this GPU and its text encoder "
                                 f"(UMT5-XXL) needs about {gb(text * 1.1)} of free RAM; {gb(ram)} are free: close "
                                 f"other programs or use a machine with more RAM")
            notes.append(f"the prompt is encoded on the CPU ({gb(text)} text encoder), once per job")
        return notes

    def _smaller(self) -> str:
        return ", or choose Wan2.1 VACE 1.3B" if "14b" in self.name.lower() else ""

    # -- where the modules are ------------------------------------------------------------------
    def _load_transformer(self):
        """The transformer's weights, straight onto the device they run on (never a whole copy in RAM first)."""
        from diffusers import WanVACETransformer3DModel
        try:
            tf = WanVACETransformer3DModel.from_pretrained(self.snapshot, subfolder="transformer", dtype=self.dtype,
                                                           use_safetensors=True, device_map={"": str(self.device)})
        except torch.cuda.OutOfMemoryError:
            raise ModelError(f"the GPU ran out of memory loading {self.title}'s transformer "
                             f"({gb(self.transformer_bytes())}): close other programs using the GPU"
                             f"{self._smaller()}") from None
        except Exception as e:
            raise ModelError(f"{self.title}: the transformer in {self.snapshot} is incomplete or incompatible: "
                             f"{first_line(e)}") from None
        self.transformer = tf.requires_grad_(False).eval()

    def _phase(self, phase: str):
        """Modules onto the GPU for `phase` ("vae" or "transformer"), the other off it as the plan's mode says."""
        if phase == "transformer":
            if self.mode != "resident" and self.device.type == "cuda":
                self.vae.to("cpu")
                torch.cuda.empty_cache()
            if self.transformer is None:
                self._load_transformer()
            self.transformer.to(self.device)
        else:
            if self.mode == "offloaded" and self.transformer is not None and self.device.type == "cuda":
                self.transformer.to("cpu")
                torch.cuda.empty_cache()
            self.vae.to(self.device)

    # -- pixels <-> latents ----------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Video [3, F, H, W] in -1..1 -> normalised latents [16, T, H/8, W/8] (the mode, as VACE conditions)."""
        self._phase("vae")
        with torch.no_grad():
            z = self.vae.encode(x.to(self.device, torch.float32)[None]).latent_dist.mode()[0].float()
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [16, T, h, w] -> frames [F, 3, 8h, 8w] in 0..1 on the CPU."""
        self._phase("vae")
        z = z.to(self.device, torch.float32)
        z = z * self.std.to(z.device) + self.mean.to(z.device)
        with torch.no_grad():
            video = self.vae.decode(z[None], return_dict=False)[0][0]
        return ((video.float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3).cpu()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """One picture [3, H, W] in 0..1 -> its image latent [16, H/8, W/8] (the first-frame path)."""
        return self._encode(image[:, None] * 2 - 1)[:, 0].to(image.device)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """An image latent [16, h, w] -> its picture [3, 8h, 8w] in 0..1 (CPU)."""
        return self._decode(latent[:, None])[0]

    def gray(self, frames: int, H: int, W: int) -> torch.Tensor:
        """Latents [16, T, H/8, W/8] of an all-gray (zero) video: VACE's reactive part, `video * mask`, whose
        video is gray wherever the mask asks for new content. Encoded once per segment shape."""
        if (frames, H, W) not in self._gray:
            self._gray[(frames, H, W)] = self._encode(torch.zeros(3, frames, H, W))
        return self._gray[(frames, H, W)]

    # -- the memory, drawn at every frame ----------------------------------------------------------
    def canvas_patches(self, cv) -> DecodedCanvas:
        """A stored frame's canvas (its cells' pixels, float16, CPU), decoded around the cells it still holds
        (their missing neighbours take the nearest stored code) and kept while its content stays the same."""
        def decode():
            known = cv.known.cpu()
            rows, cols = torch.nonzero(known.any(1)).squeeze(1), torch.nonzero(known.any(0)).squeeze(1)
            r0, r1 = max(int(rows[0]) - CANVAS_MARGIN, 0), min(int(rows[-1]) + 1 + CANVAS_MARGIN, known.shape[0])
            c0, c1 = max(int(cols[0]) - CANVAS_MARGIN, 0), min(int(cols[-1]) + 1 + CANVAS_MARGIN, known.shape[1])
            lat, k = cv.latent[:, r0:r1, c0:c1].float().cpu(), known[r0:r1, c0:c1]
            image = self.decode(lat if bool(k.all()) else canvas_fill(lat, k))
            pixels = torch.zeros(3 * SPATIAL * SPATIAL, *known.shape, dtype=torch.float16)
            pixels[:, r0:r1, c0:c1] = F.pixel_unshuffle(image[None], SPATIAL)[0].half()
            return pixels
        return self._canvases.get(cv, decode)

    def draw(self, frame: SegmentFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """What the memory shows at one frame, at pixel precision: (image [3, H, W] in 0..1, gray where unknown;
        known [H, W]). `frame.read` is the frame's memory read (`latent` [16, h, w], `hole` [h, w]) with its
        splats (None from memories that keep none: then the read's cells are decoded on their grid);
        `frame.maps.ids` [H, W] keeps each pixel to its own bank (None without moving objects)."""
        read = frame.read
        h, w = read.hole.shape
        H, W = h * SPATIAL, w * SPATIAL
        if read.splats is None:
            known = ~read.hole.cpu().repeat_interleave(SPATIAL, 0).repeat_interleave(SPATIAL, 1)
            image = self.decode(read.latent.float())
        else:
            ids = None if frame.maps.ids is None else frame.maps.ids.cpu()
            image, known, _ = draw_canvases(splats_to(read.splats, "cpu"), self.canvas_patches, H, W, ids, SPATIAL)
        return torch.where(known[None], image, torch.full_like(image, 0.5)), known

    def segment_video(self, frames: Sequence[SegmentFrame]) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory drawn at every frame of a segment, at the generation size and padded to 4k + 1 frames by
        holding the last: (video [3, F, H, W] in 0..1, gray where unknown; hole [F, H, W], True = generate)."""
        h, w = frames[0].read.hole.shape
        gw, gh = self.gen_size or (w * SPATIAL, h * SPATIAL)
        images, holes = [], []
        for frame in frames:
            image, known = self.draw(frame)
            hole = resize_hole(~known[None], (gh, gw))
            images.append(torch.where(hole[:, None], 0.5, resize(image[None], (gh, gw))))
            holes.append(hole)
        pad = generated_length(len(frames)) - len(frames)
        video = torch.cat(images + images[-1:] * pad).permute(1, 0, 2, 3)
        return video, torch.cat(holes + holes[-1:] * pad)

    # -- one segment -----------------------------------------------------------------------------
    def conditioning(self, video: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """VACE's control input from a segment's pixels, as WanVACEPipeline builds it: the VAE's latents of
        `video * (1 - mask)` (inactive) and of `video * mask` (reactive: gray where new content goes, so an
        all-gray video), then the mask folded into 64 channels. video [3, F, H, W] in 0..1, hole [F, H, W]
        (True = generate) -> [1, 96, T, H/8, W/8]."""
        n, H, W = hole.shape
        x = torch.where(hole[None], torch.zeros(()), video * 2 - 1)
        inactive = self._encode(x)
        reactive = self.gray(n, H, W).to(inactive.device)
        mask = fold_mask(hole, inactive.shape[1]).to(inactive.device)
        return torch.cat([inactive, reactive, mask], 0)[None]

    def prompt_embeds(self, prompt: str, negative_prompt: str):
        """(prompt, negative prompt) embeddings [1, 512, text_dim], computed once per job; the negative one is None
        when guidance cannot change the result (scale <= 1, or the same text: the two passes would be equal).
        The text encoder (UMT5-XXL, about 11 GB) is loaded for this, where the plan put it, and freed."""
        key = (prompt, negative_prompt)
        if key not in self.embeds:
            if self.text_released:
                raise ModelError(f"{self.title}: the text encoder was already released")
            guided = self.guidance > 1 and prompt != negative_prompt
            from diffusers import WanVACEPipeline
            tokenizer, text_encoder = self._text_encoder()
            pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=self.vae,
                                   scheduler=self.scheduler)
            with torch.no_grad():
                pos, neg = pipe.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance=guided,
                                              max_sequence_length=self.max_sequence_length, device=self.text_on)
            self.release_text_encoder()  # one job, one prompt: its weights are not needed again
            self.embeds[key] = (pos.to(self.device, self.dtype),
                                None if neg is None else neg.to(self.device, self.dtype))
        return self.embeds[key]

    def _text_encoder(self):
        if self.text_encoder is None:
            from transformers import AutoTokenizer, UMT5EncoderModel
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.snapshot, subfolder="tokenizer")
                self.text_encoder = UMT5EncoderModel.from_pretrained(
                    self.snapshot, subfolder="text_encoder", dtype=self.text_dtype(), device_map={"": str(self.text_on)})
            except Exception as e:
                raise ModelError(f"{self.title}: the text encoder in {self.snapshot} is incomplete or incompatible: "
                                 f"{first_line(e)}") from None
        return self.tokenizer, self.text_encoder.to(self.text_on)

    def release_text_encoder(self):
        self.text_encoder, self.text_released = None, True
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def denoise(self, cond: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None, generator=None,
                step=None) -> torch.Tensor:
        """Denoise one segment under VACE's control input [1, 96, T, h, w]. Returns normalised latents
        [16, T, h, w]. step(i, steps) is called before every denoising step (it may raise to cancel)."""
        self._phase("transformer")
        _, _, T, h, w = cond.shape
        cond = cond.to(self.device, self.dtype)
        scale = torch.full((len(self.config["vace_layers"]),), self.cond_scale, device=self.device, dtype=self.dtype)
        sched = self.segment_scheduler()
        x = torch.randn((1, 16, T, h, w), generator=generator, dtype=torch.float32).to(self.device)
        with torch.no_grad():
            for i, t in enumerate(sched.timesteps):
                if step is not None:
                    step(i, len(sched.timesteps))
                inp, tt = x.to(self.dtype), t.expand(1)
                noise = self.transformer(hidden_states=inp, timestep=tt, encoder_hidden_states=pos,
                                         control_hidden_states=cond, control_hidden_states_scale=scale,
                                         return_dict=False)[0]
                if neg is not None:
                    uncond = self.transformer(hidden_states=inp, timestep=tt, encoder_hidden_states=neg,
                                              control_hidden_states=cond, control_hidden_states_scale=scale,
                                              return_dict=False)[0]
                    noise = uncond + self.guidance * (noise - uncond)
                if not bool(torch.isfinite(noise).all()):
                    raise self._not_finite(i)
                x = sched.step(noise, t, x, return_dict=False)[0]
        return x[0].float()

    def segment_scheduler(self):
        """A fresh scheduler for one segment, shifted for the resolution it generates at."""
        sched = type(self.scheduler).from_config(self.scheduler.config, flow_shift=self.flow_shift)
        sched.set_timesteps(self.steps, device=self.device)
        return sched

    def _not_finite(self, i):
        if self.dtype == torch.float16:
            return ModelError(f"{self.title} overflowed in float16 at denoising step {i + 1} (this GPU has no "
                              f"bfloat16): it needs a GPU with compute capability 8.0 or newer (RTX 30xx, A100 or "
                              f"later)")
        return ModelError(f"{self.title} produced NaN or infinite values at denoising step {i + 1} in {self.dtype}: "
                          f"its weights in {self.snapshot} may be damaged; delete them there to download them again")

    def generate(self, frames: Sequence[SegmentFrame], prompt: str = "", negative_prompt: str = "",
                 generator: Optional[torch.Generator] = None,
                 step: Optional[Callable[[int, int], None]] = None) -> SegmentResult:
        """One segment, jointly, from the memory read at each of its frames (see draw). Returns the frames at the
        job's size (padded to whole cells) and the frames to write back (0, 4, 8, ... and the last), each as its
        own image latent, to be written at that frame's camera where the memory still has holes."""
        n = len(frames)
        h, w = frames[0].read.hole.shape
        try:
            pos, neg = self.prompt_embeds(prompt, negative_prompt)  # before the transformer claims the GPU
            video, hole = self.segment_video(frames)
            cond = self.conditioning(video, hole)
            images = self._decode(self.denoise(cond, pos, neg, generator, step))[:n]
            images = resize(images, (h * SPATIAL, w * SPATIAL))
            writes = [(j, self.encode(images[j])) for j in write_indices(n)]
        except torch.cuda.OutOfMemoryError:
            raise self._oom(generated_length(n)) from None
        return SegmentResult(images, writes)

    def _oom(self, frames):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        gw, gh = self.gen_size or (0, 0)
        need = gb(self.estimate(frames).need(self.mode)) if self.gen_size else "unknown"
        return ModelError(f"the GPU ran out of memory generating {frames}-frame segments at {gw}x{gh} with "
                          f"{self.title} (estimated {need}): lower Segment Length{self._smaller()}")
