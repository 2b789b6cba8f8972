"""The bench's actor figures and multi-scale texture figures on tiny synthetic maps with known answers (no bpy)."""
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import actors  # noqa: E402
import invented  # noqa: E402
import metrics  # noqa: E402
import surface_maps  # noqa: E402

H, W, F = 20, 40, 100.0


def K():
    return np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])


def maps(obj, depth, rest=None, normal=None, c2w=None):
    """A frame's maps as surface_maps writes them: depth 1 everywhere the object map has something."""
    H_, W_ = obj.shape
    rest = np.zeros((H_, W_, 3)) if rest is None else rest
    if normal is None:
        normal = np.zeros((H_, W_, 3))
        normal[..., 2] = 1.0
    return {"obj": obj, "depth": np.where(obj > 0, depth, np.inf), "rest": rest, "normal": normal,
            "cos": np.ones((H_, W_)), "K": K(), "c2w": np.eye(4) if c2w is None else c2w}


def cloth(cols, offset=0.0, bend=0.0, flip=False):
    """Object 1 over the given columns (all rows): a cloth whose rest position is x = column / F (one footprint
    per pixel at depth 1), y = row / F, seen from its front (normal +z) or, with flip, its back."""
    obj = np.zeros((H, W), np.uint16)
    rest = np.zeros((H, W, 3))
    v, u = np.mgrid[0:H, 0:W]
    obj[:, cols] = 1
    rest[..., 0] = (u + offset) / F
    rest[..., 1] = v / F
    rest[..., 2] = bend * np.sin(u / 3.0)  # off the rest surface only where this frame's pixels are not at rest
    normal = np.zeros((H, W, 3))
    normal[..., 2] = -1.0 if flip else 1.0
    return maps(obj, 1.0, rest, normal)


def test_seen_along_the_rest_surface_within_one_and_a_half_footprints():
    ref = cloth(slice(0, 20))  # the reference shows the cloth's columns 0-19 (rest x 0 .. 0.19)
    # a later frame: the cloth slid 10 pixels and waved (world-space unrelated), rest x of column u is (u - 10) / F
    later = cloth(slice(10, 40), offset=-10.0)
    seen = actors.seen_on_surface(later, [ref], 1)
    cols = np.nonzero(seen.any(0))[0]
    # rest x 0 .. 0.19 were shown; 0.20 is within 1.5 footprints (0.015) of 0.19? no: 0.01 away -> seen; 0.21 not
    assert cols.min() == 10 and cols.max() == 10 + 20
    assert seen[:, 10:31].all() and not seen[:, 31:].any()
    # the other side of the cloth at the same rest positions: not what the reference saw
    back = cloth(slice(10, 40), offset=-10.0, flip=True)
    assert not actors.seen_on_surface(back, [ref], 1).any()
    # another object at the same rest positions is not the same surface
    other = cloth(slice(10, 40), offset=-10.0)
    other["obj"] = np.where(other["obj"] > 0, 2, 0).astype(np.uint16)
    assert not actors.seen_on_surface(other, [ref], 2).any()
    # a reference far away has a larger footprint: at depth 4 the radius is 4 x 1.5 footprints
    far = cloth(slice(0, 20))
    far["depth"] = np.where(far["obj"] > 0, 4.0, np.inf)
    wide = actors.seen_on_surface(later, [far], 1)
    assert wide[:, 10:35].all() and not wide[:, 36:].any()  # rest x up to 0.19 + 0.06


def test_unseen_mask_judges_actors_along_their_surface_and_still_pixels_by_depth():
    # a wall (object 2) at depth 5 behind an actor (object 1) at depth 1 on columns 10-19 of the reference; on the
    # later frame (camera not moved) the actor moved to columns 25-34, its rest positions carried along
    wall_ref = np.full((H, W), 2, np.uint16)
    wall_ref[:, 10:20] = 1
    ref = maps(wall_ref, np.where(wall_ref == 1, 1.0, 5.0))
    ref["rest"][..., 0] = np.arange(W)[None] / F
    later_obj = np.full((H, W), 2, np.uint16)
    later_obj[:, 25:35] = 1
    later = maps(later_obj, np.where(later_obj == 1, 1.0, 5.0))
    later["rest"][..., 0] = (np.arange(W)[None] - 15) / F  # column 25 shows what column 10 showed
    unseen = actors.unseen_mask(later, [ref], {1: "Cloth"})
    expect = np.zeros((H, W), bool)
    expect[:, 10:20] = True  # the wall the actor hid on the reference
    assert np.array_equal(unseen, expect)


