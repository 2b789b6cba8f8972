#!/usr/bin/env python3
"""GPU benchmark of the Wan2.1-VACE backend with the real-size architecture and random weights.

  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --size 1.3b            # on a CUDA machine
  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --size 14b --steps 30
  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --tiny                 # CPU smoke run of this script
  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --count                # no GPU: memory counted on the CPU

Builds WanVACETransformer3DModel and AutoencoderKLWan from the published configs (values below) with random
weights, so nothing is downloaded, and runs a synthetic job (tests/synth.py) through backend.pipeline.Run: the
same reads at every frame, VACE conditioning encoded from pixels, joint denoising, decoding and write-back as a
real run. The UMT5-XXL text encoder is not built: it runs once per job, so the prompt embeddings are random
[1, 512, 4096] (a prompt and a different negative one: guidance on). Random weights make the frames noise; the
timings and memory are those of the real model.

Measures: seconds per frame after the first segment, peak GPU memory (allocated and reserved) beside the
backend's own estimate for the placement it chose, latent-memory bytes after each segment against keeping the
same frames as decoded RGB (uint8). Writes out/bench_wan/<size>.json.

--count needs no GPU: it counts, on the meta device, every tensor the real-config transformer and VAE allocate
(weights exactly, activations alive at the peak) and prints them beside the backend's closed-form estimates.
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Published diffusers configs: Wan-AI/Wan2.1-VACE-{1.3B,14B}-diffusers transformer/config.json. The VAE is
# AutoencoderKLWan's default config (the Wan2.1 VAE: base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4]).
COMMON = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
              freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
              vace_in_channels=96)
CONFIGS = {
    "1.3b": dict(COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30, vace_layers=list(range(0, 30, 2))),
    "14b": dict(COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40, vace_layers=list(range(0, 40, 5))),
    "tiny": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
                 text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96),
}


# The UMT5-XXL text encoder of both models (text_encoder/config.json of the diffusers repositories)
TEXT_ENCODER = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)


def build(size, device, dtype):
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from backend.models.wan_gpu import cast_like_pretrained
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanVACETransformer3DModel(**CONFIGS[size])
        cast_like_pretrained(transformer, dtype, WanVACETransformer3DModel._keep_in_fp32_modules)
        vae = AutoencoderKLWan() if size != "tiny" else AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer)


def prebuilt(pipe, name: str, device: str, **args):
    """The product's Wan model (backend/models/wan.py) around a WanVACEPipeline built here: only its
    load_pipeline is replaced, by the pipeline's own modules (random weights, nothing downloaded). `args` are
    model.json's (title, steps, trained, ...). The tests build their models this way too."""
    from backend.models.wan import WanParts, WanVACEModel

    class Prebuilt(WanVACEModel):
        def load_pipeline(self, repo, revision, approx_bytes):
            return WanParts.of(pipe)
    return Prebuilt(name, repo="random-weights", revision="0" * 40, allow_cpu=True, device=device, **args)


# -- counting on the CPU: every tensor the real-config modules allocate, on the meta device (no memory, no compute)

