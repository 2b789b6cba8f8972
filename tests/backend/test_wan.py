"""The Wan2.1-VACE backend on the CPU with random weights and the real diffusers/transformers classes.

Two model sizes: a tiny pipeline saved into a throw-away Hugging Face cache as snapshot <repo>@<revision> (so the
model goes through the same cache lookup and from_pretrained as the real one; HF_HUB_OFFLINE=1, nothing is
downloaded), and the real Wan2.1 VAE config (random weights, small frames) around a tiny transformer, for what
depends on the VAE's two encoding paths. The real transformers' memory is counted on the meta device.
"""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from backend import catalog, models, protocol  # noqa: E402
from backend.channels import Maps  # noqa: E402
from backend.memory import LatentMemory, SceneMemory  # noqa: E402
from backend.models import hub as wan_hub, wan, wan_gpu  # noqa: E402
from backend.models.base import SegmentFrame  # noqa: E402
from backend.pipeline import Cancelled, Run  # noqa: E402
from backend.protocol import ModelError  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.synth import intrinsics, look_camera, make_job  # noqa: E402
from tools import bench_wan  # noqa: E402

REPO = "Mirage-Test/Tiny-VACE"
REV = "0123456789abcdef0123456789abcdef01234567"
TINY = [{"size": [64, 48], "flow_shift": 3.0}]
SMALL = [{"size": [48, 32], "flow_shift": 3.0}]  # the real VAE on the CPU: small frames


def tiny_parts(real_vae=False):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel
    torch.manual_seed(0)
    vae = AutoencoderKLWan() if real_vae else AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanVACETransformer3DModel(**bench_wan.CONFIGS["tiny"])
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                               relative_attention_num_buckets=8))
    words = ["<pad>", "</s>", "<unk>"] + "a stone room with wooden floor blurry low quality".split()
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)


def tiny_pipeline(real_vae=False):
    from diffusers import WanVACEPipeline
    return WanVACEPipeline(**tiny_parts(real_vae))


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A Hugging Face cache holding the tiny pipeline, and a models folder whose 'wan-tiny' points at it."""
    base = tmp_path_factory.mktemp("wan")
    cache = base / "hub"
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    tiny_pipeline().save_pretrained(str(repo_dir / "snapshots" / REV))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REV)
    mdir = base / "models"
    write_model(mdir, "wan-tiny")
    return cache, mdir


def write_model(mdir, name, **args):
    (mdir / name).mkdir(parents=True, exist_ok=True)
    (mdir / name / "model.json").write_text(json.dumps({"class": "wan:WanVACEModel", "args": {
        "repo": REPO, "revision": REV, "title": "Tiny-VACE", "download_gb": 0.001, "steps": 2, "trained": TINY,
        "guidance_scale": 3.0, "max_sequence_length": 16, "allow_cpu": True, **args}}))


@pytest.fixture
def hub(tiny_cache, monkeypatch):
    # tiny tensors: one thread is faster than a pool (and steadier on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache, mdir = tiny_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(catalog, "MODELS_DIR", str(mdir))
    yield cache, mdir
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real_vae_pipe():
    """The real Wan2.1 VAE config with random weights, a tiny transformer and text encoder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_pipeline(real_vae=True)
    torch.set_num_threads(threads)


def real_vae_model(pipe, **kw):
    return bench_wan.prebuilt(pipe, "wan-realvae", "cpu", steps=2, max_sequence_length=16, trained=SMALL, **kw)


def run_job(folder, emit=None, cancelled=lambda: False, model=None, **kw):
    """A Run of a synthetic job, with `model` (a WanVACEModel) or the one the registry loads for 'wan-tiny'."""
    path = make_job(str(folder), model="wan-tiny", **kw)
    job, warnings = protocol.load_job(path)
    msgs = []

    def record(kind, **fields):
        protocol.encode(kind, **fields)  # every message must be valid on the wire
        msgs.append({"type": kind, **fields})
    if model is None:
        run = Run.load(job, str(folder), emit or record, cancelled, warnings)
    else:
        run = Run(job, model, str(folder), emit or record, cancelled, notices=warnings)
    return run, msgs


def spy(obj, name, calls):
    """Wrap obj.name so every call (arguments and result) is recorded; the real method still runs."""
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out
    setattr(obj, name, wrapper)