def test_uncovered_background_split_by_whether_the_reference_saw_it():
    # wall (object 2) at depth 5, an actor (object 1) at depth 1: columns 10-19 on the reference (frame 1), 20-29 on
    # frame 2, 30-39 on frame 3. On frame 3, columns 20-29 are wall the reference saw and the actor covered on
    # frame 2; columns 10-19 are wall the actor hid on the reference; the rest of the wall was never covered.
    def frame(cols):
        obj = np.full((H, W), 2, np.uint16)
        obj[:, cols] = 1
        return maps(obj, np.where(obj == 1, 1.0, 5.0))
    fm = {1: frame(slice(10, 20)), 2: frame(slice(20, 30)), 3: frame(slice(30, 40))}
    m = actors.uncovered_masks([1, 2, 3], fm, 1, {1: "Actor"})
    assert set(m) == {2, 3}
    cols = {k: np.nonzero(v.all(0))[0] for k, v in m[3].items()}
    assert list(cols["uncovered_seen"]) == list(range(20, 30))
    assert list(cols["uncovered_unseen"]) == list(range(10, 20))
    assert list(cols["never_covered"]) == list(range(0, 10))
    assert not m[2]["uncovered_seen"].any() and list(np.nonzero(m[2]["uncovered_unseen"].all(0))[0]) == list(range(10, 20))
    gt = {n: np.full((H, W, 3), 0.5) for n in fm}
    trail = {n: g.copy() for n, g in gt.items()}
    trail[3][:, 20:30] = 0.6  # a product that leaves a trail where the actor walked
    fig = actors.uncovered_figures(m, gt, {"model": trail})
    assert fig["model"]["never_covered"] == math.inf and fig["model"]["uncovered_seen"] == pytest.approx(20.0)
    assert fig["pixels"]["uncovered_seen"] == 10 * H


def test_actor_figures_per_frame_and_per_segment():
    ref = cloth(slice(0, 20))
    fm = {1: ref, 2: cloth(slice(0, 20)), 3: cloth(slice(10, 40), offset=-10.0)}
    gt = {n: np.full((H, W, 3), 0.5) for n in fm}
    img = {n: g.copy() for n, g in gt.items()}
    img[3][:, 31:40] += 0.1  # wrong only where no reference saw the cloth (rest x beyond 0.20)
    figs = actors.actor_figures([1, 2, 3], 1, fm, [ref], {1: "Cloth"}, gt, {"model": img}, {1: 0, 2: 0, 3: 1})
    x = figs["Cloth"]["images"]["model"]
    assert list(x["per_frame"]) == ["2", "3"] and x["per_frame"]["2"] == math.inf
    assert x["worst_frame"] == 3 and x["worst_db"] == pytest.approx(10 * math.log10(30 / 9 / 0.01))
    assert x["seen_psnr_per_segment"] == [math.inf, math.inf]
    assert x["unseen_psnr_per_segment"][0] is None and x["unseen_psnr_per_segment"][1] == pytest.approx(20.0)
    assert figs["Cloth"]["seen_share_per_segment"] == [1.0, pytest.approx(21 / 30)]


