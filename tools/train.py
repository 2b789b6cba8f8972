"""Train the compact model (backend/models/compact.py) into models/compact/: weights.safetensors and the README's numbers.

  python3 build.py train [--ae-steps N] [--fill-steps N] [--scenes N]

Data, all made offline and cached under out/train_data/ so a rerun skips straight to training:
  * random procedural rooms (tools/scenes.py build_random_room) rendered with Cycles, three nearby views each,
    with exact depth from the add-on's export (mirage_blender/gather/frames.py); pairs of views give real memory reads (write view A into a
    LatentMemory, read at view B) for the hole-filling net;
  * photographs and artwork from Debian's wallpaper packages under /usr/share/backgrounds (if installed, e.g.
    mate-backgrounds, ukui-wallpapers), cut into 256 x 144 crops at several scales.
Held-out: rooms with seeds from 1000 up, and every fifth wallpaper (sorted by path). Fixed seeds throughout;
uses CUDA when torch sees it.
"""
import argparse
import glob
import json
import math
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from backend.channels import Maps  # noqa: E402
from backend.inputs import far_distance  # noqa: E402
from backend.fill import depth_aware_fill  # noqa: E402
from backend.memory import LatentMemory, MemoryRead, SceneMemory, cell_depth  # noqa: E402
from backend.models.base import FrameNeeds  # noqa: E402
from backend.models.compact import Decoder, Encoder, FillNet, LearnedModel, fill_features, pixel_base  # noqa: E402
from backend.models.patch import PatchModel  # noqa: E402
from backend import step as product_step  # noqa: E402

# MIRAGE_TRAIN_DATA / MIRAGE_WALLPAPERS point elsewhere, e.g. at a copy taken to a GPU machine
DATA = os.environ.get("MIRAGE_TRAIN_DATA") or os.path.join(ROOT, "out", "train_data")
# MIRAGE_TRAIN_OUT trains into another folder, to compare against the shipped model before replacing it
MODEL_DIR = os.environ.get("MIRAGE_TRAIN_OUT") or os.path.join(ROOT, "models", "compact")
W, H = 256, 144
HELD_OUT_SEED = 1000
WALLPAPERS = os.environ.get("MIRAGE_WALLPAPERS") or "/usr/share/backgrounds"


# ----------------------------------------------------------------------------------------------- rendering