def plane_memory(model, image, z=6.0):
    """A memory holding `image` [3, H, W] as a wall at depth z facing the camera at the origin."""
    H, W = image.shape[-2:]
    K = torch.tensor(intrinsics(W, H))
    mem = SceneMemory(16, 8)
    mem.write(model.encode(image), torch.full((H // 8, W // 8), z), K, torch.tensor(look_camera(0.0)),
              maps=Maps(depth=torch.full((H, W), z)))
    return mem, K


def read_at(mem, K, x, H, W):
    return SegmentFrame(mem.read(K, torch.tensor(look_camera(x)), H // 8, W // 8))


# -- the memory holds one kind of latent, and VACE gets what the pipeline builds from pixels ---------

def test_conditioning_equals_the_pipeline_for_every_slot(real_vae_pipe):
    """Real Wan2.1 VAE: the memory is read at every frame, drawn, and the video encoded as WanVACEPipeline
    encodes it. Compared in full: inactive (slot 0 through the first-frame path, slots 1.. temporal), reactive
    and mask."""
    model = real_vae_model(real_vae_pipe)
    H, W, n = 32, 48, 9
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, H, W, generator=g)
    mem, K = plane_memory(model, image)
    f = float(K[0, 0])
    reads = [read_at(mem, K, i * 1.5 * 6.0 / f, H, W) for i in range(n)]  # 1.5 px a frame: new content on the right
    video, hole = model.segment_video(reads)
    assert video.shape == (3, n, H, W) and not hole[0].any() and hole[-1].any() and not hole[-1].all()
    got = model.conditioning(video, hole)[0]

    pipe = real_vae_pipe
    mask = hole.float()[None, None].expand(1, 3, -1, -1, -1)
    want = torch.cat([pipe.prepare_video_latents(video[None] * 2 - 1, mask, [[]], None, torch.device("cpu")),
                      pipe.prepare_masks(mask, [[]], None)], 1)[0]
    assert got.shape == want.shape == (96, 3, H // 8, W // 8)
    for k in range(3):
        assert torch.allclose(got[:16, k], want[:16, k], atol=1e-4, rtol=1e-4), f"inactive slot {k}"
        assert torch.allclose(got[16:32, k], want[16:32, k], atol=1e-4, rtol=1e-4), f"reactive slot {k}"
    assert torch.equal(got[32:], want[32:])
    # the two paths differ: the frames' own image latents would not have passed in slots 1..
    image_latents = torch.stack([model.encode(video[:, 4 * k]) for k in (1, 2)], 1)
    assert (image_latents - got[:16, 1:]).abs().mean() > 0.05 * got[:16, 1:].abs().mean()


def test_every_frame_is_drawn_at_its_own_camera_at_pixel_precision(real_vae_pipe):
    """A wall seen by a camera that slides one pixel a frame: frame i of the conditioning video is the memory
    shifted by exactly i pixels (no 4-frame holds, no 8-pixel steps); half a pixel lands between."""
    model = real_vae_model(real_vae_pipe)
    H, W, n = 32, 48, 5
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    mem, K = plane_memory(model, image)
    px = 6.0 / float(K[0, 0])  # camera motion that moves the wall by one pixel
    video, hole = model.segment_video([read_at(mem, K, i * px, H, W) for i in range(n)])
    base = video[:, 0]
    for i in range(1, n):
        assert torch.allclose(video[:, i, :, 8:W - 16], base[:, :, 8 + i:W - 16 + i], atol=2e-3), f"frame {i}"
        assert not torch.allclose(video[:, i], video[:, i - 1], atol=1e-2)
        assert hole[i, :, W - i:].all() and not hole[i, :, :W - 8].any()
    half, _ = model.segment_video([read_at(mem, K, 2.5 * px, H, W)])
    mid = half[:, 0, :, 8:W - 16]
    assert (mid - video[:, 2, :, 8:W - 16]).abs().mean() > 1e-3 and (mid - video[:, 3, :, 8:W - 16]).abs().mean() > 1e-3
    assert torch.allclose(mid, (video[:, 2, :, 8:W - 16] + video[:, 3, :, 8:W - 16]) / 2, atol=0.05)


def test_a_memory_without_splats_is_drawn_on_its_cell_grid(hub):
    """Memories that keep no splats (the bench's baselines): the read's cells are decoded where they are, and
    what the read does not hold is gray and unknown, in whole cells."""
    model = models.load("wan-tiny", "cpu")
    H, W = 48, 64
    mem, K = plane_memory(model, torch.rand(3, H, W, generator=torch.Generator().manual_seed(3)))
    read = mem.read(K, torch.tensor(look_camera(12 * 6.0 / float(K[0, 0]))), H // 8, W // 8, splats=False)
    assert read.splats is None and read.hole.any() and not read.hole.all()
    image, known = model.draw(SegmentFrame(read))
    assert torch.equal(known, ~read.hole.repeat_interleave(8, 0).repeat_interleave(8, 1))
    assert torch.equal(image[:, ~known], torch.full_like(image[:, ~known], 0.5))
    assert torch.allclose(image[:, known], model.decode(read.latent.float())[:, known])


def test_segments_read_every_frame_and_write_image_latents_back(real_vae_pipe, tmp_path):
    """Through the segment loop with the real VAE: every frame of a segment is read, the frames written back
    are their own image latents (first-frame path) at their own cameras, and the next segment's VACE input is
    the pipeline's encoding of what the memory then shows."""
    model = real_vae_model(real_vae_pipe)
    run, msgs = run_job(tmp_path, n=9, segment_length=5, W=48, H=32, model=model, prompt="a stone room",
                        negative_prompt="blurry")
    segs, conds = [], []
    spy(model, "generate", segs)
    spy(model, "conditioning", conds)
    report = run.run()

    assert [m["frames"] for m in msgs if m["type"] == "segment_done"] == [[1, 5], [6, 9]]
    assert report["latent"] == [16, 4, 6]
    (reads0, _, out0), (reads1, _, out1) = [(a[0], k, o) for a, k, o in segs]
    assert [len(reads0), len(reads1)] == [5, 4]
    assert [j for j, _ in out0.writes] == [0, 4] and [j for j, _ in out1.writes] == [0, 3]
    for out in (out0, out1):
        for j, latent in out.writes:
            assert torch.equal(latent, model.encode(out.frames[j]))  # one kind: each written frame encoded alone
    # the memory holds frame 5's written latent where frame 5 was unknown before
    mem = SceneMemory.load(str(tmp_path / "state" / "memory.safetensors"))
    K, c2w = run.inputs.camera(5)
    back = mem.read(K, c2w, 4, 6).latent
    new = reads0[4].read.hole & ~run.view(5).edges
    assert new.any()
    same = torch.isclose(back.float(), out0.writes[1][1].half().float(), atol=1e-3).all(0)
    assert same[new].float().mean() > 0.8
    # segment 2: 4 frames generated as 5 (the last camera held), conditioned as the pipeline would
    (video, hole), _, got = conds[1]
    assert video.shape[1] == 5 and torch.equal(video[:, 4], video[:, 3])
    mask = hole.float()[None, None].expand(1, 3, -1, -1, -1)
    want = real_vae_pipe.prepare_video_latents(video[None] * 2 - 1, mask, [[]], None, torch.device("cpu"))[0]
    assert torch.allclose(got[0, :32], want, atol=1e-4, rtol=1e-4)
    # the reference frame is the user's image, not the VAE's rendition of it
    from PIL import Image
    ref = np.asarray(Image.open(tmp_path / "inputs" / "reference.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "frames" / "000001.png")), ref)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "frames" / "000002.png")), ref)


# -- the loop with the tiny pipeline from the cache ------------------------------------------------

def test_segment_loop_messages_frames_and_vae_passes(hub, tmp_path):
    run, msgs = run_job(tmp_path, n=9, segment_length=5, W=64, H=48, prompt="a stone room", negative_prompt="blurry")
    encodes, loads = [], []
    spy(run.model, "_encode", encodes)
    spy(run.model, "_load_transformer", loads)
    run.run()
    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "hello" and kinds[-1] == "done"
    frame_progress = [m for m in msgs if m["type"] == "progress" and "step" not in m]
    step_progress = [m for m in msgs if m["type"] == "progress" and "step" in m]
    assert [m["frame"] for m in frame_progress] == list(range(1, 10))
    assert [(m["segment"], m["step"], m["steps"]) for m in step_progress] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert sorted(os.listdir(tmp_path / "frames")) == [f"{i:06d}.png" for i in range(1, 10)]
    # VAE encodes: the reference, then per segment the conditioning video (5 frames; the gray one once) and
    # the written frames, one at a time
    shapes = [tuple(a[0].shape) for a, _, _ in encodes]
    assert shapes[0] == (3, 1, 48, 64)
    assert shapes[1:] == [(3, 5, 48, 64), (3, 5, 48, 64), (3, 1, 48, 64), (3, 1, 48, 64),
                          (3, 5, 48, 64), (3, 1, 48, 64), (3, 1, 48, 64)]
    assert len(loads) == 1 and run.model.text_encoder is None  # the transformer loads after the prompt is encoded


def test_same_seed_same_frames_and_resume_after_cancel(hub, tmp_path):
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

    def record(kind, **f):
        if kind == "progress" and "step" in f:
            seen.append(f["step"])
        emit(kind, **f)
    run.emit = record
    with pytest.raises(Cancelled):
        run.run()
    assert seen == [0]  # stopped before step 1 of 2
    assert not os.listdir(tmp_path / "frames")
    assert not [m for m in msgs if m["type"] == "segment_done"]


# -- segment lengths, sizes, guidance ----------------------------------------------------------------

@pytest.mark.parametrize("asked, used", [(1, 5), (3, 5), (4, 5), (6, 5), (7, 5), (8, 9), (16, 17), (17, 17), (80, 81),
                                         (81, 81), (82, 81), (200, 81)])
def test_segment_length_is_4k_plus_1_within_5_and_81(asked, used):
    assert wan.valid_length(asked) == used


def test_short_segments_are_generated_jointly_with_a_notice(hub, tmp_path):
    run, msgs = run_job(tmp_path, n=6, segment_length=2)
    assert [len(s) for s in run.segments] == [5, 1]
    assert any("segment length 2 is used as 5" in w for w in run.warnings)
    videos = []
    spy(run.model, "segment_video", videos)
    run.run()
    assert [v[0].shape[1] for _, _, v in videos] == [5, 5]  # the last frame alone still goes through 5 frames
    assert sorted(os.listdir(tmp_path / "frames")) == [f"{i:06d}.png" for i in range(1, 7)]


P480, P720 = {"size": [832, 480], "flow_shift": 3.0}, {"size": [1280, 720], "flow_shift": 5.0}


@pytest.mark.parametrize("size, tiers, want", [
    ((832, 480), [P480], (832, 480, 3.0)), ((1920, 1080), [P480], (832, 464, 3.0)),
    ((480, 832), [P480], (480, 832, 3.0)), ((640, 640), [P480], (624, 624, 3.0)),
    ((1920, 1080), [P480, P720], (1280, 720, 5.0)), ((1024, 576), [P480, P720], (832, 464, 3.0)),
])
def test_generation_size_is_a_trained_resolution(size, tiers, want):
    assert wan_gpu.trained_size(*size, tiers) == want


def test_other_resolutions_are_generated_at_the_trained_one_and_resized(hub, tmp_path):
    run, _ = run_job(tmp_path, n=5, segment_length=5, W=96, H=72)
    assert any("generates at 64x48" in w and "resized to 96x72" in w for w in run.warnings)
    conds = []
    spy(run.model, "conditioning", conds)
    run.run()
    (video, hole), _, cond = conds[0]
    assert video.shape == (3, 5, 48, 64) and cond.shape == (1, 96, 2, 6, 8)
    from PIL import Image
    assert Image.open(tmp_path / "frames" / "000003.png").size == (96, 72)


def test_flow_shift_follows_the_resolution(hub, tmp_path):
    write_model(hub[1], "wan-tiers", trained=[{"size": [64, 48], "flow_shift": 3.0},
                                              {"size": [128, 96], "flow_shift": 5.0}])
    model = models.load("wan-tiers", "cpu")
    model.plan(64, 48, 5, 5)
    assert (model.gen_size, model.flow_shift) == ((64, 48), 3.0)
    model.plan(128, 96, 5, 5)
    assert (model.gen_size, model.flow_shift) == ((128, 96), 5.0)
    made = []
    spy(model, "segment_scheduler", made)
    model.denoise(torch.zeros(1, 96, 2, 12, 16), torch.zeros(1, 16, 32), None)
    assert [out.config.flow_shift for _, _, out in made] == [5.0]  # the shipped scheduler config says 3.0


@pytest.mark.parametrize("prompt, negative, scale, passes", [
    ("a stone room", "blurry", 3.0, 2), ("", "", 3.0, 1), ("a room", "a room", 3.0, 1), ("a room", "blurry", 1.0, 1)])
def test_guidance_runs_only_when_it_can_change_the_result(hub, prompt, negative, scale, passes):
    write_model(hub[1], "wan-guided", guidance_scale=scale)
    model = models.load("wan-guided", "cpu")
    model.plan(64, 48, 5, 5)
    pos, neg = model.prompt_embeds(prompt, negative)
    assert (neg is not None) == (passes == 2)
    model._phase("transformer")
    calls = []
    spy(model.transformer, "forward", calls)
    model.denoise(torch.zeros(1, 96, 2, 6, 8), pos, neg)
    assert len(calls) == 2 * passes  # two denoising steps


# -- GPU memory, precision and RAM -------------------------------------------------------------------

def test_transformer_weights_counted_from_the_config_equal_from_pretrained(hub):
    from diffusers import WanVACETransformer3DModel
    folder = models.load("wan-tiny", "cpu").snapshot
    for dtype in (torch.bfloat16, torch.float16):
        loaded = WanVACETransformer3DModel.from_pretrained(folder, subfolder="transformer", dtype=dtype)
        counted = wan_gpu.meta_module(lambda: WanVACETransformer3DModel(**bench_wan.CONFIGS["tiny"]), dtype,
                                      WanVACETransformer3DModel._keep_in_fp32_modules)
        assert wan_gpu.module_bytes(counted) == wan_gpu.module_bytes(loaded)
        assert {n: p.dtype for n, p in counted.named_parameters()} == {n: p.dtype for n, p in loaded.named_parameters()}


@pytest.mark.parametrize("size, frames, width, height", [("1.3b", 17, 832, 480), ("1.3b", 81, 832, 480),
                                                         ("14b", 33, 832, 480), ("14b", 33, 1280, 720)])
def test_transformer_estimate_matches_the_real_configs_counted(size, frames, width, height):
    """Every tensor the real-config transformer allocates in one forward, counted on the meta device (attention
    as the fused GPU kernels allocate it): the closed form is within 3 % above it."""
    weights, counted = bench_wan.count_transformer(bench_wan.CONFIGS[size], frames, width, height)
    est = wan_gpu.transformer_forward_bytes(bench_wan.CONFIGS[size], frames, width, height)
    assert counted <= est <= 1.03 * counted
    assert weights == {"1.3b": 4_315_615_872, "14b": 34_735_257_728}[size]


def test_vae_estimate_matches_the_real_vae_counted():
    """The tiled Wan2.1 VAE's peak bytes, counted on the meta device, against the closed forms (within 3 %)."""
    weights, enc, dec = bench_wan.count_vae(9, 448, 256)
    px = 9 * 448 * 256
    assert abs(wan_gpu.VAE_VIDEO_ENCODE[0] + wan_gpu.VAE_VIDEO_ENCODE[1] * px - enc) <= 0.03 * enc
    assert abs(wan_gpu.VAE_VIDEO_DECODE[0] + wan_gpu.VAE_VIDEO_DECODE[1] * px - dec) <= 0.03 * dec
    _, enc, dec = bench_wan.count_vae(1, 512, 288)
    assert abs(wan_gpu.VAE_IMAGE_ENCODE[0] + wan_gpu.VAE_IMAGE_ENCODE[1] * 512 * 288 - enc) <= 0.03 * enc
    assert abs(wan_gpu.VAE_IMAGE_DECODE[0] + wan_gpu.VAE_IMAGE_DECODE[1] * 512 * 288 - dec) <= 0.03 * dec
    assert weights == 507_570_124


def real_args(name):
    with open(os.path.join(ROOT, "models", name, "model.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name, size", [("wan-vace-1.3b", "1.3b"), ("wan-vace-14b", "14b")])
def test_panel_figures_are_what_the_backend_accepts(name, size):
    """model.json's gpu_gb is the least GPU memory the backend accepts for 17-frame segments (the add-on's
    default) at the model's largest trained resolution, and the tooltip and model card say it."""
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    cfg = real_args(name)
    w, h = max((t["size"] for t in cfg["args"]["trained"]), key=lambda s: s[0] * s[1])
    cls = WanVACETransformer3DModel
    tf = wan_gpu.module_bytes(wan_gpu.meta_module(lambda: cls(**bench_wan.CONFIGS[size]), torch.bfloat16,
                                                  cls._keep_in_fp32_modules))
    vae = wan_gpu.module_bytes(wan_gpu.meta_module(AutoencoderKLWan, torch.float32))
    est = wan_gpu.estimate(bench_wan.CONFIGS[size], tf, vae, wan.valid_length(16), w, h, w, h)
    accepted = min(est.need(m) for m in wan_gpu.MODES)
    assert cfg["needs"]["gpu_gb"] == pytest.approx(np.ceil(accepted / 1e8) / 10)
    figure = f"{cfg['needs']['gpu_gb']:g} GB"
    assert figure in cfg["panel"]["tooltip"]
    assert figure in open(os.path.join(ROOT, "models", name, "README.md"), encoding="utf-8").read()


def test_gpu_memory_placement_and_refusals(hub):
    model = models.load("wan-tiny", "cpu")
    model.plan(64, 48, 33, 100)
    est = model.estimate(33)
    total = 80 * 10**9
    assert est.need("resident") >= est.need("vae_offloaded") >= est.need("offloaded")
    assert model.check_memory(33, est.need("resident"), total, 10**12) == [] and model.mode == "resident"
    notes = model.check_memory(33, est.need("resident") - 1, total, 10**12)
    assert model.mode in ("vae_offloaded", "offloaded") and "move to the CPU" in notes[0]
    with pytest.raises(ModelError) as e:
        model.check_memory(33, est.need("offloaded"), total, 0)  # offloading the transformer needs RAM
    assert "needs" in str(e.value) and "of free RAM; 0.0 GB are free" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelError) as e:
        model.check_memory(33, est.need("offloaded") - 1, total, 10**12)
    msg = str(e.value)
    assert f"needs about {wan_hub.gb(est.need('offloaded'))} of GPU memory for 33-frame segments generated at 64x48" \
        in msg and "lower Segment Length" in msg and "\n" not in msg


def test_plan_on_a_gpu_checks_free_memory_before_any_work(hub, monkeypatch):
    """plan's GPU branch with what CUDA would report (free memory, compute capability): nothing moves."""
    model = models.load("wan-tiny", "cpu")
    model.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    model.dtype = torch.bfloat16
    est = model.estimate(33, (64, 48), (64, 48))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (est.need("offloaded") - 1, 80 * 10**9))
    with pytest.raises(ModelError) as e:
        model.plan(64, 48, 33, 100)
    msg = str(e.value)
    assert f"needs about {wan_hub.gb(est.need('offloaded'))} of GPU memory for 33-frame segments generated at " \
           f"64x48" in msg and "80.0 GB" in msg and "\n" not in msg
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (est.need("resident"), 80 * 10**9))
    assert model.plan(64, 48, 33, 100)[0] == 33 and model.mode == "resident" and model.dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    length, notes = model.plan(64, 48, 33, 100)
    assert model.dtype == torch.float16 and any("has no bfloat16 kernels" in n for n in notes)


def test_prompt_encoding_moves_to_the_cpu_and_checks_ram(hub):
    model = models.load("wan-tiny", "cpu")
    model.plan(64, 48, 5, 5)
    model.dtype = torch.bfloat16
    assert model.check_memory(5, 10**12, 10**12, 10**12) == [] and model.text_on == model.device
    model.dtype = torch.float16  # a GPU without bfloat16: UMT5 overflows in float16, so it runs on the CPU
    notes = model.check_memory(5, 10**12, 10**12, 10**12)
    assert model.text_on.type == "cpu" and "the prompt is encoded on the CPU" in notes[-1]
    with pytest.raises(ModelError) as e:
        model.check_memory(5, 10**12, 10**12, 1000)
    assert "text encoder (UMT5-XXL) needs about" in str(e.value) and "\n" not in str(e.value)


def test_transformer_loads_straight_to_its_device(hub, monkeypatch):
    from diffusers import WanVACETransformer3DModel
    calls = []
    real = WanVACETransformer3DModel.from_pretrained

    def record(*a, **k):
        calls.append(k)
        return real(*a, **k)
    monkeypatch.setattr(WanVACETransformer3DModel, "from_pretrained", record)
    model = models.load("wan-tiny", "cpu")
    assert model.transformer is None  # nothing of it in RAM before the prompt is encoded
    model._phase("transformer")
    assert calls[0]["device_map"] == {"": "cpu"} and calls[0]["dtype"] == model.dtype


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_precision_by_compute_capability(capability, dtype):
    got, note = wan_gpu.compute_dtype(torch.device("cuda"), capability)
    assert got == dtype and (note is None) == (dtype == torch.bfloat16)
    assert wan_gpu.compute_dtype(torch.device("cpu")) == (torch.float32, None)


def test_float16_overflow_stops_with_one_line(hub):
    model = models.load("wan-tiny", "cpu")
    model.plan(64, 48, 5, 5)
    model.dtype = torch.float16
    model._phase("transformer")
    model.transformer.half()
    with torch.no_grad():
        model.transformer.proj_out.weight[0, 0] = float("inf")  # a real forward that overflows
    with pytest.raises(ModelError) as e:
        model.denoise(torch.zeros(1, 96, 2, 6, 8), torch.zeros(1, 16, 32, dtype=torch.float16), None)
    assert "overflowed in float16 at denoising step 1" in str(e.value) and "compute capability 8.0" in str(e.value)
    assert "\n" not in str(e.value)


def test_oom_is_one_line(hub, monkeypatch):
    model = models.load("wan-tiny", "cpu")
    model.plan(64, 48, 5, 5)

    def oom(*a, **k):  # an out-of-memory cannot happen on the CPU: raised as CUDA raises it
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    mem, K = plane_memory(model, torch.rand(3, 48, 64))
    model._phase("transformer")
    monkeypatch.setattr(model.transformer, "forward", oom)
    with pytest.raises(ModelError) as e:
        model.generate([read_at(mem, K, 0.0, 48, 64)] * 5)
    assert "ran out of memory generating 5-frame segments at 64x48" in str(e.value) and "\n" not in str(e.value)


# -- configs and weights: refusals, each one line ------------------------------------------------------

@pytest.mark.parametrize("change, words", [({"vace_in_channels": 48}, "vace_in_channels 48"),
                                           ({"patch_size": (1, 4, 4)}, "patch_size (1, 4, 4)")])
def test_wrong_transformer_config_is_refused(change, words):
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel
    parts = tiny_parts()
    parts["transformer"] = WanVACETransformer3DModel(**dict(bench_wan.CONFIGS["tiny"], **change))
    with pytest.raises(ModelError) as e:
        bench_wan.prebuilt(WanVACEPipeline(**parts), "wan-x", "cpu")
    assert words in str(e.value) and "not a Wan2.1-VACE transformer" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["wan-vace-1.3b", "wan-vace-14b"])
def test_shipped_model_cards_are_complete(name):
    cfg = real_args(name)
    assert cfg["class"] == "wan:WanVACEModel"
    assert "revision" in cfg["args"] and cfg["args"]["repo"].startswith("Wan-AI/Wan2.1-VACE-")
    rev = cfg["args"]["revision"]
    assert rev is None or (len(rev) == 40 and int(rev, 16) >= 0)
    card = open(os.path.join(ROOT, "models", name, "README.md"), encoding="utf-8").read()
    assert "Apache-2.0" in card and "GB" in card and "computed" in card


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_missing_weights_offline_is_one_clear_line(hub, tmp_path, monkeypatch, var):
    empty = tmp_path / "empty-cache"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(var, "1")
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
    assert f"{var} is set" in msg
    assert not empty.exists()  # nothing was written, let alone downloaded


def test_partial_snapshot_offline_says_what_is_missing(hub, tmp_path, monkeypatch):
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    cache = tmp_path / "hub"
    shutil.copytree(hub[0], cache)
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    snap = repo_dir / "snapshots" / REV
    files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    write_tree_cache(str(repo_dir), REV, {f: TreeCacheEntry(size=1, blob_id="0" * 40) for f in files})
    gone = "transformer/diffusion_pytorch_model.safetensors"
    (snap / gone).unlink()  # a download cut short
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(ModelError) as e:
        models.load("wan-tiny", "cpu")
    msg = str(e.value)
    assert f"the copy in {cache} is incomplete (1 file(s) are missing ({gone}))" in msg
    assert "HF_HUB_OFFLINE is set: run once online to finish the download" in msg and "\n" not in msg


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


def test_memory_stores_wan_latents_compactly(hub):
    model = models.load("wan-tiny", "cpu")
    assert (model.channels, model.cell) == (16, 8)
    mem = LatentMemory(model.channels, model.cell)
    assert mem.lat.dtype == torch.float16
