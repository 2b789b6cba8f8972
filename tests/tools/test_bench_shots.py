"""The shots bench's pooling and targets on known numbers (no bpy, fast)."""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench_shots  # noqa: E402
import metrics  # noqa: E402


def test_pooled_psnr_is_one_mse_over_every_mask():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 8, 8, 3)), rng.random((2, 8, 8, 3))
    masks = [rng.random((8, 8)) > 0.5, rng.random((8, 8)) > 0.7]
    p = bench_shots.Pooled()
    for x, y, m in zip(a, b, masks):
        p.add(x, y, m)
    p.add(a[0], b[0], np.zeros((8, 8), bool))  # an empty mask adds nothing
    sq = np.concatenate([((x - y) ** 2).mean(-1)[m] for x, y, m in zip(a, b, masks)])
    assert abs(p.psnr() - metrics.psnr_from_mse(float(sq.mean()))) < 1e-9
    assert bench_shots.Pooled().psnr() is None


def test_targets_compare_the_right_way_round():
    cs = {"psnr_db": {"gt": {"invented": 36.0, "invented_surfaces": 37.0}, "chained": {"invented": 35.0, "invented_surfaces": 37.5},
                      "parallel": {"invented": 31.0}}}
    sr = {"psnr_db": {"one_reference": {"first": 24.0}, "two_references": {"second_only": 20.0}}}
    t = bench_shots.targets(cs, sr)
    assert (t["cross_shot_gap_db"]["value"], t["cross_shot_gap_db"]["pass"]) == (1.0, True)
    assert (t["cross_shot_gain_db"]["value"], t["cross_shot_gain_db"]["pass"]) == (4.0, True)
    assert (t["cross_shot_surface_gap_db"]["value"], t["cross_shot_surface_gap_db"]["pass"]) == (-0.5, True)
    assert (t["second_reference_gap_db"]["value"], t["second_reference_gap_db"]["pass"]) == (4.0, False)
    cs["psnr_db"]["chained"]["invented"] = 33.0  # 3 dB below the ground truth's own, only 2 above parallel
    t = bench_shots.targets(cs, sr)
    assert not t["cross_shot_gap_db"]["pass"] and not t["cross_shot_gain_db"]["pass"]
