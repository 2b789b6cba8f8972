"""Inventing unseen content by example (backend/imagine.py): a pattern continues in phase into a hole, an unseen
face of an object takes its seen faces' look, and what was invented is remembered."""
import math
import os

import numpy as np
import torch

from backend.channels import Maps
from backend.models.synth.imagine import synthesize
from backend.models.base import Exemplar
from tests.synth import intrinsics, look_camera

W, H = 96, 64


def checker_view(c2w, period=0.5):
    """A wall at z = 6 facing the camera and a floor at y = 1.2 (OpenCV world), each a soft checker (a product of
    sines: a render's edges are antialiased too) of `period` in world units: (image [3, H, W], depth [H, W], K,
    cam_to_world)."""
    K = torch.tensor(intrinsics(W, H), dtype=torch.float64)
    c2w = torch.tensor(c2w, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    d = ray @ c2w[:3, :3].T
    o = c2w[:3, 3]
    tw = (6.0 - o[2]) / d[..., 2]
    tf = (1.2 - o[1]) / d[..., 1]
    tf = torch.where(tf > 0, tf, torch.full_like(tf, float("inf")))
    t = torch.minimum(tw, tf)
    P = o + t[..., None] * d
    wall = tw <= tf
    b = torch.where(wall, P[..., 1], P[..., 2])
    chk = 0.5 + 0.5 * torch.sin(math.pi * P[..., 0] / period) * torch.sin(math.pi * b / period)
    img = torch.stack([0.2 + 0.6 * chk, 0.3 + 0.4 * chk * wall, 0.5 + 0.2 * (~wall)], 0).float()
    return img, (t * ray[..., 2]).float(), K, c2w


def seen_by(depth, K, c2w, ref_depth, ref_K, ref_c2w):
    """[H, W]: pixels whose surface point the reference camera sees."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    d = depth.double()
    P = torch.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], -1) @ c2w[:3, :3].T + c2w[:3, 3]
    w2r = torch.linalg.inv(ref_c2w)
    p = P @ w2r[:3, :3].T + w2r[:3, 3]
    ur, vr = ref_K[0, 0] * p[..., 0] / p[..., 2] + ref_K[0, 2], ref_K[1, 1] * p[..., 1] / p[..., 2] + ref_K[1, 2]
    return (ur >= 0) & (ur <= W - 1) & (vr >= 0) & (vr <= H - 1) & (p[..., 2] > 0)


def psnr(a, b, m):
    return -10 * math.log10(float(((a - b) ** 2)[:, m].mean()))


def detail(a, m):
    L = a.mean(0)
    g = (L[:, 1:] - L[:, :-1])[m[:, 1:] & m[:, :-1]] ** 2
    return float(g.sum())


def test_a_checker_continues_into_the_hole_in_phase_not_as_its_mean():
    ref_img, ref_depth, K, ref_c2w = checker_view(look_camera(0.0))
    truth, depth, _, c2w = checker_view(look_camera(1.2, yaw_deg=12))
    covered = seen_by(depth, K, c2w, ref_depth, K, ref_c2w)
    hole = ~covered
    assert 0.25 < hole.float().mean() < 0.6
    flat = truth.clone()
    flat[:, hole] = truth[:, covered].mean(1)[:, None]  # the known pixels' mean colour
    drawn = torch.where(covered[None], truth, torch.zeros_like(truth))
    out, invented, _ = synthesize(drawn, covered, depth, K, c2w, [Exemplar(ref_img, K, ref_c2w, Maps(depth=ref_depth))],
                               base=flat, generator=torch.Generator().manual_seed(3))
    assert invented[hole].float().mean() > 0.9 and not invented[covered].any()
    assert torch.equal(out[:, covered], truth[:, covered])  # what was drawn stays as drawn
    assert psnr(out, truth, hole) > psnr(flat, truth, hole) + 4.0  # the pattern, in phase
    ratio = detail(out, hole) / detail(truth, hole)
    assert 0.6 < ratio < 1.6, ratio  # as much detail as the truth: not a blur, not noise


def test_same_generator_same_result():
    ref_img, ref_depth, K, ref_c2w = checker_view(look_camera(0.0))
    truth, depth, _, c2w = checker_view(look_camera(1.2, yaw_deg=12))
    covered = seen_by(depth, K, c2w, ref_depth, K, ref_c2w)
    runs = [synthesize(torch.where(covered[None], truth, torch.zeros_like(truth)), covered, depth, K, c2w,
                       [Exemplar(ref_img, K, ref_c2w, Maps(depth=ref_depth))], generator=torch.Generator().manual_seed(5))[0]
            for _ in range(2)]
    assert torch.equal(*runs)


def z_up_camera(x=0.0):
    """OpenCV cam_to_world at (x, 0, 0) in a Z-up world (Blender's), looking along +y."""
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # columns: right, down, forward
    c2w[0, 3] = x
    return c2w


def cube_view(yaw_deg, size=0.6, at=(0.0, 3.0, 0.0), period=0.3):
    """A cube of side 2 * size turned by yaw about its vertical axis (world z), standing at `at` before a wall at
    y = 6, seen by z_up_camera(): every face carries the same soft checker in face coordinates (a crate), the wall
    plain grey. Returns (image [3, H, W], depth [H, W], ids [H, W] (1 on the cube), pose [4, 4], K, cam_to_world)."""
    K = torch.tensor(intrinsics(W, H), dtype=torch.float64)
    c2w = z_up_camera()
    a = math.radians(yaw_deg)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    pose[:3, 3] = torch.tensor(at)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    d = ray @ c2w[:3, :3].T
    o = c2w[:3, 3]
    R = pose[:3, :3]
    od = R.T @ (o - pose[:3, 3])  # the camera in cube space
    dd = d @ R                    # ray directions in cube space
    t1, t2 = (-size - od) / dd, (size - od) / dd
    tn = torch.nan_to_num(torch.minimum(t1, t2), nan=-1e9).amax(-1)
    tf = torch.nan_to_num(torch.maximum(t1, t2), nan=1e9).amin(-1)
    hit = (tf >= tn) & (tn > 0)
    t = torch.where(hit, tn, (6.0 - o[1]) / d[..., 1])
    L = od + t[..., None] * dd  # cube-space points
    side = L[..., 0].abs() >= size - 1e-6
    fx = torch.where(side, L[..., 1], L[..., 0])  # along the face, horizontally
    chk = 0.5 + 0.5 * torch.sin(math.pi * fx / period) * torch.sin(math.pi * L[..., 2] / period)
    img = torch.where(hit[None], torch.stack([0.2 + 0.7 * chk, 0.3 + 0.2 * chk, 0.6 - 0.3 * chk]),
                      torch.full((3, H, W), 0.5, dtype=torch.float64)).float()
    return img, (t * ray[..., 2]).float(), hit.long(), pose, K, c2w


def test_an_objects_unseen_face_takes_its_seen_faces_look():
    # the reference sees the crate's front face; turned by 90 degrees, the crate shows a face nobody saw
    ref, ref_depth, ref_ids, ref_pose, K, c2w = cube_view(0.0)
    truth, depth, ids, pose, _, _ = cube_view(90.0)
    # the crate's pixels whose cube-space point the reference saw (the wall is all seen: the camera did not move)
    seen = torch.zeros(H, W, dtype=torch.bool)
    cam = depth.double()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    P = torch.stack([(u - K[0, 2]) / K[0, 0] * cam, (v - K[1, 2]) / K[1, 1] * cam, cam], -1)
    Pw = P @ c2w[:3, :3].T + c2w[:3, 3]
    L = (Pw - pose[:3, 3]) @ pose[:3, :3]                      # cube space
    Pw_ref = L @ ref_pose[:3, :3].T + ref_pose[:3, 3]          # where the reference had that point
    Pr = (Pw_ref - c2w[:3, 3]) @ c2w[:3, :3]                   # in the (same) camera
    ur, vr = (K[0, 0] * Pr[..., 0] / Pr[..., 2] + K[0, 2]).round().long(), (K[1, 1] * Pr[..., 1] / Pr[..., 2] + K[1, 2]).round().long()
    inside = (ur >= 0) & (ur < W) & (vr >= 0) & (vr < H)
    rd = ref_depth[vr.clamp(0, H - 1), ur.clamp(0, W - 1)].double()
    seen = inside & ((rd - Pr[..., 2]).abs() < 0.02 * Pr[..., 2]) & (ref_ids[vr.clamp(0, H - 1), ur.clamp(0, W - 1)] == 1)
    covered = (ids == 0) | seen
    unseen = (ids == 1) & ~seen
    assert unseen.sum() > 300  # most of the crate shows a face the reference did not
    drawn = torch.where(covered[None], truth, torch.full_like(truth, 0.5))
    out, invented, _ = synthesize(drawn, covered, depth, K, c2w, [Exemplar(ref, K, c2w, Maps(depth=ref_depth, ids=ref_ids), {1: ref_pose})],
                               ids=ids, poses={1: pose}, base=drawn, generator=torch.Generator().manual_seed(2))
    assert invented[unseen].float().mean() > 0.8
    # its seen faces' look: their colours and as much detail (where the pattern's phase on a face nobody saw
    # cannot be known), not the wall's grey and not a flat colour
    got, want = out[:, unseen], truth[:, unseen]
    assert (got.mean(1) - want.mean(1)).abs().max() < 0.06
    assert got.std(1).min() > 0.5 * want.std(1).min()
    ratio = detail(out, unseen) / detail(truth, unseen)
    assert 0.6 < ratio < 1.6, ratio
    assert torch.equal(out[:, ids == 0], truth[:, ids == 0])  # the wall behind stays as drawn


def frames_of(folder):
    from PIL import Image
    d = os.path.join(folder, "frames")
    return {int(f[:6]): np.asarray(Image.open(os.path.join(d, f))).astype(int) for f in sorted(os.listdir(d))}


def test_what_one_segment_invents_a_later_segment_shows_unchanged(tmp_path):
    # segment 1 turns toward walls the reference never saw; segment 2 stays at segment 1's last pose: it must show
    # what was invented there, not invent it again
    from tests.conftest import run_backend
    from tests.synth import make_job
    xs, yaws = [0.0, 0.2, 0.4, 0.6] + [0.6] * 4, [0.0, 8.0, 16.0, 24.0] + [24.0] * 4
    job = make_job(str(tmp_path), W=96, H=64, segment_length=4, model="synth", xs=xs, yaws=yaws)
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert msgs[0]["runs"] == "synth"
    f = frames_of(tmp_path)
    ref = torch.tensor(intrinsics(96, 64), dtype=torch.float64)
    d1 = torch.from_numpy(np.load(tmp_path / "inputs" / "depth" / "000001.npy"))
    d4 = torch.from_numpy(np.load(tmp_path / "inputs" / "depth" / "000004.npy"))
    global W, H
    W, H = 96, 64
    new = ~seen_by(d4, ref, torch.tensor(look_camera(0.6, 24.0)), d1, ref, torch.tensor(look_camera(0.0)))
    assert new.float().mean() > 0.2  # a fifth of frame 4 is surface the reference never saw
    assert f[4][new.numpy()].std() > 10  # invented as texture, not a flat fill
    for n in (5, 6, 7, 8):
        same = (np.abs(f[n] - f[4]) <= 1).all(-1)
        assert same[new.numpy()].mean() > 0.97, (n, same[new.numpy()].mean())


def test_a_blockout_job_with_a_moving_object_and_no_materials_runs(tmp_path):
    from tests.conftest import run_backend
    from tests.synth import make_job
    job = make_job(str(tmp_path), W=96, H=64, n=8, segment_length=4, model="synth",
                   box_xs=[0.15 * i for i in range(8)], yaws=[3.0 * i for i in range(8)])
    proc, msgs = run_backend(job, "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [m["frames"] for m in msgs if m["type"] == "segment_done"] == [[1, 4], [5, 8]]
    assert len(frames_of(tmp_path)) == 8


def test_the_all_around_lights_weight_is_read_from_the_reference():
    # two objects of plain colours, half of each in a shadow: the colour over (direct + w x all-around) is flat on
    # each object only for the w the image was lit with
    from backend.models.synth.imagine import AMBIENT_WEIGHTS, ambient_weight
    g = torch.Generator().manual_seed(0)
    parts = torch.zeros(H, W, dtype=torch.long)
    parts[:, W // 2:] = 1
    direct = torch.where(torch.arange(H)[:, None] < H // 2, 2.0, 0.0).expand(H, W).clone()
    around = 0.3 + 0.5 * torch.rand(H, W, generator=g)
    albedo = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.3, 0.6]])[parts].permute(2, 0, 1)
    for w in (0.1, 0.5, 2.0):
        image = (albedo * (direct + w * around) / 3.0).clamp(0, 1)
        e = Exemplar(image, torch.eye(3), torch.eye(4),
                     Maps(depth=torch.full((H, W), 4.0), parts=parts, shade=torch.stack([direct, around])))
        got = ambient_weight([e])
        step = float(AMBIENT_WEIGHTS[1] / AMBIENT_WEIGHTS[0])
        assert w / step <= got <= w * step, (w, got)
    assert ambient_weight([Exemplar(image, torch.eye(3), torch.eye(4), Maps(depth=torch.full((H, W), 4.0)))]) is None


def test_a_planes_measured_repeat_maps_its_pattern_onto_itself():
    # the checker wall and floor of checker_view: each plane's repeats must be symmetries of its pattern (the
    # product of sines repeats under (2p, 0), (0, 2p) and (p, p)), whatever shortest pair the search picks
    from backend.models.synth.imagine import Surface
    period = 0.5
    img, depth, K, c2w = checker_view(look_camera(0.0), period=period)
    s = Surface(Exemplar(img, K, c2w, Maps(depth=depth)))
    found, _ = s.planes()
    wall = [p for p in found if abs(float(p.n[2])) > 0.9]
    floor = [p for p in found if abs(float(p.n[1])) > 0.9]
    assert wall and floor
    for plane, axes in ((wall[0], (0, 1)), (floor[0], (0, 2))):
        assert plane.s1 is not None and plane.s2 is not None
        for shift in (plane.s1, plane.s2):
            a, b = (float(shift[i]) / period for i in axes)
            assert abs(float(shift[[i for i in range(3) if i not in axes][0]])) < 1e-3  # along the plane
            # a symmetry: (a, b) is an integer pair with a + b even (within a tenth of the period)
            ra, rb = round(a), round(b)
            assert abs(a - ra) < 0.1 and abs(b - rb) < 0.1 and (ra + rb) % 2 == 0 and (ra, rb) != (0, 0), (a, b)