def render_worker(seeds, samples):
    """Runs in a child process (bpy): three views per room, cached one .npz per seed."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import scenes
    from tests.addon.loader import addon_module  # the add-on's modules without registering its UI
    camera, export = addon_module("gather.camera"), addon_module("gather.frames")
    for seed in seeds:
        path = os.path.join(DATA, f"room_{seed:04d}.npz")
        if os.path.isfile(path):
            continue
        rng = random.Random(seed)
        scene, cam, (hx, hy, hz) = scenes.build_random_room(rng, W, H)
        views = []
        for attempt in range(200):
            if len(views) == 3:
                break
            if not views:
                loc = (rng.uniform(-hx + 0.6, hx - 0.6), rng.uniform(-hy + 0.6, hy - 0.6), rng.uniform(0.6, min(2.2, hz - 0.3)))
                # look roughly toward the middle of the room
                yaw = math.degrees(math.atan2(loc[0], -loc[1])) + rng.uniform(-60, 60) if abs(loc[0]) + abs(loc[1]) > 0.5 \
                    else rng.uniform(0, 360)
                pitch = rng.uniform(70, 100)
            else:
                l0, p0, y0 = views[0][:3]
                step = rng.uniform(0.15, 0.9)
                a = rng.uniform(0, 2 * math.pi)
                loc = (l0[0] + step * math.cos(a), l0[1] + step * math.sin(a), l0[2] + rng.uniform(-0.2, 0.2))
                pitch, yaw = p0 + rng.uniform(-6, 6), y0 + rng.uniform(-20, 20)
            scenes.set_camera(cam, loc, pitch, yaw)
            depth = export.scene_depth(scene, cam, W, H)
            fin = depth[np.isfinite(depth)]
            if fin.size < 0.3 * depth.size or fin.min() < 0.25 or np.median(fin) < 1.2:
                if views and attempt > 100:
                    views = []  # this first view has no usable neighbours: start over
                continue
            views.append((loc, pitch, yaw, depth, camera.intrinsics(scene, cam), camera.camera_to_world(cam)))
        if len(views) < 3:
            print(f"room {seed}: no usable views, skipped", flush=True)
            np.savez_compressed(path, images=np.zeros((0, H, W, 3), np.uint8))
            continue
        images = []
        for i, (loc, pitch, yaw, *_r) in enumerate(views):
            scenes.set_camera(cam, loc, pitch, yaw)
            png = os.path.join(DATA, f"_render_{seed}.png")
            scenes.render_still(scene, png, samples=samples, denoise=True)
            from PIL import Image
            images.append(np.asarray(Image.open(png).convert("RGB")))
            os.remove(png)
        np.savez_compressed(path, images=np.stack(images), depths=np.stack([v[3] for v in views]).astype(np.float32),
                            K=np.stack([v[4] for v in views]), c2w=np.stack([v[5] for v in views]))
        print(f"room {seed}: rendered", flush=True)


def ensure_rooms(seeds, samples):
    todo = [s for s in seeds if not os.path.isfile(os.path.join(DATA, f"room_{s:04d}.npz"))]
    if todo:
        t = time.perf_counter()
        print(f"rendering {len(todo)} rooms x 3 views with Cycles (cached in {DATA})", flush=True)
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.check_call([sys.executable, os.path.abspath(__file__), "--render-worker",
                               ",".join(map(str, todo)), "--samples", str(samples)], env=env,
                              stdout=subprocess.DEVNULL if not os.environ.get("MIRAGE_VERBOSE") else None)
        print(f"rendered in {time.perf_counter() - t:.0f} s", flush=True)
    rooms = []
    for s in seeds:
        z = np.load(os.path.join(DATA, f"room_{s:04d}.npz"))
        if len(z["images"]):
            room = {k: z[k] for k in z.files}
            room["depths"] = room["depths"].astype(np.float32)
            rooms.append(room)
    return rooms


# ---------------------------------------------------------------------------------------------- wallpapers

def wallpaper_crops():
    """(train crops, held-out crops) as uint8 [N, H, W, 3], cached."""
    path = os.path.join(DATA, "wallpapers.npz")
    if os.path.isfile(path):
        z = np.load(path)
        return z["train"], z["test"]
    from PIL import Image
    files = sorted(f for f in glob.glob(os.path.join(WALLPAPERS, "**", "*"), recursive=True)
                   if re.search(r"\.(jpe?g|png)$", f, re.I) and os.path.getsize(f) > 50_000)
    rng = np.random.default_rng(0)
    train, test = [], []
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im.draft("RGB", (1024, 576))
                im = im.convert("RGB")
        except Exception:
            continue
        held = i % 5 == 2
        dst = test if held else train
        for _ in range(6 if held else 48):
            w = int(rng.integers(W, max(W, min(im.width, 1024)) + 1))
            h = round(im.height * w / im.width)
            if h < H:
                w, h = max(W, round(im.width * H / im.height)), H
            small = im.resize((w, h), Image.BICUBIC)
            x, y = rng.integers(0, w - W + 1), rng.integers(0, h - H + 1)
            dst.append(np.asarray(small.crop((x, y, x + W, y + H))))
    train = np.stack(train) if train else np.zeros((0, H, W, 3), np.uint8)
    test = np.stack(test) if test else np.zeros((0, H, W, 3), np.uint8)
    np.savez(path, train=train, test=test)
    return train, test


# ------------------------------------------------------------------------------------------------ training

def to_t(u8):
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0


def psnr(a, b):
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def autocast(device):
    """bfloat16 on CUDA; plain float32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


