#!/usr/bin/env python3
"""GPU benchmark of the Wan2.1-VACE backend with the real-size architecture and random weights.

  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --size 1.3b            # on a CUDA machine
  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --size 14b --steps 30
  PYTHONPATH=. .venv/bin/python tools/bench_wan.py --tiny                 # CPU smoke run of this script

Builds WanVACETransformer3DModel and AutoencoderKLWan from the published configs (values below) with random
weights, so nothing is downloaded, and runs a synthetic job (tests/synth.py) through backend.pipeline.Run: the
same memory reads, latent-space conditioning, joint denoising, write-back and decoding as a real run. The
UMT5-XXL text encoder is not built: it runs once per job, so the prompt embeddings are random [1, 512, 4096].
Random weights make the frames noise; the timings and memory are those of the real model.

Measures: seconds per frame after the first segment, peak GPU memory, latent-memory bytes after each segment
against keeping the same frames as decoded RGB (uint8). Writes out/bench_wan/<size>.json.
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


def build(size, device, dtype):
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanVACETransformer3DModel(**CONFIGS[size]).to(dtype)
        keep = getattr(transformer, "_keep_in_fp32_modules", None) or []
        for name, module in transformer.named_modules():  # as from_pretrained(dtype=bf16) leaves them
            if any(k in name.split(".") for k in keep):
                module.float()
        vae = AutoencoderKLWan() if size != "tiny" else AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["1.3b", "14b"], default="1.3b")
    ap.add_argument("--tiny", action="store_true", help="tiny random model on the CPU: checks this script only")
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--segment", type=int, default=33, help="frames per segment (4k+1)")
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench_wan"))
    args = ap.parse_args(argv)

    import torch
    from backend import pipeline, protocol
    from backend.models.wan import WanVACEModel
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
    class RandomWeights(WanVACEModel):
        """The product's Wan model around the pipeline built above (random weights, nothing downloaded)."""

        def load_pipeline(self, repo, revision, approx_bytes):
            return pipe
    model = RandomWeights(f"wan-vace-{size}", repo="random-weights", revision="0" * 40,
                          title=f"Wan2.1-VACE-{size} (random)", steps=args.steps, allow_cpu=True, device=device)
    text_dim = CONFIGS[size]["text_dim"]
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 512, text_dim, generator=g).to(device, dtype)
    model.embeds[("", "")] = (emb, emb.clone())  # no text encoder: random prompt embeddings
    model.release_text_encoder()

    n = args.segment * args.segments
    with tempfile.TemporaryDirectory() as folder:
        job_path = make_job(folder, W=args.width, H=args.height, n=n, segment_length=args.segment,
                            model="wan-bench", xs=[0.02 * i for i in range(n)], yaws=[0.5 * i for i in range(n)])
        job, warnings = protocol.load_job(job_path)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        report = pipeline.Run(job, model, folder, lambda *a, **k: None, device=device, notices=warnings).run()
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
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "estimated_gpu_bytes": model.vram_needed(args.width, args.height, args.segment),
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
