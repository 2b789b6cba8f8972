"""The bench's invented-pixel figures on tiny synthetic views with known answers (no bpy, fast)."""
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import invented  # noqa: E402
import metrics  # noqa: E402

H, W, F = 20, 40, 20.0


def K():
    return np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])


def cam(x=0.0):
    c2w = np.eye(4)
    c2w[0, 3] = x
    return c2w


def translate(x):
    m = np.eye(4)
    m[0, 3] = x
    return m


def test_a_moving_object_keeps_its_seen_faces_and_uncovers_invented_wall():
    # wall at z = 5; an object (id 1) at z = 2 covers columns 10-19, rows 5-14 in the reference (frame 1);
    # on frame 2 it has moved 1.0 to the right (10 pixels at z = 2), the camera has not moved
    wall = np.full((H, W), 5.0)
    d1, d2 = wall.copy(), wall.copy()
    ids1, ids2 = np.zeros((H, W), np.uint16), np.zeros((H, W), np.uint16)
    d1[5:15, 10:20], ids1[5:15, 10:20] = 2.0, 1
    d2[5:15, 20:30], ids2[5:15, 20:30] = 2.0, 1
    views = {1: (d1, K(), cam()), 2: (d2, K(), cam())}
    ids, poses = {1: ids1, 2: ids2}, {1: {1: translate(0.0)}, 2: {1: translate(1.0)}}
    masks = invented.frame_masks([1, 2], views, [1], ids, poses)
    assert not masks[1].any()
    expect = np.zeros((H, W), bool)
    expect[8:12, 13:17] = True  # the uncovered wall (rows 5-14, columns 10-19) eroded by 3
    assert np.array_equal(masks[2], expect)
    # judged as static, the moved object's own pixels would count as invented
    static_only = invented.frame_masks([1, 2], views, [1])
    assert static_only[2][8:12, 23:27].all()


def test_image_figures_rank_the_reference_rows():
    rng = np.random.default_rng(0)
    big = np.clip(metrics.gaussian_blur(rng.random((H, W + 20, 3)), 1.0) * 2 - 0.5, 0, 1)
    gt = {1: big[:, :W], 2: big[:, 10:W + 10], 3: big[:, 20:]}
    mask = np.zeros((H, W), bool)
    mask[:, 20:] = True
    few = np.zeros((H, W), bool)
    few[7:13, 7:13] = True  # 36 patch centres: too few for an SWD, counted by the other figures
    masks = {1: np.zeros((H, W), bool), 2: mask, 3: few}
    images = {"exact": dict(gt), "blur": {n: metrics.gaussian_blur(g, 3.0) for n, g in gt.items()}}
    fig = invented.image_figures([1, 2, 3], gt, masks, images, gt[1])
    assert set(fig) == {"exact", "blur", *invented.REFERENCE_ROWS}
    assert fig["exact"]["psnr_db"] == math.inf and fig["exact"]["detail_ratio"] == pytest.approx(1.0)
    assert fig["exact"]["swd_raw"] == 0.0 and fig["exact"]["pixels"] == mask.sum() + few.sum()
    assert fig["exact"]["swd_frames"] == 1 and fig["blur"]["swd_frames"] == 1
    assert fig["blur"]["detail_ratio"] == pytest.approx(fig["gt_blurred"]["detail_ratio"])
    assert fig["flat_mean"]["detail_ratio"] == 0.0
    assert fig["gt_shifted"]["swd_texture"] < fig["gt_blurred"]["swd_texture"]
    assert fig["gt_shifted"]["psnr_db"] < fig["gt_blurred"]["psnr_db"]
    assert list(fig["exact"]["psnr_per_frame"]) == ["2", "3"]  # frames without invented pixels do not count


def test_frames_that_repeat_a_pose_measure_the_rows_made_from_the_ground_truth_once():
    rng = np.random.default_rng(2)
    g = metrics.gaussian_blur(rng.random((H, W, 3)), 1.0)
    mask = np.zeros((H, W), bool)
    mask[:, 10:] = True
    gt, masks = {1: g, 2: g, 3: g}, {1: mask, 2: mask, 3: mask}  # frames 2 and 3 repeat frame 1's pose
    model = {n: np.clip(g + 0.05 * n, 0, 1) for n in gt}  # the model's frames differ all the same
    other = {n: g[:, ::-1] for n in gt}
    plain = invented.image_figures([1, 2, 3], gt, masks, {"model": model, "other": other}, g)
    plain["model"].pop("psnr_per_frame")
    calls = []
    orig = metrics.PatchSWD.__call__
    metrics.PatchSWD.__call__ = lambda self, img: calls.append(1) or orig(self, img)
    try:
        once = invented.image_figures([1, 2, 3], gt, masks, {"model": model, "other": other}, g,
                                      same={1: 1, 2: 1, 3: 1}, fixed=("other",))
    finally:
        metrics.PatchSWD.__call__ = orig
    # the model on every frame, the other layout and the four rows once (at full size: these frames are too small
    # for 64 patches at the coarser scales)
    assert len(calls) == 3 + 1 + len(invented.REFERENCE_ROWS)
    once["model"].pop("psnr_per_frame")
    assert once["model"] == pytest.approx(plain["model"])
    assert once["other"]["swd_texture"] == pytest.approx(plain["other"]["swd_texture"])
    assert once["gt_blurred"]["detail_ratio"] == pytest.approx(plain["gt_blurred"]["detail_ratio"])