def test_surface_maps_interpolate_rest_positions_barycentrically():
    # one triangle in front of the camera (camera space), its rest positions a different (deformed) triangle
    cam = np.array([[[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [-1.0, 1.0, 2.0]]])
    rest = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])
    Kc = np.array([[10.0, 0, 10], [0, 10.0, 10], [0, 0, 1]])
    depth = np.full((21, 21), np.inf)
    hit = np.zeros((21, 21), np.int64)
    depth[10, 8], hit[10, 8] = 2.0, 1  # pixel (u 8, v 10): x = -0.4, y = 0 at z = 2
    m = surface_maps.surface_at_pixels(depth, hit, cam, rest, np.array([3], np.uint16), Kc)
    # barycentrics of (-0.4, 0) in the camera triangle: b1 = 0.3, b2 = 0.5 -> rest (0.6, 2.0, 0)
    assert m["obj"][10, 8] == 3 and m["obj"].sum() == 3
    assert np.allclose(m["rest"][10, 8], [0.6, 2.0, 0.0])
    # the camera sees the face whose normal (0, 0, +4) points away from it: the rest normal is turned over
    assert np.allclose(m["normal"][10, 8].astype(float), [0, 0, -1], atol=1e-3)
    assert m["cos"][10, 8] == pytest.approx(2.0 / math.sqrt(0.16 + 4.0), abs=1e-3)


def test_downsample_and_reduce_mask():
    a = np.arange(4 * 6, dtype=float).reshape(4, 6)[..., None]
    d = metrics.downsample(a, 2)
    assert d.shape == (2, 3, 1) and d[0, 0, 0] == (0 + 1 + 6 + 7) / 4
    assert metrics.downsample(np.zeros((5, 7, 3)), 4).shape == (1, 1, 3)
    m = np.ones((4, 6), bool)
    m[0, 0] = False
    assert metrics.reduce_mask(m, 2).tolist() == [[False, True, True], [True, True, True]]


def test_structure_missing_at_large_scale_shows_only_at_the_coarse_scales():
    # a texture of fine grain over large blobs (about 12 px); an inventor that gets the grain right but leaves out
    # the blobs (noise over a smooth fill) passes the never-shown SWD target (<= 3x the other layout's) at full
    # size, where a 7 x 7 patch holds the grain, and fails it on the 4x4-averaged image, where it holds the blobs
    rng = np.random.default_rng(3)

    def texture(blobs=True):
        norm = lambda b: (b - b.mean()) / b.std()  # noqa: E731
        fine = norm(metrics.gaussian_blur(rng.random((144, 256, 3)), 0.8))
        big = norm(metrics.gaussian_blur(rng.random((144, 256, 3)), 6.0)) if blobs else 0.0
        return np.clip(0.5 + 0.08 * fine + 0.12 * big, 0, 1)
    gt, other, grain_only = texture(), texture(), texture(blobs=False)
    mask = np.ones(gt.shape[:2], bool)
    ratios = {}
    for s in invented.SWD_SCALES:
        swd = metrics.PatchSWD(gt, mask, seed=0, scale=s, texture_only=s != 1)
        ratios[s] = swd(grain_only)[1] / swd(other)[1]
    assert ratios[1] < 3.0 < ratios[4]
    assert ratios[4] > 2 * ratios[1]
    tiled = grain_only
    fig = invented.image_figures([1], {1: gt}, {1: mask}, {"tiled": {1: tiled}, "other": {1: other}}, gt)
    assert {"swd_texture", "swd_texture_2", "swd_texture_4", "swd_raw"} <= set(fig["tiled"])
    assert fig["tiled"]["swd_texture_4"] / fig["other"]["swd_texture_4"] == pytest.approx(ratios[4], rel=1e-6)
    # a mask too small for 64 patches at 1/4 size leaves that scale out, not the others
    small = np.zeros(gt.shape[:2], bool)
    small[20:44, 20:44] = True  # 576 patches at full size, 36 at 1/4
    fig = invented.image_figures([1], {1: gt}, {1: small}, {"tiled": {1: tiled}}, gt)
    assert fig["tiled"]["swd_texture"] is not None and fig["tiled"]["swd_texture_4"] is None
    assert invented.image_figures([1], {1: gt}, {1: small}, {"t": {1: tiled}}, gt, swd=False)["t"].keys() >= {"psnr_db"}
