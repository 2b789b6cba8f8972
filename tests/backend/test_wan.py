"""The Wan2.1-VACE backend on the CPU with tiny random versions of the real diffusers/transformers classes.

The tiny pipeline is saved into a throw-away Hugging Face cache as snapshot <repo>@<revision>, so the model goes
through the same cache lookup and from_pretrained as the real one. HF_HUB_OFFLINE=1: nothing is downloaded.
"""
import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from backend import catalog, models, protocol  # noqa: E402
from backend.memory import LatentMemory, MemoryRead, SceneMemory  # noqa: E402
from backend.models import hub as wan_hub, wan  # noqa: E402
from backend.protocol import ModelError  # noqa: E402
from backend.pipeline import Cancelled, Run  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.synth import make_job  # noqa: E402

REPO = "Mirage-Test/Tiny-VACE"
REV = "0123456789abcdef0123456789abcdef01234567"


def build_tiny_pipeline(folder):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                               relative_attention_num_buckets=8))
    words = ["<pad>", "</s>", "<unk>"] + "a stone room with wooden floor blurry low quality".split()
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                    transformer=transformer).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A Hugging Face cache holding the tiny pipeline, and a models folder whose 'wan-tiny' points at it."""
    base = tmp_path_factory.mktemp("wan")
    cache = base / "hub"
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    build_tiny_pipeline(str(repo_dir / "snapshots" / REV))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REV)
    mdir = base / "models"
    (mdir / "wan-tiny").mkdir(parents=True)
    (mdir / "wan-tiny" / "model.json").write_text(json.dumps({"class": "wan:WanVACEModel", "args": {
        "repo": REPO, "revision": REV, "title": "Tiny-VACE", "download_gb": 0.001, "vram_gb": 1, "steps": 2,
        "guidance_scale": 3.0, "max_sequence_length": 16, "allow_cpu": True}}))
    return cache, mdir


@pytest.fixture
def hub(tiny_cache, monkeypatch):
    # tiny tensors: one thread is faster than a pool (and steadier on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield from _hub(tiny_cache, monkeypatch)
    torch.set_num_threads(threads)


def _hub(tiny_cache, monkeypatch):
    cache, mdir = tiny_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(catalog, "MODELS_DIR", str(mdir))
    yield cache, mdir


def load_job(path):
    job, warnings = protocol.load_job(path)
    return job, warnings


def run_job(folder, emit=None, cancelled=lambda: False, **kw):
    path = make_job(str(folder), model="wan-tiny", **kw)
    job, warnings = load_job(path)
    msgs = []

    def record(kind, **fields):
        protocol.encode(kind, **fields)  # every message must be valid on the wire
        msgs.append({"type": kind, **fields})
    run = Run.load(job, str(folder), emit or record, cancelled, warnings)
    return run, msgs


# -- end to end through the segment loop ------------------------------------------------------

def test_segments_generate_from_latent_reads_and_write_latents_back(hub, tmp_path):
    run, msgs = run_job(tmp_path, n=9, segment_length=5, W=64, H=48, prompt="a stone room", negative_prompt="blurry")
    model = run.model
    calls, encodes = [], []
    generate, encode = model.generate, model._encode_video

    def spy_generate(reads, **kw):
        out = generate(reads, **kw)
        calls.append(([r.latent.clone() for r in reads], [r.hole.clone() for r in reads], out.clone(), kw))
        return out

    def spy_encode(video):
        encodes.append((tuple(video.shape), bool((video == 0.5).all())))
        return encode(video)
    model.generate, model._encode_video = spy_generate, spy_encode
    report = run.run()

    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "hello" and kinds[-1] == "done"
    assert [m["frames"] for m in msgs if m["type"] == "segment_done"] == [[1, 5], [6, 9]]
    frame_progress = [m for m in msgs if m["type"] == "progress" and "step" not in m]
    step_progress = [m for m in msgs if m["type"] == "progress" and "step" in m]
    assert [m["frame"] for m in frame_progress] == list(range(1, 10))
    assert [(m["segment"], m["step"], m["steps"]) for m in step_progress] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert sorted(os.listdir(tmp_path / "frames")) == [f"{i:06d}.png" for i in range(1, 10)]
    from PIL import Image
    assert Image.open(tmp_path / "frames" / "000009.png").size == (64, 48)
    assert report["latent"] == [16, 6, 8]

    # one latent frame per 4 frames, read at frames 1, 5 and (second segment, 4 frames padded to 5) 6, 9
    assert len(calls) == 2
    (lat0, holes0, out0, kw0), (lat1, holes1, out1, kw1) = calls
    assert len(lat0) == 2 and len(lat1) == 2 and lat0[0].shape == (16, 6, 8)
    assert kw0["prompt"] == "a stone room" and kw0["negative_prompt"] == "blurry"
    # the first read is at the reference camera: fully known, and exactly the reference's latent (fp16 memory)
    assert not holes0[0].any()
    ref = run.seed_memory  # noqa: F841  (the memory was seeded from model.encode of the reference)
    assert holes0[1].any() and not holes0[1].all()  # the camera moved: part of frame 5 is new
    # VAE encodes in the whole run: the reference, then only constant gray videos (one per segment shape);
    # nothing generated is ever decoded and encoded again
    assert encodes[0] == ((3, 1, 48, 64), False)
    assert encodes[1:] == [((3, 5, 48, 64), True)]  # both segments have 2 latent frames: one gray video

    # write-back: the saved memory, read at frame 5's camera, holds the generated latents where frame 5 had holes
    mem = SceneMemory.load(str(tmp_path / "state" / "memory.safetensors"))
    K, c2w = run.inputs.camera(5)
    r = mem.read(K, c2w, 6, 8)
    back, hole_after = r.latent, r.hole
    h = holes0[1] & ~run.view(5).edges  # cells on an outline are never stored
    assert h.any() and not (hole_after & h).any()
    # later writes (segment 2) may cover a few of these cells; most must be exactly what segment 1 generated
    same = torch.isclose(back.float(), out0[1].half().float(), atol=1e-3).all(0)
    assert same[h].float().mean() > 0.8
    assert not torch.allclose(out0[1][:, h], torch.zeros_like(out0[1][:, h]))
    # and the second segment's conditioning came from the memory: its known cells are what the memory held
    known = ~holes1[0]
    assert known.any()


def test_conditioning_matches_the_diffusers_pipeline_in_latent_space(hub, tmp_path):
    """VACE's control input built from latent reads equals what WanVACEPipeline builds from pixels, where the
    two are defined the same: known first frames, generated last frames (gray video, mask 1). The pipeline folds
    the pixel mask in time by nearest-exact sampling (latent k takes frame 3k + 1 of 9), so latents 0 and 1 are
    known when frames 0..4 are."""
    model = models.load("wan-tiny", "cpu")
    pipe = model.pipe
    g = torch.Generator().manual_seed(1)
    H, W, F = 64, 96, 9
    image = torch.rand(3, H, W, generator=g)
    video = torch.zeros(1, 3, F, H, W)
    video[:, :, :5] = (image * 2 - 1)[:, None]
    mask = torch.ones(1, 3, F, H, W)
    mask[:, :, :5] = 0
    want = torch.cat([pipe.prepare_video_latents(video, mask, [[]], None, torch.device("cpu")),
                      pipe.prepare_masks(mask, [[]], None)], 1)[0]
    lat0 = model.encode(image)
    reads = torch.stack([lat0, torch.randn(16, H // 8, W // 8), torch.randn(16, H // 8, W // 8)])
    holes = torch.stack([torch.zeros(H // 8, W // 8, dtype=torch.bool), torch.zeros(H // 8, W // 8, dtype=torch.bool),
                         torch.ones(H // 8, W // 8, dtype=torch.bool)])
    got = model.conditioning(reads, holes)[0]
    assert got.shape == want.shape == (96, 3, H // 8, W // 8)
    assert torch.allclose(got[:16, 0], want[:16, 0], atol=1e-4)        # inactive: the known frame's latent
    assert torch.equal(got[32:], want[32:])                            # the mask, folded to 64 channels
    assert torch.allclose(got[16:32], want[16:32], atol=1e-4)          # reactive: the gray video's latents
    # known cells carry the read, holes never carry what the read held there
    assert torch.equal(got[:16, 1], reads[1])
    assert torch.allclose(got[:16, 2], got[16:32, 2]) and not torch.allclose(got[:16, 2], reads[2], atol=0.5)


def test_segment_length_follows_the_4k_plus_1_rule_with_a_notice(hub, tmp_path):
    run, msgs = run_job(tmp_path, n=9, segment_length=6)
    assert [len(s) for s in run.segments] == [5, 4]
    assert any("segment length 6 is used as 5" in w for w in run.warnings)
    assert run.model.read_frames([6, 7, 8, 9]) == [6, 9]


def test_same_seed_same_frames_and_resume_after_cancel(hub, tmp_path):
    import numpy as np
    from PIL import Image

    def frames(d):
        return {f: np.asarray(Image.open(d / "frames" / f)) for f in sorted(os.listdir(d / "frames"))}
    a, b = tmp_path / "a", tmp_path / "b"
    run, _ = run_job(a, n=9, segment_length=5, seed=3)
    run.run()
    # b: cancelled at the first denoising step of segment 2, then run again (resume)
    state = {"steps": 0}

    def cancelled():
        return state["steps"] >= 3  # 2 steps of segment 1 (+ its start check), then stop
    run_b, msgs = run_job(b, n=9, segment_length=5, seed=3, cancelled=cancelled)
    emit = run_b.emit

    def count(kind, **f):
        if kind == "progress" and "step" in f:
            state["steps"] += 1
        emit(kind, **f)
    run_b.emit = count
    with pytest.raises(Cancelled):
        run_b.run()
    assert [m["segment"] for m in msgs if m["type"] == "segment_done"] == [0]
    assert sorted(os.listdir(b / "frames")) == [f"{i:06d}.png" for i in range(1, 6)]
    run_b2, msgs2 = run_job(b, n=9, segment_length=5, seed=3)
    run_b2.run()
    assert [m.get("resumed", False) for m in msgs2 if m["type"] == "segment_done"] == [True, False]
    fa, fb = frames(a), frames(b)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_cancel_stops_between_denoising_steps(hub, tmp_path):
    seen = []
    run, msgs = run_job(tmp_path, n=5, segment_length=5, cancelled=lambda: len(seen) >= 1)
    emit = run.emit

    def spy(kind, **f):
        if kind == "progress" and "step" in f:
            seen.append(f["step"])
        emit(kind, **f)
    run.emit = spy
    with pytest.raises(Cancelled):
        run.run()
    assert seen == [0]  # stopped before step 1 of 2
    assert not os.listdir(tmp_path / "frames")
    assert not [m for m in msgs if m["type"] == "segment_done"]


# -- refusals, each one line -----------------------------------------------------------------

def real_args(name):
    with open(os.path.join(ROOT, "models", name, "model.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["wan-vace-1.3b", "wan-vace-14b"])
def test_shipped_model_cards_are_complete(name):
    cfg = real_args(name)
    assert cfg["class"] == "wan:WanVACEModel"
    assert "revision" in cfg["args"] and cfg["args"]["repo"].startswith("Wan-AI/Wan2.1-VACE-")
    rev = cfg["args"]["revision"]
    assert rev is None or (len(rev) == 40 and int(rev, 16) >= 0)
    card = open(os.path.join(ROOT, "models", name, "README.md"), encoding="utf-8").read()
    assert "Apache-2.0" in card and "GB" in card


def test_missing_weights_offline_is_one_clear_line(hub, tmp_path, monkeypatch):
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    mdir = tmp_path / "models"
    (mdir / "wan-vace-1.3b").mkdir(parents=True)
    cfg = real_args("wan-vace-1.3b")
    cfg["args"]["allow_cpu"] = True  # get past the GPU check to the weights check
    (mdir / "wan-vace-1.3b" / "model.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(catalog, "MODELS_DIR", str(mdir))
    with pytest.raises(ModelError) as e:
        models.load("wan-vace-1.3b", "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"Wan2.1-VACE-1.3B needs about {cfg['args']['download_gb']:.1f} GB downloaded to {empty}")
    assert "HF_HUB_OFFLINE" in msg
    assert not empty.exists()  # nothing was written, let alone downloaded


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["wan-vace-1.3b", "wan-vace-14b"])
def test_no_cuda_is_one_clear_line_before_any_download(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even online: nothing may be fetched for a machine that cannot run it
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError) as e:
        models.load(name, "cpu")
    msg = str(e.value)
    title = real_args(name)["args"]["title"]
    assert msg.startswith(f"{title} needs a CUDA GPU") and "sees no CUDA GPU" in msg and "\n" not in msg
    assert not (tmp_path / "cache").exists()


def test_disk_check_names_the_exact_size(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 90, 10 * 10**9))
    wan_hub.check_disk(9 * 10**9, str(tmp_path / "not-yet"), "Wan2.1-VACE-1.3B")  # fits: no error
    with pytest.raises(ModelError) as e:
        wan_hub.check_disk(19_123_456_789, str(tmp_path / "not-yet"), "Wan2.1-VACE-1.3B")
    assert "19123456789 bytes" in str(e.value) and "10.0 GB are free" in str(e.value)


def test_gpu_memory_refusal_and_oom_message(hub, monkeypatch):
    model = models.load("wan-tiny", "cpu")
    need = model.vram_needed(832, 480, 33)
    assert need > model.vram_needed(832, 480, 17) > 1.5e9
    model.device = torch.device("cuda")  # pretend: only the check runs, nothing moves
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need - 1, 80 * 10**9))
    with pytest.raises(ModelError) as e:
        model.plan(832, 480, 33, 100)
    assert f"needs about {wan.gb(need)} of GPU memory for 33-frame segments at 832x480" in str(e.value)
    assert "lower Segment Length or the resolution" in str(e.value)
    model.device = torch.device("cpu")

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(model.transformer, "forward", oom)
    reads = [MemoryRead(torch.zeros(16, 4, 6), torch.ones(4, 6, dtype=torch.bool), torch.full((4, 6), float("inf")))] * 2
    with pytest.raises(ModelError) as e:
        model.generate(reads)
    assert "ran out of memory generating 5-frame segments at 48x32" in str(e.value)


def test_memory_stores_wan_latents_compactly(hub):
    model = models.load("wan-tiny", "cpu")
    assert (model.channels, model.cell) == (16, 8)
    mem = LatentMemory(model.channels, model.cell)
    assert mem.lat.dtype == torch.float16