def live_bytes_mode(existing=()):
    """A dispatch mode that records the peak bytes of tensor storages created inside it and still alive
    (`.peak`); the storages of `existing` tensors (weights, inputs) are not counted."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.refs, self.live, self.peak = {}, 0, 0
            self.skip = {t.untyped_storage()._cdata for t in existing}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for key in [k for k, (ref, _) in self.refs.items() if torch.UntypedStorage._expired(ref)]:
                ref, n = self.refs.pop(key)
                self.live -= n
                torch.UntypedStorage._free_weak_ref(ref)
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    st = t.untyped_storage()
                    if st._cdata not in self.refs and st._cdata not in self.skip:
                        self.refs[st._cdata] = (st._weak_ref(), st.nbytes())
                        self.live += st.nbytes()
            self.peak = max(self.peak, self.live)
            return out

    return LiveBytes()


def fused_attention_mode():
    """Attention as the GPU's fused kernels (flash / memory-efficient) run it: only the output is allocated,
    never the tokens x tokens score matrix (meta tensors would otherwise take the math path)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class FusedAttention(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                return torch.empty_like(args[0] if args else kwargs["query"])
            return func(*args, **kwargs)

    return FusedAttention()


def count_transformer(config, frames, width, height, dtype=None):
    """(weight bytes, peak activation bytes of one forward) of the transformer `config` on a segment, counted."""
    import torch
    from diffusers import WanVACETransformer3DModel
    from backend.models.wan_gpu import latent_cells, meta_module, module_bytes
    dtype = dtype or torch.bfloat16
    cls = WanVACETransformer3DModel
    tf = meta_module(lambda: cls(**config), dtype, cls._keep_in_fp32_modules)
    T, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    assert latent_cells(frames, width, height) == T * h * w
    meta = dict(device="meta", dtype=dtype)
    inputs = dict(hidden_states=torch.empty(1, 16, T, h, w, **meta), timestep=torch.empty(1, device="meta"),
                  encoder_hidden_states=torch.empty(1, 512, config["text_dim"], **meta),
                  control_hidden_states=torch.empty(1, 96, T, h, w, **meta),
                  control_hidden_states_scale=torch.empty(len(config["vace_layers"]), **meta))
    existing = list(tf.parameters()) + list(tf.buffers()) + list(inputs.values())
    with torch.no_grad(), fused_attention_mode(), live_bytes_mode(existing) as count:
        tf(**inputs, return_dict=False)
    return module_bytes(tf), count.peak


def count_vae(frames, width, height):
    """(weight bytes, peak encode bytes, peak decode bytes) of the Wan2.1 VAE, tiled as on the GPU, on a
    frames x height x width video (fp32), counted; the input video itself is not in the encode figure."""
    import torch
    from diffusers import AutoencoderKLWan
    from backend.models.wan_gpu import meta_module, module_bytes
    vae = meta_module(AutoencoderKLWan, torch.float32)
    vae.enable_tiling()
    x = torch.empty(1, 3, frames, height, width, device="meta")
    with torch.no_grad(), live_bytes_mode(list(vae.parameters()) + [x]) as enc:
        z = vae.encode(x).latent_dist.mode()
    with torch.no_grad(), live_bytes_mode(list(vae.parameters()) + [z]) as dec:
        vae.decode(z)
    return module_bytes(vae), enc.peak, dec.peak


def count_table():
    """Counted against estimated, for the cases docs/benchmarks.md lists."""
    import torch
    from diffusers import WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel
    from backend.models import wan_gpu
    rows = []
    for size, cases in (("1.3b", [(17, 832, 480), (33, 832, 480), (81, 832, 480)]),
                        ("14b", [(17, 832, 480), (33, 832, 480), (17, 1280, 720), (33, 1280, 720), (81, 1280, 720)])):
        for frames, w, h in cases:
            weights, act = count_transformer(CONFIGS[size], frames, w, h)
            est = wan_gpu.transformer_forward_bytes(CONFIGS[size], frames, w, h)
            rows.append({"what": f"{size} transformer forward", "frames": frames, "size": f"{w}x{h}",
                         "weights_gb": round(weights / 1e9, 3), "counted_gb": round(act / 1e9, 3),
                         "estimated_gb": round(est / 1e9, 3)})
    for frames, w, h in ((9, 832, 480), (17, 832, 480), (9, 1280, 720), (1, 1920, 1080)):
        weights, enc, dec = count_vae(frames, w, h)
        px = frames * w * h
        kind = (wan_gpu.VAE_IMAGE_ENCODE, wan_gpu.VAE_IMAGE_DECODE) if frames == 1 else \
            (wan_gpu.VAE_VIDEO_ENCODE, wan_gpu.VAE_VIDEO_DECODE)
        rows.append({"what": "VAE (tiled)", "frames": frames, "size": f"{w}x{h}", "weights_gb": round(weights / 1e9, 3),
                     "counted_gb": [round(enc / 1e9, 3), round(dec / 1e9, 3)],
                     "estimated_gb": [round((k[0] + k[1] * px) / 1e9, 3) for k in kind]})
    text = wan_gpu.meta_module(lambda: UMT5EncoderModel(UMT5Config(**TEXT_ENCODER)), torch.bfloat16)
    rows.append({"what": "UMT5-XXL text encoder", "weights_gb": round(wan_gpu.module_bytes(text) / 1e9, 3)})
    for size, (w, h) in (("1.3b", (832, 480)), ("14b", (832, 480)), ("14b", (1280, 720))):
        cls = WanVACETransformer3DModel
        tf = wan_gpu.module_bytes(wan_gpu.meta_module(lambda: cls(**CONFIGS[size]), torch.bfloat16,
                                                      cls._keep_in_fp32_modules))
        vae = wan_gpu.module_bytes(wan_gpu.meta_module(__import__("diffusers").AutoencoderKLWan, torch.float32))
        for frames in (17, 33, 81):
            est = wan_gpu.estimate(CONFIGS[size], tf, vae, frames, w, h, w, h)
            rows.append({"what": f"{size} GPU need", "frames": frames, "size": f"{w}x{h}",
                         **{mode: round(est.need(mode) / 1e9, 2) for mode in wan_gpu.MODES}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["1.3b", "14b"], default="1.3b")
    ap.add_argument("--tiny", action="store_true", help="tiny random model on the CPU: checks this script only")
    ap.add_argument("--count", action="store_true",
                    help="no GPU needed: count the real-config modules' weights and activations on the meta device "
                         "and print them beside the backend's estimates")
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--segment", type=int, default=33, help="frames per segment (4k+1)")
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench_wan"))
    args = ap.parse_args(argv)
    if args.count:
        for row in count_table():
            print(json.dumps(row))
        return 0

    import torch
    from backend import pipeline, protocol
    from tests.synth import make_job

    size = "tiny" if args.tiny else args.size
    if args.tiny:
        args.width, args.height, args.segment, args.segments, args.steps = 64, 48, 5, 2, 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not args.tiny:
        print("no CUDA GPU: this benchmark needs one (use --tiny to check the script on the CPU)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    t = time.perf_counter()
    pipe = build(size, device, dtype)
    build_s = time.perf_counter() - t
    trained = [{"size": [64, 48], "flow_shift": 3.0}] if args.tiny else json.load(open(os.path.join(
        ROOT, "models", f"wan-vace-{size}", "model.json")))["args"]["trained"]
    model = prebuilt(pipe, f"wan-vace-{size}", device, title=f"Wan2.1-VACE-{size} (random)", steps=args.steps,
                     trained=trained)
    text_dim = CONFIGS[size]["text_dim"]
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 512, text_dim, generator=g).to(device, model.dtype)
    prompts = ("a stone room", "blurry")  # different: guidance on, two transformer passes a step
    model.embeds[prompts] = (emb[:1], emb[1:])  # no text encoder: random prompt embeddings
    model.release_text_encoder()

    n = args.segment * args.segments
    with tempfile.TemporaryDirectory() as folder:
        job_path = make_job(folder, W=args.width, H=args.height, n=n, segment_length=args.segment,
                            model="wan-bench", xs=[0.02 * i for i in range(n)], yaws=[0.5 * i for i in range(n)],
                            prompt=prompts[0], negative_prompt=prompts[1])
        job, warnings = protocol.load_job(job_path)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run = pipeline.Run(job, model, folder, lambda *a, **k: None, device=device, notices=warnings)
        report = run.run()
    segs = report["per_segment"]
    later = segs[1:] or segs
    rgb_per_segment = args.segment * args.width * args.height * 3
    result = {
        "model": size, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "width": args.width, "height": args.height, "segment_frames": args.segment, "segments": len(segs),
        "steps": args.steps, "build_seconds": round(build_s, 2),
        "seconds_per_frame_after_first_segment": round(sum(s["seconds"] for s in later) / sum(
            s["frames"][1] - s["frames"][0] + 1 for s in later), 3),
        "first_segment_seconds": segs[0]["seconds"],
        "generated_at": list(model.gen_size), "placement": model.mode, "notices": run.warnings,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved() if device == "cuda" else None,
        "estimated_gpu_bytes": model.estimate(len(run.segments[0])).need(model.mode),
        "memory_bytes_per_segment": [s["memory_bytes"] for s in segs],
        "decoded_rgb_bytes_per_segment": rgb_per_segment,
        "decoded_rgb_bytes_total": rgb_per_segment * len(segs),
    }
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, f"{size}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