def calibrate_steps(images, seconds, device, channels, widths, batch, crop):
    """How many autoencoder steps fit in `seconds` on this machine: times 20 steps of a throwaway model."""
    enc, dec = Encoder(channels, widths).to(device), Decoder(channels, widths).to(device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-4)
    x = images[:batch, :, :crop[0], :crop[1]].to(device).float() / 255.0
    amp = autocast(device)
    for i in range(25):
        if i == 5:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with amp:
            loss = F.mse_loss(dec(enc(x)).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / 20
    steps = max(100, int(seconds / (per_step * 1.1)) // 100 * 100)  # 10 % for logging and data
    print(f"  {per_step * 1000:.1f} ms per autoencoder step: {steps} steps fit in {seconds:.0f} s", flush=True)
    return steps


def train_autoencoder(images, steps, device, channels, widths, batch=8, crop=(96, 96), lr=1e-3):
    """images: uint8 [N, 3, H, W], kept on the training device as bytes."""
    torch.manual_seed(0)
    enc, dec = Encoder(channels, widths).to(device), Decoder(channels, widths).to(device)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(0)
    images = images.to(device)
    ch, cw = crop
    amp = autocast(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=g).to(device)
        ys = torch.randint(0, H - ch + 1, (1,), generator=g).item() // 8 * 8
        xs = torch.randint(0, W - cw + 1, (1,), generator=g).item() // 8 * 8
        x = images[idx, :, ys:ys + ch, xs:xs + cw].float() / 255.0
        if torch.rand(1, generator=g).item() < 0.5:
            x = x.flip(-1)
        with amp:
            z = enc(x)
            # a little latent noise keeps the decoder smooth around codes the fill net will predict
            z = z + 0.02 * torch.randn(z.shape, generator=g).to(device)
            y = dec(z).float()
        loss = F.mse_loss(y, x) + 0.1 * (y - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # clipped: at full learning rate a rare large batch gradient can otherwise wreck the whole run
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        sched.step()
        if step % (50 if steps < 5000 else 500) == 0 or step == steps - 1:
            print(f"  ae step {step:5d}/{steps}  loss {loss.item():.5f}  psnr {psnr(y.detach().clamp(0, 1), x):.2f}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return enc.eval(), dec.eval()


def blob_mask(g, h, w):
    """A random hole mask on the latent grid: blobs, an edge strip, sometimes everything."""
    r = torch.rand(1, generator=g).item()
    if r < 0.03:
        return torch.ones(h, w, dtype=torch.bool)
    noise = torch.rand(1, 1, max(2, h // 4), max(2, w // 4), generator=g)
    field = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    hole = field > torch.rand(1, generator=g).item() * 0.4 + 0.5
    if r < 0.4:  # a strip along one side, as a turning camera leaves
        k = int(torch.randint(1, 3 * w // 4, (1,), generator=g))
        side = torch.rand(1, generator=g).item() < 0.5
        hole[:, :k] |= side
        hole[:, w - k:] |= not side
    return hole


def memory_read(lat_a, depth_a, K_a, c2w_a, K_b, c2w_b, cell=8):
    """Write view A's latent into a fresh memory (whole cells at their median depth) and read it at view B on the
    latent grid: a MemoryRead with geometry, without splats (what the fill net trains on)."""
    dc = cell_depth(torch.from_numpy(depth_a), cell)
    far = far_distance(dc)
    mem = LatentMemory(lat_a.shape[0], cell)
    mem.write(lat_a, torch.where(torch.isfinite(dc), dc, torch.full_like(dc, far)), torch.from_numpy(K_a), torch.from_numpy(c2w_a))
    r = mem.read(torch.from_numpy(K_b), torch.from_numpy(c2w_b), H // cell, W // cell, splats=False)
    return MemoryRead(r.latent, r.hole, r.depth, r.geometry)


def product_frame(model, image_a, room, a, b):
    """View b generated from view a by the product's own steps (backend.step: the reference seeded as the segment
    loop seeds it, then one frame_step)."""
    cell = model.cell
    (depth_a, depth_b), (K_a, K_b), (c2w_a, c2w_b) = (
        [torch.from_numpy(room[k][i]) for i in (a, b)] for k in ("depths", "K", "c2w"))
    far = far_distance(depth_a)
    mem = SceneMemory(model.channels, cell)
    product_step.seed(model, mem, image_a, product_step.make_view(K_a, c2w_a, (H, W), cell, far, Maps(depth=depth_a)))
    return product_step.frame_step(model, mem, product_step.make_view(K_b, c2w_b, (H, W), cell, far, Maps(depth=depth_b)))


def base_fill(enc, dec, lat, hole, depth, target_depth):
    """The fill net's starting point: push-pull on decoded pixels when a decoder is given (fill_base "pixel"),
    else None (push-pull on the latent)."""
    if dec is None:
        return None
    with torch.no_grad():
        return pixel_base(enc, dec, lat.float(), hole, depth, target_depth)[0]


def fill_samples(rooms, enc, device, photo_lat=None, photos_per=0, seed=0, dec=None):
    """(features, base, hole, target latent, target image index info) for reprojection pairs + random masks."""
    g = torch.Generator().manual_seed(seed)
    feats, bases, holes, targets, images = [], [], [], [], []
    for room in rooms:
        imgs = to_t(room["images"])
        with torch.no_grad():
            lats = enc(imgs.to(device)).cpu()
        for a in range(3):
            for b in range(3):
                if a == b:
                    continue
                lat, hole, rdepth, _ = memory_read(lats[a].half(), room["depths"][a], room["K"][a], room["c2w"][a],
                                                room["K"][b], room["c2w"][b])
                if not hole.any():
                    continue
                td = cell_depth(torch.from_numpy(room["depths"][b]), 8)
                use_t = torch.rand(1, generator=g).item() < 0.75
                f, base = fill_features(lat, hole, rdepth, td if use_t else None,
                                        base_fill(enc, dec, lat, hole, rdepth, td if use_t else None))
                feats.append(f), bases.append(base), holes.append(hole), targets.append(lats[b]), images.append(imgs[b])
    if photo_lat is not None:
        lats, imgs = photo_lat
        for i in range(len(lats)):
            for _ in range(photos_per):
                hole = blob_mask(g, H // 8, W // 8)
                depth = torch.where(hole, torch.full_like(hole, float("inf"), dtype=torch.float32), torch.ones(hole.shape))
                lat = lats[i].half().float()
                f, base = fill_features(lat, hole, depth, None, base_fill(enc, dec, lat, hole, depth, None))
                feats.append(f), bases.append(base), holes.append(hole), targets.append(lats[i]), images.append(imgs[i])
    return torch.stack(feats), torch.stack(bases), torch.stack(holes), torch.stack(targets), torch.stack(images)


def train_fill(data, dec, steps, device, channels, fill_width, batch=8):
    torch.manual_seed(1)
    net = FillNet(channels, fill_width).to(device)
    # pixel loss through the frozen decoder: the whole frame on a GPU, a window of 9 x 12 cells on a CPU
    wh, ww = (H // 8, W // 8) if device == "cuda" else (9, 12)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    feats, bases, holes, targets, images = data
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(feats), (batch,), generator=g)
        f, base, hole, tgt, img = (t[idx].to(device) for t in (feats, bases, holes, targets, images))
        pred = torch.where(hole[:, None], base + net(f), tgt)
        hw = hole[:, None].float()
        lat_loss = (((pred - tgt) ** 2) * hw).sum() / (hw.sum() * pred.shape[1]).clamp_min(1)
        i = int(torch.randint(0, H // 8 - wh + 1, (1,), generator=g))
        j = int(torch.randint(0, W // 8 - ww + 1, (1,), generator=g))
        pw = hw[:, :, i:i + wh, j:j + ww]
        pix_hole = F.interpolate(pw, scale_factor=8, mode="nearest")
        y = dec(pred[:, :, i:i + wh, j:j + ww])
        ref = img[:, :, 8 * i:8 * i + 8 * wh, 8 * j:8 * j + 8 * ww]
        pix_loss = (((y - ref) ** 2) * pix_hole).sum() / (pix_hole.sum() * 3).clamp_min(1)
        loss = pix_loss + 0.05 * lat_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        sched.step()
        if step % (50 if steps < 5000 else 500) == 0 or step == steps - 1:
            print(f"  fill step {step:5d}/{steps}  pixel mse {pix_loss.item():.5f}  {time.perf_counter() - t0:.0f} s", flush=True)
    return net.eval()


# -------------------------------------------------------------------------------------------- evaluation

def hole_psnr(a, b, hole_px):
    m = hole_px.expand_as(a)
    mse = ((a - b)[m] ** 2).mean().item() if m.any() else 0.0
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def evaluate(model, rooms, photos):
    """Held-out numbers: encode/decode PSNR, and hole-fill PSNR of the learned fill vs the patch model's
    depth-aware push-pull on real reprojections (write view A, read view B) through the cell-grid read the
    fill net trains on; `frame_psnr_product_*` the same pairs by the product's per-frame steps."""
    patch = PatchModel("patch", cell=4)
    res = {}
    room_imgs = torch.cat([to_t(r["images"]) for r in rooms]) if rooms else torch.zeros(0, 3, H, W)
    for key, imgs in (("decode_psnr_rooms", room_imgs), ("decode_psnr_photos", photos)):
        vals = [psnr(model.render(model.encode(x).half()), x) for x in imgs]
        res[key] = round(float(np.mean(vals)), 2) if vals else None
    learned, pushpull_latent, patch_pp, full_l, full_p, hole_frac = [], [], [], [], [], []
    product_l, product_p = [], []
    for room in rooms:
        imgs = to_t(room["images"])
        for a, b in ((0, 1), (1, 2), (2, 0), (1, 0)):
            product_l.append(psnr(product_frame(model, imgs[a], room, a, b), imgs[b]))
            product_p.append(psnr(product_frame(patch, imgs[a], room, a, b), imgs[b]))
            lat = model.encode(imgs[a]).half()
            read = memory_read(lat, room["depths"][a], room["K"][a], room["c2w"][a], room["K"][b], room["c2w"][b])
            hole = read.hole
            if not hole.any():
                continue
            td = cell_depth(torch.from_numpy(room["depths"][b]), 8)
            hole_px = F.interpolate(hole[None, None].float(), scale_factor=8)[0].bool()
            out_l = model.render(model.complete(read, FrameNeeds(target_depth=td)).latent, read)
            out_pl = model.render(depth_aware_fill(read.latent.float(), hole, read.depth, td), read)
            # the patch model with its own exact 4 x 4 latent and push-pull, through the same memory
            pread = memory_read(patch.encode(imgs[a]), room["depths"][a], room["K"][a], room["c2w"][a],
                                room["K"][b], room["c2w"][b], cell=4)
            ptd = cell_depth(torch.from_numpy(room["depths"][b]), 4)
            out_p = patch.render(patch.complete(pread, FrameNeeds(target_depth=ptd)).latent, pread)
            gt = imgs[b]
            learned.append(hole_psnr(out_l, gt, hole_px))
            pushpull_latent.append(hole_psnr(out_pl, gt, hole_px))
            patch_pp.append(hole_psnr(out_p, gt, hole_px))
            full_l.append(psnr(out_l, gt))
            full_p.append(psnr(out_p, gt))
            hole_frac.append(hole.float().mean().item())
    # random masks on held-out photos (no depth): the learned fill vs push-pull on the patch model's exact latent
    g = torch.Generator().manual_seed(123)
    ph_l, ph_p = [], []
    for x in photos:
        hole = blob_mask(g, H // 8, W // 8)
        if hole.all() or not hole.any():
            continue
        depth = torch.where(hole, torch.full(hole.shape, float("inf")), torch.ones(hole.shape))
        hole_px = F.interpolate(hole[None, None].float(), scale_factor=8)[0].bool()
        out_l = model.render(model.complete(MemoryRead(model.encode(x).half(), hole, depth), FrameNeeds()).latent)
        phole = F.max_pool2d(hole_px[None].float(), 4)[0, 0].bool()  # the same pixels on the 4 x 4 grid
        pdepth = torch.where(phole, torch.full(phole.shape, float("inf")), torch.ones(phole.shape))
        out_p = patch.render(patch.complete(MemoryRead(patch.encode(x), phole, pdepth), FrameNeeds()).latent)
        ph_l.append(hole_psnr(out_l, x, hole_px))
        ph_p.append(hole_psnr(out_p, x, hole_px))
    mean = lambda v: round(float(np.mean(v)), 2) if v else None  # noqa: E731
    res.update({"reprojection_pairs": len(learned), "mean_hole_fraction": mean(hole_frac),
                "fill_hole_psnr_model": mean(learned), "fill_hole_psnr_latent_pushpull": mean(pushpull_latent),
                "fill_hole_psnr_patch_pushpull": mean(patch_pp), "frame_psnr_model": mean(full_l),
                "frame_psnr_patch": mean(full_p), "frame_psnr_product_model": mean(product_l),
                "frame_psnr_product_patch": mean(product_p), "photo_masks": len(ph_l), "photo_hole_psnr_model": mean(ph_l),
                "photo_hole_psnr_patch_pushpull": mean(ph_p)})
    return res


def speed(model, reps=20):
    """Frames per second of the model's share of a frame at 256 x 144: fill of a read with holes + decode."""
    torch.manual_seed(5)
    x = torch.rand(3, H, W)
    lat = model.encode(x)
    hole = torch.zeros(H // 8, W // 8, dtype=torch.bool)
    hole[:, -8:] = True
    depth = torch.where(hole, torch.full(hole.shape, float("inf")), torch.full(hole.shape, 3.0))
    t = time.perf_counter()
    model.encode(x)
    enc_s = time.perf_counter() - t
    read, needs = MemoryRead(lat, hole, depth), FrameNeeds(target_depth=torch.full(hole.shape, 3.0))
    for _ in range(3):
        model.render(model.complete(read, needs).latent)
    t = time.perf_counter()
    for _ in range(reps):
        model.render(model.complete(read, needs).latent)
    return round(reps / (time.perf_counter() - t), 1), round(enc_s * 1000, 1)


def write_card(stats):
    path = os.path.join(MODEL_DIR, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = "<!-- metrics:begin -->\n| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in stats.items()) + "\n<!-- metrics:end -->"
    text = re.sub(r"<!-- metrics:begin -->.*?<!-- metrics:end -->", lambda m: block, text, flags=re.S)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(DATA, "metrics.json"), "w") as f:
        json.dump(stats, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--render-worker", default=None)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scenes", type=int, default=36)
    ap.add_argument("--test-scenes", type=int, default=6)
    ap.add_argument("--ae-steps", type=int, default=2500)
    ap.add_argument("--fill-steps", type=int, default=800)
    ap.add_argument("--eval-only", action="store_true", help="re-measure the shipped weights, no training")
    ap.add_argument("--fill-only", action="store_true",
                    help="keep the autoencoder in the weights file and train the fill net again")
    ap.add_argument("--photos-per", type=int, default=1, help="random hole masks per wallpaper crop for the fill net")
    ap.add_argument("--no-eval", action="store_true", help="train only; the numbers are measured later with --eval-only")
    ap.add_argument("--ae-seconds", type=float, default=None,
                    help="instead of --ae-steps: as many steps as fit in this time (the count is recorded)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", default="96x96", help="autoencoder training crop, HxW in pixels")
    ap.add_argument("--fill-batch", type=int, default=8)
    args = ap.parse_args()
    os.makedirs(DATA, exist_ok=True)
    if args.render_worker:
        render_worker([int(s) for s in args.render_worker.split(",")], args.samples)
        return
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_all = time.perf_counter()
    with open(os.path.join(MODEL_DIR, "model.json")) as f:
        cfg = json.load(f)["args"]
    rooms = ensure_rooms(list(range(args.scenes)), args.samples)
    test_rooms = ensure_rooms(list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.test_scenes)), args.samples)
    wp_train, wp_test = wallpaper_crops()
    print(f"data: {len(rooms)} rooms ({3 * len(rooms)} views), {len(wp_train)} wallpaper crops; held out "
          f"{len(test_rooms)} rooms, {len(wp_test)} wallpaper crops", flush=True)
    t_data = time.perf_counter() - t_all
    weights = os.path.join(MODEL_DIR, "weights.safetensors")
    if not args.eval_only:
        images = torch.from_numpy(np.concatenate([r["images"] for r in rooms] + [wp_train])).permute(0, 3, 1, 2)
        t = time.perf_counter()
        crop = tuple(int(v) for v in args.crop.split("x"))
        if args.fill_only:
            with open(os.path.join(MODEL_DIR, "train.json")) as f:
                earlier = json.load(f)
            old = LearnedModel("previous", folder=MODEL_DIR, **{k: v for k, v in cfg.items() if k not in ("weights", "fill_base")})
            enc, dec = old.encoder.requires_grad_(True), old.decoder.requires_grad_(True)
            args.ae_steps, args.batch, args.crop = earlier["ae_steps"], earlier["batch"], earlier["crop"]
            t_ae = earlier["ae_train_seconds"]
        else:
            if args.ae_seconds:
                args.ae_steps = calibrate_steps(images, args.ae_seconds, device, cfg["channels"], tuple(cfg["widths"]),
                                                args.batch, crop)
            enc, dec = train_autoencoder(images, args.ae_steps, device, cfg["channels"], tuple(cfg["widths"]),
                                         batch=args.batch, crop=crop)
            t_ae = time.perf_counter() - t
        enc, dec = enc.cpu(), dec.cpu()
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.data = p.data.half().float()  # train the fill net against the weights as shipped
        t = time.perf_counter()
        pick = torch.from_numpy(np.random.default_rng(0).choice(len(wp_train), size=min(400, len(wp_train)), replace=False))
        with torch.no_grad():
            plats = torch.cat([enc(c) for c in to_t(wp_train[pick.numpy()]).split(64)]).half().float()
        data = fill_samples(rooms, enc, "cpu", (plats, to_t(wp_train[pick.numpy()])), photos_per=args.photos_per,
                            dec=dec if cfg.get("fill_base") == "pixel" else None)
        print(f"fill data: {len(data[0])} samples ({time.perf_counter() - t:.0f} s)", flush=True)
        dec_dev = dec.to(device).requires_grad_(False)
        fill = train_fill(data, dec_dev, args.fill_steps, device, cfg["channels"], cfg["fill_width"], batch=args.fill_batch)
        t_fill = time.perf_counter() - t
        from safetensors.torch import save_file
        state = {}
        for prefix, net in (("encoder.", enc), ("decoder.", dec), ("filler.", fill.cpu())):
            state.update({prefix + k: v.detach().half().contiguous() for k, v in net.state_dict().items()})
        save_file(state, weights, metadata={"format": "mirage_learned", "channels": str(cfg["channels"]), "cell": "8"})
        run = {"ae_steps": args.ae_steps, "fill_steps": args.fill_steps, "photos_per": args.photos_per, "batch": args.batch, "crop": args.crop,
               "fill_batch": args.fill_batch, "train_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "train_rooms": len(rooms), "train_views": 3 * len(rooms), "train_wallpaper_crops": len(wp_train),
               "data_seconds": round(t_data), "ae_train_seconds": round(t_ae), "fill_train_seconds": round(t_fill),
               "total_seconds": round(time.perf_counter() - t_all)}
        with open(os.path.join(MODEL_DIR, "train.json"), "w") as f:
            json.dump(run, f, indent=1)
        if args.no_eval:
            return
    model = LearnedModel(os.path.basename(MODEL_DIR), folder=MODEL_DIR, **{k: v for k, v in cfg.items() if k != "weights"})
    res = evaluate(model, test_rooms, to_t(wp_test))
    if cfg.get("fill") == "pushpull":
        # the learned fill net ships in the same file (models/compact-fillnet): measure it beside
        args_net = {k: v for k, v in cfg.items() if k != "weights"}
        args_net["fill"] = "net"
        net = evaluate(LearnedModel("fillnet", folder=MODEL_DIR, **args_net), test_rooms, to_t(wp_test))
        res.update({k.replace("_model", "_fillnet"): net[k] for k in
                    ("fill_hole_psnr_model", "frame_psnr_model", "photo_hole_psnr_model")})
    fps, enc_ms = speed(model)
    nparams = sum(p.numel() for n in (model.encoder, model.decoder, model.filler) for p in n.parameters())
    with open(os.path.join(MODEL_DIR, "train.json")) as f:
        run = json.load(f)  # how the shipped weights were trained, kept beside them
    stats = {"parameters": nparams, "weights_bytes": os.path.getsize(weights), **run,
             "test_rooms": len(test_rooms), "test_wallpaper_crops": len(wp_test), **res,
             "fill_plus_decode_fps_256x144": fps, "encode_ms_256x144": enc_ms,
             "eval_threads": torch.get_num_threads()}
    for k, v in stats.items():
        print(f"  {k}: {v}")
    write_card(stats)


if __name__ == "__main__":
    main()
