"""The UV rasteriser the bake reads the memory with (core/texels.py), on known UV layouts, without Blender."""
import numpy as np
import pytest

from tests.addon.loader import addon_module

texels = addon_module("core.texels")


def centres(t):
    """The UV of each texel's centre."""
    r, c = np.divmod(t.index, t.width)
    return np.stack([(c + 0.5) / t.width, 1.0 - (r + 0.5) / t.height], axis=1)


def quad(lo, hi, diagonal="up"):
    """Two UV triangles of the square [lo, hi]^2, split along one of its diagonals (counter-clockwise)."""
    a, b, c, d = (lo, lo), (hi, lo), (hi, hi), (lo, hi)
    return np.array([[a, b, c], [a, c, d]] if diagonal == "up" else [[a, b, d], [b, c, d]], dtype=np.float64)


def test_texel_centres_inside_a_quad_each_once():
    uv = quad(0.25, 0.75)
    t = texels.rasterise(uv, 8, 8)
    # centres (k + 0.5) / 8 inside [0.25, 0.75]: k = 2..5 along each axis, 16 texels, each listed once
    assert len(t) == 16 and len(np.unique(t.index)) == 16
    rows, cols = np.divmod(t.index, 8)
    assert sorted(set(rows.tolist())) == [2, 3, 4, 5] and sorted(set(cols.tolist())) == [2, 3, 4, 5]
    # a texel just outside the square is not drawn, whichever side
    assert not np.isin([1 * 8 + 2, 6 * 8 + 2, 2 * 8 + 1, 2 * 8 + 6], t.index).any()


def test_barycentrics_give_back_the_texel_centre():
    uv = np.array([[[0.1, 0.05], [0.93, 0.2], [0.4, 0.97]]])
    t = texels.rasterise(uv, 64, 32)
    assert len(t) > 500
    assert (t.bary >= 0).all() and np.allclose(t.bary.sum(1), 1.0)
    np.testing.assert_allclose(np.einsum("ij,ijk->ik", t.bary, uv[t.tri]), centres(t), atol=1e-12)
    # the triangle's area in texels, up to its outline
    assert abs(len(t) - texels.areas(uv)[0] * 64 * 32) < 0.1 * len(t)
    # clockwise (a mirrored island) draws the same texels with the same weights, corners swapped
    flipped = texels.rasterise(uv[:, [0, 2, 1]], 64, 32)
    np.testing.assert_array_equal(flipped.index, t.index)
    np.testing.assert_allclose(flipped.bary[:, [0, 2, 1]], t.bary, atol=1e-12)


@pytest.mark.parametrize("diagonal", ["up", "down"])
def test_a_seam_through_texel_centres_leaves_no_gap_and_no_double(diagonal):
    # the whole unit square on a 4 x 4 texture: the diagonal passes exactly through four texel centres, which
    # both triangles reach; each texel belongs to one triangle, the lower index where both claim it
    uv = quad(0.0, 1.0, diagonal)
    t = texels.rasterise(uv, 4, 4)
    np.testing.assert_array_equal(t.index, np.arange(16))
    rows, cols = np.divmod(t.index, 4)
    on_seam = (rows + cols == 3) if diagonal == "up" else (rows == cols)
    assert on_seam.sum() == 4 and (t.tri[on_seam] == 0).all()
    assert set(t.tri[~on_seam].tolist()) == {0, 1}
    # on the seam the corner of triangle 0 off the diagonal weighs nothing
    assert np.allclose(t.bary[on_seam, 1 if diagonal == "up" else 0], 0.0)
    np.testing.assert_allclose(np.einsum("ij,ijk->ik", t.bary, uv[t.tri]), centres(t), atol=1e-12)


def test_islands_seams_and_the_outside():
    # two islands side by side (two faces of a box, cut apart), one triangle partly outside the unit square, a
    # degenerate one: the islands' texels once each, nothing outside 0..1, nothing from the sliver
    left, right = quad(0.0, 0.5), quad(0.5, 1.0)
    right[..., 1] -= 0.5
    outside = np.array([[[0.9, 0.9], [1.4, 0.9], [0.9, 1.4]]])
    sliver = np.array([[[0.2, 0.8], [0.4, 0.8], [0.3, 0.8]]])
    uv = np.concatenate([left, right, outside, sliver])
    t = texels.rasterise(uv, 16, 16)
    assert len(np.unique(t.index)) == len(t)
    assert not (t.tri == 5).any()
    c = centres(t)
    assert (c >= 0).all() and (c <= 1).all()
    # the two islands are 8 x 8 texels each, the corner triangle adds the texels of its part inside the square
    assert np.isin(t.tri, [0, 1]).sum() == 64 and np.isin(t.tri, [2, 3]).sum() == 64
    assert (t.tri == 4).sum() == 4  # centres 0.906 and 0.969 each way


def test_surface_points_and_normals_of_a_quad():
    uv = quad(0.0, 1.0)
    # the square mapped onto a wall in the world: u along x (2 units), v along z (1 unit), facing -y
    corners = np.array([[[0, 0, 0], [2, 0, 0], [2, 0, 1]], [[0, 0, 0], [2, 0, 1], [0, 0, 1]]], dtype=np.float64)
    t = texels.rasterise(uv, 32, 16)
    p = texels.surface_points(corners, t)
    c = centres(t)
    np.testing.assert_allclose(p, np.stack([2 * c[:, 0], np.zeros(len(t)), c[:, 1]], axis=1), atol=1e-12)
    n = texels.outward_normals(corners)
    np.testing.assert_allclose(n, [[0, -1, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(texels.outward_normals(corners, -1.0), -n)
    assert texels.areas(corners).sum() == pytest.approx(2.0)


def test_texture_size_follows_the_footprint():
    # 2 square units over half the unit square: the whole texture spans a 2 x 2 chart; 5 mm a pixel: 400 -> 512
    assert texels.texture_size(2.0, 0.5, 0.005) == 512
    assert texels.texture_size(2.0, 0.5, 0.01) == 256
    assert texels.texture_size(2.0, 0.5, 0.001) == texels.AUTO_MAX
    assert texels.texture_size(2.0, 0.5, 10.0) == texels.AUTO_MIN
    assert texels.texture_size(0.0, 0.5, 0.01) == texels.AUTO_MIN


def test_the_memory_is_read_no_finer_than_it_was_seen():
    assert texels.read_size(1024, 1024) == 1024
    assert texels.read_size(1024, 256) == 512  # twice what the flythrough saw
    assert texels.read_size(1024, 64) == 128
    assert texels.read_size(4096, 64) == 128
    assert texels.read_size(1000, 64) == 250  # 1000 / 4: at least twice 64
    assert texels.read_size(100, 64) == 100