def test_self_consistency_pairs_a_frame_with_the_earlier_segment_that_saw_its_invented_wall():
    # a wall at z = 2 seen from x = 0 (reference, segment 0), x = 1.0 (segment 1) and x = 1.2 (segment 2):
    # frame 3 invents the wall right of the reference's view; frame 2 (an earlier segment) saw most of it
    wall = np.full((H, W), 2.0)
    views = {n: (wall, K(), cam(x)) for n, x in ((1, 0.0), (2, 1.0), (3, 1.2))}
    seg = {1: 0, 2: 1, 3: 2}
    masks = {n: metrics.invented_mask(*views[n], [views[1]]) for n in views}
    pairs = invented.partners([1, 2, 3], views, seg, masks)
    assert pairs == {3: 2}  # frame 2 has no partner: only the reference came before, and it saw none of that
    rng = np.random.default_rng(1)
    world = rng.random((H, W + 20, 3))  # the wall's texture: frame at x shows columns 10x .. 10x + W
    consistent = {n: world[:, round(10 * x):round(10 * x) + W] for n, x in ((1, 0.0), (2, 1.0), (3, 1.2))}
    fickle = {n: rng.random((H, W, 3)) for n in views}  # invents anew on every frame
    res = invented.self_consistency({3: 2}, views, masks, {"consistent": consistent, "fickle": fickle})
    assert res["pixels"] > 0 and res["pairs"] == 1
    assert res["psnr_db"]["consistent"] > 60 and res["psnr_db"]["fickle"] < 12


def test_no_partner_in_the_same_segment_or_at_the_same_pose():
    wall = np.full((H, W), 2.0)
    views = {1: (wall, K(), cam(0.0)), 2: (wall, K(), cam(1.0)), 3: (wall, K(), cam(1.2))}
    masks = {n: metrics.invented_mask(*views[n], [views[1]]) for n in views}
    assert invented.partners([1, 2, 3], views, {1: 0, 2: 1, 3: 2}, masks) == {3: 2}
    assert invented.partners([1, 2, 3], views, {1: 0, 2: 1, 3: 1}, masks) == {}  # 2 and 3 share a segment
    views[3] = (wall, K(), cam(1.05))
    masks[3] = metrics.invented_mask(*views[3], [views[1]])
    assert invented.partners([1, 2, 3], views, {1: 0, 2: 1, 3: 2}, masks) == {}  # 3 is at 2's pose (revisit)


def test_contact_sheet_outlines_the_invented_pixels(tmp_path):
    import sheet
    from PIL import Image
    assert sheet.spread(list(range(1, 11)), 4, skip={1}) == [2, 5, 7, 10]
    assert sheet.spread([1, 2, 3], 6) == [1, 2, 3]
    frames = [2, 3]
    grey = {n: np.full((H, W, 3), 0.5) for n in frames}
    mask = np.zeros((H, W), bool)
    mask[5:15, 10:30] = True
    path = sheet.contact_sheet(str(tmp_path / "s.png"), frames, [("gt", grey), ("model", grey)],
                               {2: mask, 3: np.zeros((H, W), bool)}, "title")
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    scale = -(-sheet.MIN_CELL_WIDTH // W)
    cw, ch = W * scale, H * scale
    assert a.shape[1] >= 2 * cw and a.shape[0] >= 2 * ch
    magenta = np.all(a == sheet.OUTLINE, -1)
    # the outline is the mask's inner edge, in both rows of the first column, none in the second column
    assert magenta.sum() == 2 * (sheet.outline(mask).sum() * scale * scale)
    assert sheet.outline(mask).sum() == 2 * 20 + 2 * 8
    dimmed = sheet.mask_row(grey, {2: mask, 3: mask}, [2])
    assert list(dimmed) == [2] and np.all(dimmed[2][mask] == 0.5) and np.allclose(dimmed[2][~mask], 0.1)
