"""Small synthetic jobs for backend tests: a textured wall and a box, exact depth from ray casting
planes in numpy, no Blender needed."""
import json
import math
import os

import numpy as np
from PIL import Image


BOX_DEFAULT = ((-0.6, 0.6), (-0.6, 0.6), (3.0, 3.6))


def look_camera(x, yaw_deg=0.0, z=0.0):
    """OpenCV cam_to_world at (x, 0, z) looking down +Z, turned by yaw about the world's Y axis."""
    a = math.radians(yaw_deg)
    R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    c2w = np.eye(4)
    c2w[:3, :3] = R
    c2w[:3, 3] = (x, 0.0, z)
    return c2w


def intrinsics(W, H, f=None):
    f = f or 0.9 * W
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])


def box_scene_depth(K, c2w, W, H, wall_z=6.0, box=((-0.6, 0.6), (-0.6, 0.6), (3.0, 3.6)), with_ids=False):
    """Planar depth of a wall at world z=wall_z plus an axis-aligned box; inf where nothing is hit.
    With `with_ids`, also the id mask (1 where the box is seen, else 0)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    d = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    t = np.full((H, W), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        tw = (wall_z - o[2]) / d[..., 2]
        t = np.where(tw > 0, tw, t)
        lo = np.array([b[0] for b in box])
        hi = np.array([b[1] for b in box])
        t1 = (lo - o) / d
        t2 = (hi - o) / d
        tn = np.nanmax(np.minimum(t1, t2), -1)
        tf = np.nanmin(np.maximum(t1, t2), -1)
        hit = (tf >= tn) & (tn > 0)
        t = np.where(hit & (tn < t), tn, t)
    # t is along d whose camera-space z is 1, so t is already planar depth
    if with_ids:
        return t.astype(np.float32), (hit & (t == tn)).astype(np.uint16)
    return t.astype(np.float32)


def box_scene_address(K, c2w, W, H, depth, ids, box=BOX_DEFAULT, offset=0.0, tracked=False):
    """The surface address maps of box_scene_depth's scene: rest [H, W, 3] (the world for the wall, and for the box
    unless `tracked`, then its own space: the world shifted back by `offset` in x), normal [H, W, 3] facing the
    camera, parts [H, W] (1 the wall, 2 the box, 0 nothing)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    p = cam @ c2w[:3, :3].T + c2w[:3, 3]
    hit = np.isfinite(depth)
    normal = np.zeros((H, W, 3))
    normal[..., 2] = -1.0  # the wall faces the camera
    on_box = hit & (ids > 0)
    lo = np.array([b[0] for b in box])
    hi = np.array([b[1] for b in box])
    view = p - c2w[:3, 3]
    for axis in range(3):
        for bound, sign in ((lo, -1.0), (hi, 1.0)):
            face = on_box & (np.abs(p[..., axis] - bound[axis]) < 1e-4 * (1 + np.abs(bound[axis])))
            n = np.zeros(3)
            n[axis] = sign
            normal[face] = n
    flip = (normal * view).sum(-1) > 0
    normal[flip] *= -1
    rest = np.where(hit[..., None], p, np.nan)
    if tracked:
        rest[on_box, 0] -= offset
    parts = np.where(hit, np.where(on_box, 2, 1), 0).astype(np.uint16)
    return rest.astype(np.float32), normal.astype(np.float16), parts


def texture(W, H, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3))
    yy, xx = np.mgrid[0:H, 0:W]
    img[..., 0] = 0.5 + 0.4 * np.sin(xx / 5.0)
    img[..., 1] = 0.5 + 0.4 * np.cos(yy / 4.0)
    img[..., 2] = ((xx // 8 + yy // 8) % 2) * 0.8
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


BOX = BOX_DEFAULT


def make_job(folder, W=64, H=48, n=12, segment_length=4, seed=0, model="builtin", xs=None, yaws=None,
             box_xs=None, track_box=True, addresses=False, **extra):
    """Write job.json, a reference image and per-frame depth into folder; returns the job path.

    box_xs: the box's x offset on each frame (a moving object); with track_box it is listed as moving
    object 1 with its transform and id masks, without it the job treats it as static scenery. addresses: each
    frame also gets its object map and surface addresses (parts, rest, normal), as the add-on exports them."""
    for name in ("depth", "ids") + (("parts", "rest", "normal") if addresses else ()):
        os.makedirs(os.path.join(folder, "inputs", name), exist_ok=True)
    K = intrinsics(W, H)
    xs = xs if xs is not None else [0.08 * i for i in range(n)]
    yaws = yaws if yaws is not None else [2.0 * i for i in range(len(xs))]
    frames = []
    for i, x in enumerate(xs):
        c2w = look_camera(x, yaw_deg=yaws[i])
        bx = box_xs[i] if box_xs is not None else 0.0
        box = ((BOX[0][0] + bx, BOX[0][1] + bx), BOX[1], BOX[2])
        depth, ids = box_scene_depth(K, c2w, W, H, box=box, with_ids=True)
        rel = f"inputs/depth/{i + 1:06d}.npy"
        np.save(os.path.join(folder, rel), depth)
        frames.append({"frame": i + 1, "K": K.tolist(), "cam_to_world": c2w.tolist(), "depth": rel})
        if box_xs is not None and track_box:
            pose = np.eye(4)
            pose[0, 3] = bx
            frames[-1]["objects"] = {"1": pose.tolist()}
            frames[-1]["ids"] = f"inputs/ids/{i + 1:06d}.npy"
            np.save(os.path.join(folder, frames[-1]["ids"]), ids)
        if addresses:
            maps = box_scene_address(K, c2w, W, H, depth, ids, box, bx, box_xs is not None and track_box)
            for name, data in zip(("rest", "normal", "parts"), maps):
                frames[-1][name] = f"inputs/{name}/{i + 1:06d}.npy"
                np.save(os.path.join(folder, frames[-1][name]), data)
    if box_xs is not None and track_box:
        extra["objects"] = [{"id": 1, "name": "Box"}]
    Image.fromarray(texture(W, H, seed)).save(os.path.join(folder, "inputs", "reference.png"))
    job = {"version": 1, "model": model, "device": "CPU", "seed": seed, "segment_length": segment_length,
           "width": W, "height": H, "reference": {"image": "inputs/reference.png", "frame": 1},
           "depth_source": "SCENE", "frames": frames, **extra}
    path = os.path.join(folder, "job.json")
    with open(path, "w") as f:
        json.dump(job, f)
    return path
