"""Exact planar depth of triangles at pixel centres, on the CPU with numpy: the frames' depth and the
lamps' shadow maps.

A ray ``t * d`` with ``d = (x, y, 1)`` hits triangle (v0, v1, v2) iff ``d . (v1 x v2)``,
``d . (v2 x v0)``, ``d . (v0 x v1)`` all share the sign of ``det = v0 . (v1 x v2)`` (homogeneous
rasterisation). Each of these is affine in the pixel coordinates, so no near-plane clipping is needed;
the hit depth is ``det / (d . n)`` with ``n`` the sum of the three cross products, which is the exact
ray/plane intersection. Shared edges evaluate to exactly negated values in both triangles, so closed
meshes have no cracks. Identical to ray casting up to silhouette ties, and much faster than per-pixel
``scene.ray_cast``.
"""
import numpy as np

# Candidate pixels tested at once (memory bound: ~100 bytes each); read on every call.
BATCH = 1 << 22


def depth_map(tris: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """[H, W] float64 planar depth of camera-space (OpenCV) triangles ``tris`` [N, 3, 3]; inf where
    nothing is hit."""
    return _rasterise(tris, K, width, height, None)[0]


def depth_and_hit(tris: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``depth_map`` and [H, W] int64 ``hit``: index + 1 of the triangle seen at each pixel, 0 where none."""
    return _rasterise(tris, K, width, height, np.arange(1, len(tris) + 1, dtype=np.int64))


def _cross(a, b):
    """Row-wise cross product; cross(b, a) is exactly -cross(a, b)."""
    ax, ay, az = a[:, 0], a[:, 1], a[:, 2]
    bx, by, bz = b[:, 0], b[:, 1], b[:, 2]
    return np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=1)


def _rasterise(tris, K, width, height, labels):
    """Depth [H, W] and, with ``labels`` [N], the label of the nearest triangle at each pixel (else None)."""
    depth = np.full(height * width, np.inf, dtype=np.float64)
    seen = None if labels is None else np.zeros(height * width, dtype=labels.dtype)

    def result():
        return depth.reshape(height, width), None if seen is None else seen.reshape(height, width)

    if len(tris) == 0:
        return result()
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # Cull triangles entirely behind the camera plane (and non-finite ones).
    keep = np.flatnonzero((np.max(tris[..., 2], axis=1) > 0.0) & np.all(np.isfinite(tris), axis=(1, 2)))
    tris = tris[keep]
    if len(tris) == 0:
        return result()
    u0, w0, bw, bh = _pixel_boxes(*_screen_boxes(tris, fx, fy, cx, cy), width, height)
    on_screen = np.flatnonzero((bw > 0) & (bh > 0))
    idx, det, coef = _edge_functions(tris[on_screen], fx, fy, cx, cy)
    if len(idx) == 0:
        return result()
    sel = on_screen[idx]
    u0, w0, bw, bh = u0[sel], w0[sel], bw[sel], bh[sel]
    if labels is not None:
        labels = labels[keep[sel]]
    _scan(_buckets(bw, bh, width, height), u0, w0, bw, bh, det, coef, labels, depth, seen, width, height)
    return result()


def _screen_boxes(tris, fx, fy, cx, cy):
    """Projected bounding boxes (umin, umax, vmin, vmax), each [N].

    Triangles fully in front: the corners projected. Triangles crossing the camera plane: the part with
    z >= eps projected (corners in front plus edge/plane intersections), which is conservative up to a
    sliver of relative size 1e-9 around the camera centre.
    """
    z = tris[..., 2]
    scale = np.max(np.abs(tris), axis=(1, 2))
    eps = np.maximum(scale * 1e-9, 1e-300)
    front = np.min(z, axis=1) >= eps
    umin = np.empty(len(tris))
    umax = np.empty(len(tris))
    vmin = np.empty(len(tris))
    vmax = np.empty(len(tris))
    tf = tris[front]
    pu = fx * (tf[..., 0] / tf[..., 2]) + cx
    pv = fy * (tf[..., 1] / tf[..., 2]) + cy
    umin[front], umax[front] = pu.min(axis=1), pu.max(axis=1)
    vmin[front], vmax[front] = pv.min(axis=1), pv.max(axis=1)
    cross_plane = ~front
    if np.any(cross_plane):
        tc = tris[cross_plane]
        zc = tc[..., 2]
        ze = eps[cross_plane]
        pts = [tc]
        for a, b in ((0, 1), (1, 2), (2, 0)):
            za, zb = zc[:, a], zc[:, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (ze - za) / (zb - za)
            ok = (t > 0.0) & (t < 1.0) & np.isfinite(t)
            t = np.where(ok, t, 0.0)[:, None]
            p = tc[:, a] + t * (tc[:, b] - tc[:, a])
            p[:, 2] = np.where(ok, ze, -1.0)  # unused points get z < 0: ignored
            pts.append(p[:, None, :])
        pts = np.concatenate(pts, axis=1)  # [n, 6, 3]
        pz = pts[..., 2]
        valid = pz >= ze[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            pu = fx * (pts[..., 0] / pz) + cx
            pv = fy * (pts[..., 1] / pz) + cy
        big = 1e18
        pu = np.clip(pu, -big, big)
        pv = np.clip(pv, -big, big)
        umin[cross_plane] = np.where(valid, pu, big).min(axis=1)
        umax[cross_plane] = np.where(valid, pu, -big).max(axis=1)
        vmin[cross_plane] = np.where(valid, pv, big).min(axis=1)
        vmax[cross_plane] = np.where(valid, pv, -big).max(axis=1)
    return umin, umax, vmin, vmax


def _pixel_boxes(umin, umax, vmin, vmax, width, height):
    """First pixel column u0 and row w0 and the box's width and height in pixel centres, each [N]: a hair
    wider than the projected box (the edge functions decide coverage exactly), clamped to the image."""
    tol = 1e-6
    u0 = np.clip(np.ceil(umin - tol), 0, width).astype(np.int64)
    u1 = np.clip(np.floor(umax + tol), -1, width - 1).astype(np.int64)
    w0 = np.clip(np.ceil(vmin - tol), 0, height).astype(np.int64)
    w1 = np.clip(np.floor(vmax + tol), -1, height - 1).astype(np.int64)
    return u0, w0, u1 - u0 + 1, w1 - w0 + 1


def _edge_functions(tris, fx, fy, cx, cy):
    """For the triangles that are not degenerate: their indices [n], det [n] and coef [n, 12] (three edge
    functions, then the ray/plane denominator, each as A*u + B*v + C in pixel coordinates)."""
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    c0 = _cross(v1, v2)
    c1 = _cross(v2, v0)
    c2 = _cross(v0, v1)
    det = np.einsum("ij,ij->i", v0, c0)
    idx = np.nonzero((det != 0.0) & np.isfinite(det))[0]
    det = det[idx]
    sgn = np.sign(det)[:, None]
    n = (c0 + c1 + c2)[idx]

    def affine(c):
        # c . d(u, v) with d = ((u - cx) / fx, (v - cy) / fy, 1) as A*u + B*v + C.
        # Negating c negates A, B, C exactly, so a shared edge evaluates to
        # exactly opposite values in its two triangles (no cracks, no overlap
        # beyond exact ties).
        return np.stack(
            [c[:, 0] / fx, c[:, 1] / fy,
             c[:, 2] - c[:, 0] * (cx / fx) - c[:, 1] * (cy / fy)],
            axis=1,
        )

    coef = np.concatenate(
        [affine(c0[idx] * sgn), affine(c1[idx] * sgn), affine(c2[idx] * sgn), affine(n)],
        axis=1,
    )
    return idx, det, coef


def _buckets(bw, bh, width, height):
    """Triangle indices grouped by bounding-box size, so each group's boxes are tested with broadcasting
    ([n, bh, bw] per group). Sizes are powers of two: up to 4x wasted tests, fewest groups."""
    sizes = 2 ** np.arange(0, 31)
    sizes = sizes[sizes < max(width, height)]
    sizes = np.append(sizes, max(width, height))
    kx = np.searchsorted(sizes, bw)
    ky = np.searchsorted(sizes, bh)
    key = ky * len(sizes) + kx
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    return np.split(order, bounds)


def _scan(groups, u0, w0, bw, bh, det, coef, labels, depth, seen, width, height):
    """Test every group's candidate pixels against its triangles' edge functions, in batches of at most
    BATCH candidates, and keep the nearest hit per pixel in ``depth`` (and its label in ``seen``)."""
    budget = BATCH
    hits = []  # (triangle, u, v) of candidates inside their triangle, not yet depth-tested
    n_hits = 0
    for g in groups:
        gy = int(bh[g].max())
        gx = int(bw[g].max())
        rows = gy if gx * gy <= budget else max(1, budget // gx)
        step = max(1, budget // (gx * rows))
        dx = np.arange(gx, dtype=np.float64)
        for r0 in range(0, gy, rows):
            dy = np.arange(r0, min(gy, r0 + rows), dtype=np.float64)
            for s0 in range(0, len(g), step):
                t = g[s0:s0 + step]
                uf = u0[t].astype(np.float64)[:, None, None] + dx[None, None, :]
                vf = w0[t].astype(np.float64)[:, None, None] + dy[None, :, None]
                cf = coef[t]
                # Boxes smaller than the bucket's: points past u1 / w1 are still
                # tested exactly, only the image bounds need masking.
                inside = None
                for k in range(0, 9, 3):
                    e = cf[:, k, None, None] * uf + cf[:, k + 1, None, None] * vf
                    e += cf[:, k + 2, None, None]
                    inside = (e >= 0.0) if inside is None else (inside & (e >= 0.0))
                if uf.max() >= width or vf.max() >= height:
                    inside &= (uf < width) & (vf < height)
                ti, yi, xi = np.nonzero(inside)
                if len(ti) == 0:
                    continue
                tt = t[ti]
                hits.append((tt, u0[tt] + xi, w0[tt] + r0 + yi))
                n_hits += len(tt)
                if n_hits > budget:
                    _depth_test(hits, det, coef, labels, depth, seen, width)
                    n_hits = 0
    if hits:
        _depth_test(hits, det, coef, labels, depth, seen, width)


def _depth_test(hits, det, coef, labels, depth, seen, width):
    """Ray/plane depth of the pending candidates; the nearest so far wins each pixel. Empties ``hits``."""
    tt = np.concatenate([h[0] for h in hits])
    uu = np.concatenate([h[1] for h in hits])
    vv = np.concatenate([h[2] for h in hits])
    hits.clear()
    with np.errstate(divide="ignore", invalid="ignore"):
        d = det[tt] / (coef[tt, 9] * uu + coef[tt, 10] * vv + coef[tt, 11])
    ok = (d > 0.0) & np.isfinite(d)
    pix = vv[ok] * width + uu[ok]
    np.minimum.at(depth, pix, d[ok])
    if seen is not None:
        # the label of whichever candidate holds the minimum so far; a later, nearer batch overwrites it
        won = d[ok] == depth[pix]
        seen[pix[won]] = labels[tt[ok][won]]
