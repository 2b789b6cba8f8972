"""Image and geometry metrics for the bench: PSNR, SSIM, exact-depth warps, covisibility, revisits.

Pure numpy/torch, no bpy, no backend internals. Conventions match the job format: images are
[H, W, 3] float arrays in 0..1, depth is planar camera z per pixel (inf where nothing is hit), K is
the OpenCV 3x3 intrinsic matrix in pixels and c2w the 4x4 OpenCV camera-to-world matrix (+Z forward,
+Y down); pixel (u, v) has its centre at integer (u, v).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

DEPTH_TOL = 0.03   # a warped point is visible in the other camera when its depth agrees within 3 %


def _t(x, dtype=torch.float64):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


# -- image quality ----------------------------------------------------------------------------------
def mse(a, b, mask=None):
    """Mean squared error over the (masked) pixels and channels; nan when the mask is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = (a - b) ** 2
    if d.ndim == 3:
        d = d.mean(-1)
    if mask is not None:
        d = d[np.asarray(mask, bool)]
    return float(d.mean()) if d.size else float("nan")


def psnr_from_mse(m, peak=1.0):
    if m != m:
        return float("nan")
    return float("inf") if m == 0 else 10.0 * math.log10(peak * peak / m)


def psnr(a, b, mask=None, peak=1.0):
    """PSNR in dB of a against b over the masked pixels: inf for identical images, nan for an empty mask."""
    return psnr_from_mse(mse(a, b, mask), peak)


def _gauss(size=11, sigma=1.5):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(a, b, peak=1.0):
    """Per-pixel SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), averaged
    over the colour channels; borders use reflect padding so the map has the image's size."""
    x = _t(a, torch.float32)
    y = _t(b, torch.float32)
    x = x.permute(2, 0, 1)[None] if x.dim() == 3 else x[None, None]
    y = y.permute(2, 0, 1)[None] if y.dim() == 3 else y[None, None]
    C = x.shape[1]
    g = _gauss().float()
    pad = g.numel() // 2
    kh, kv = g[None, None, None, :].repeat(C, 1, 1, 1), g[None, None, :, None].repeat(C, 1, 1, 1)

    def blur(t):  # separable Gaussian, float32 (float64 grouped conv has no fast CPU path)
        t = F.conv2d(F.pad(t, (pad, pad, 0, 0), mode="reflect"), kh, groups=C)
        return F.conv2d(F.pad(t, (0, 0, pad, pad), mode="reflect"), kv, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s[0].mean(0).double().numpy()


def ssim(a, b, mask=None):
    s = ssim_map(a, b)
    if mask is not None:
        s = s[np.asarray(mask, bool)]
    return float(s.mean()) if s.size else float("nan")


# -- geometry ---------------------------------------------------------------------------------------
def unproject(depth, K, c2w):
    """[H, W] depth -> [H, W, 3] world points (float64 torch)."""
    d = _t(depth)
    H, W = d.shape
    K = _t(K)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    cam = torch.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], -1)
    M = _t(c2w)
    return cam @ M[:3, :3].T + M[:3, 3]


def project(points, K, c2w):
    """World points [..., 3] -> (u, v, z) in the camera."""
    M = torch.linalg.inv(_t(c2w))
    pc = points @ M[:3, :3].T + M[:3, 3]
    K = _t(K)
    z = pc[..., 2]
    return K[0, 0] * pc[..., 0] / z + K[0, 2], K[1, 1] * pc[..., 1] / z + K[1, 2], z


def backward_warp(src_img, src_depth, K_src, c2w_src, dst_depth, K_dst, c2w_dst, tol=DEPTH_TOL):
    """Resample a source image into the destination camera using the destination's exact depth.

    Returns (image [H, W, 3], valid [H, W]): valid where the destination pixel's surface point lands
    inside the source image, in front of it, and the source's own depth there agrees within `tol` (so
    the point was not hidden from the source). Colours are sampled bilinearly."""
    dd = _t(dst_depth)
    H, W = dd.shape
    Hs, Ws = np.asarray(src_depth).shape
    pts = unproject(torch.where(torch.isfinite(dd), dd, torch.ones_like(dd)), K_dst, c2w_dst)
    u, v, z = project(pts, K_src, c2w_src)
    ui, vi = torch.round(u), torch.round(v)
    inside = torch.isfinite(dd) & (z > 1e-6) & (ui >= 0) & (ui <= Ws - 1) & (vi >= 0) & (vi <= Hs - 1)
    sd = _t(src_depth)
    ds = sd[vi.clamp(0, Hs - 1).long(), ui.clamp(0, Ws - 1).long()]
    valid = inside & torch.isfinite(ds) & ((ds - z).abs() <= tol * z)
    img = _t(src_img).permute(2, 0, 1)[None]
    grid = torch.stack([u / max(Ws - 1, 1) * 2 - 1, v / max(Hs - 1, 1) * 2 - 1], -1)[None]
    grid = torch.where(torch.isfinite(grid), grid, torch.zeros_like(grid))
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return out.permute(1, 2, 0).numpy(), valid.numpy()


def covisible(ref_depth, K_ref, c2w_ref, depth, K, c2w, tol=DEPTH_TOL):
    """[H, W] bool: pixels of the camera (K, c2w, depth) whose surface point the reference camera saw."""
    dummy = np.zeros((*np.asarray(ref_depth).shape, 3))
    return backward_warp(dummy, ref_depth, K_ref, c2w_ref, depth, K, c2w, tol)[1]


def forward_warp(src_img, src_depth, K_src, c2w_src, K_dst, c2w_dst, H, W):
    """Splat every source pixel to its nearest destination pixel; the nearest depth wins (ties: lowest
    source index). Returns (image [H, W, 3], hit [H, W], depth [H, W])."""
    sd = _t(src_depth)
    ok = torch.isfinite(sd).flatten()
    pts = unproject(torch.where(torch.isfinite(sd), sd, torch.ones_like(sd)), K_src, c2w_src).reshape(-1, 3)
    u, v, z = project(pts, K_dst, c2w_dst)
    ui, vi = torch.round(u).long(), torch.round(v).long()
    ok &= (z > 1e-6) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    idx = torch.nonzero(ok)[:, 0]
    target, zz = vi[idx] * W + ui[idx], z[idx]
    zmin = torch.full((H * W,), float("inf"), dtype=torch.float64).scatter_reduce(0, target, zz, "amin")
    win = zz <= zmin[target]
    best = torch.full((H * W,), idx.numel(), dtype=torch.int64)
    best = best.scatter_reduce(0, target[win], torch.arange(idx.numel())[win], "amin")
    hit = best < idx.numel()
    colours = _t(src_img).reshape(-1, 3)[idx]
    out = torch.zeros(H * W, 3, dtype=torch.float64)
    out[hit] = colours[best[hit]]
    depth = torch.full((H * W,), float("inf"), dtype=torch.float64)
    depth[hit] = zz[best[hit]]
    return out.reshape(H, W, 3).numpy(), hit.reshape(H, W).numpy(), depth.reshape(H, W).numpy()


def fill_cracks(img, hit):
    """Fill unsplatted pixels from their neighbours with a mask-weighted image pyramid (push-pull)."""
    x = _t(img).permute(2, 0, 1)
    valid = _t(hit)[None]
    if valid.sum() == 0:
        return np.asarray(img, np.float64)
    levels = [(x * valid, valid)]
    while min(levels[-1][1].shape[-2:]) > 1:
        s, w = levels[-1]
        levels.append((F.avg_pool2d(s[None], 2, ceil_mode=True)[0], F.avg_pool2d(w[None], 2, ceil_mode=True)[0]))
    s, w = levels[-1]
    filled = s / w.clamp_min(1e-12)
    for s, w in reversed(levels[:-1]):
        up = F.interpolate(filled[None], size=s.shape[-2:], mode="bilinear", align_corners=False)[0]
        filled = torch.where(w > 1e-9, s / w.clamp_min(1e-12), up)
    out = torch.where(valid.bool(), x, filled)
    return out.permute(1, 2, 0).numpy()


def oracle(ref_img, ref_depth, K_ref, c2w_ref, K, c2w, H, W):
    """The ceiling of pure reprojection: the reference pixels forward-warped with exact depth and
    poses (nearest-pixel splats, min-depth z-buffer), cracks filled by push-pull."""
    img, hit, _ = forward_warp(ref_img, ref_depth, K_ref, c2w_ref, K, c2w, H, W)
    return fill_cracks(img, hit)


def warp_error(prev_img, cur_img, prev_depth, cur_depth, K_prev, c2w_prev, K_cur, c2w_cur, tol=DEPTH_TOL):
    """Mean absolute error (0..1) between a frame and its predecessor warped into it with exact depth
    and poses, over the pixels both cameras see; nan when none are."""
    warped, valid = backward_warp(prev_img, prev_depth, K_prev, c2w_prev, cur_depth, K_cur, c2w_cur, tol)
    if not valid.any():
        return float("nan")
    return float(np.abs(warped - np.asarray(cur_img, np.float64))[valid].mean())


# -- camera paths -----------------------------------------------------------------------------------
def pose_distance(a, b):
    """(translation distance, rotation angle in degrees) between two 4x4 camera-to-world matrices."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dist = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    R = a[:3, :3].T @ b[:3, :3]
    ang = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))
    return dist, ang


def revisits(poses, max_dist=0.15, max_angle=5.0, away_dist=1.0, away_angle=30.0):
    """Indices i of poses that return close (<= max_dist, <= max_angle) to an earlier pose j after the
    camera went away in between (some pose between j and i is >= away_dist or >= away_angle from pose
    i). Returns {i: j} with the earliest such j."""
    out = {}
    n = len(poses)
    for i in range(n):
        far_since = False
        # walk back from i: once a far pose is passed, any close pose further back is a revisit
        for j in range(i - 1, -1, -1):
            d, a = pose_distance(poses[i], poses[j])
            if d >= away_dist or a >= away_angle:
                far_since = True
            elif far_since and d <= max_dist and a <= max_angle:
                out[i] = j
    return out


def occluded_by(depth, K, c2w, other_depth, other_ids, oid, K_other, c2w_other, tol=DEPTH_TOL):
    """[H, W] bool: pixels of this camera whose surface point the other camera saw hidden behind object
    `oid` (or any of the ids in a collection): its id mask shows that object there, in front of the point.
    The other camera's depth and ids are those of its own frame, so an object that moved or changed shape
    in between hides what it hid on that frame."""
    d = _t(depth)
    H, W = d.shape
    pts = unproject(torch.where(torch.isfinite(d), d, torch.ones_like(d)), K, c2w)
    u, v, z = project(pts, K_other, c2w_other)
    ui, vi = torch.round(u), torch.round(v)
    Ho, Wo = np.asarray(other_depth).shape
    inside = torch.isfinite(d) & (z > 1e-6) & (ui >= 0) & (ui <= Wo - 1) & (vi >= 0) & (vi <= Ho - 1)
    vi, ui = vi.clamp(0, Ho - 1).long(), ui.clamp(0, Wo - 1).long()
    od = _t(other_depth)[vi, ui]
    ids = np.asarray(other_ids).astype(np.int64)
    mine = np.isin(ids, list(oid)) if isinstance(oid, (set, frozenset, list, tuple)) else ids == oid
    oi = torch.as_tensor(mine)[vi, ui]
    return (inside & oi & (od < z * (1 - tol))).numpy()


# -- invented content: what no reference image showed ---------------------------------------------------
INVENTED_TOL = 0.02   # depth agreement for "the reference saw this point"
INVENTED_ERODE = 3    # pixels taken off the invented mask's edge (the seen/unseen boundary is not invention)
SWD_DIRECTIONS = 128
SWD_PATCH = 7
SWD_MAX_PATCHES = 4096


def unseen(depth, K, c2w, refs, tol=INVENTED_TOL):
    """[H, W] bool: pixels with a surface (finite depth) whose point none of the reference views saw.

    refs: a list of (depth [Hr, Wr], K, c2w) views; a point is seen by a view when it projects inside it, in
    front, and that view's own depth there agrees within `tol` (relative)."""
    seen = np.zeros(np.asarray(depth).shape, bool)
    for ref_depth, K_ref, c2w_ref in refs:
        seen |= covisible(ref_depth, K_ref, c2w_ref, depth, K, c2w, tol)
    return np.isfinite(np.asarray(depth, np.float64)) & ~seen


def erode(mask, radius=INVENTED_ERODE):
    """Binary erosion by a (2 radius + 1)^2 square; outside the image counts as inside the mask, so a region
    that reaches the border keeps its border pixels."""
    m = torch.as_tensor(np.asarray(mask, bool))
    if radius <= 0:
        return m.numpy().copy()
    out = -F.max_pool2d(-(m.float()[None, None]), 2 * radius + 1, stride=1, padding=radius)
    return (out[0, 0] > 0.5).numpy()


def invented_mask(depth, K, c2w, refs, tol=INVENTED_TOL, radius=INVENTED_ERODE):
    """[H, W] bool: the invented pixels of a frame: `unseen` by every reference view, eroded by `radius`."""
    return erode(unseen(depth, K, c2w, refs, tol), radius)


def luminance(img):
    """[H, W, 3] -> [H, W] mean of R, G and B."""
    return np.asarray(img, np.float64).mean(-1)


def gradient_energy(img, mask):
    """sum of |grad L|^2 over the mask with forward differences (a difference counts when both of its pixels
    are in the mask)."""
    L, m = luminance(img), np.asarray(mask, bool)
    gx = np.diff(L, axis=1) ** 2 * (m[:, 1:] & m[:, :-1])
    gy = np.diff(L, axis=0) ** 2 * (m[1:] & m[:-1])
    return float(gx.sum() + gy.sum())


def detail_ratio(img, gt, mask):
    """gradient_energy of img over that of gt on the same pixels: blur -> 0, the ground truth -> 1, noise > 1;
    nan where the ground truth has no gradient there."""
    den = gradient_energy(gt, mask)
    return gradient_energy(img, mask) / den if den > 0 else float("nan")


def patch_centres(mask, size=SWD_PATCH, limit=SWD_MAX_PATCHES, seed=0):
    """(v, u) int arrays of mask pixels whose size x size patch lies inside the image; at most `limit`, drawn
    with a fixed seed so every image of the same frame is sampled at the same pixels."""
    m = np.asarray(mask, bool).copy()
    r = size // 2
    m[:r], m[m.shape[0] - r:], m[:, :r], m[:, m.shape[1] - r:] = False, False, False, False
    v, u = np.nonzero(m)
    if len(v) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(v), limit, replace=False))
        v, u = v[keep], u[keep]
    return v, u


def patches(img, v, u, size=SWD_PATCH, remove_mean=False):
    """[N, size * size * 3] flattened patches of img centred at (v, u); with remove_mean each patch's mean
    colour (per channel) is subtracted, leaving its texture."""
    a = np.asarray(img, np.float64)
    r = size // 2
    dv, du = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    p = a[v[:, None, None] + dv, u[:, None, None] + du]  # [N, size, size, 3]
    if remove_mean:
        p = p - p.mean((1, 2), keepdims=True)
    return p.reshape(len(v), -1)


def swd_directions(dim, n=SWD_DIRECTIONS, seed=0):
    """[dim, n] fixed random unit directions."""
    d = np.random.default_rng(seed).standard_normal((dim, n))
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def sorted_projections(a, directions):
    """[N, D] vectors -> [N, n] their projections on the directions [D, n], each column sorted (float32)."""
    return np.sort(np.asarray(a, np.float32) @ np.asarray(directions, np.float32), axis=0)


def sliced_wasserstein(a, b, directions=None):
    """Sliced Wasserstein-1 distance x100 between two equal-size sets of vectors [N, D]: each set projected on
    fixed random unit directions, sorted, mean absolute difference of the sorted projections."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"sliced_wasserstein needs two non-empty sets of the same shape, got {a.shape}, {b.shape}")
    d = swd_directions(a.shape[1]) if directions is None else directions
    return swd_of_projections(sorted_projections(a, d), sorted_projections(b, d))


def swd_of_projections(pa, pb):
    """SWD x100 from two sets' sorted_projections."""
    return 100.0 * float(np.abs(pa - pb).mean())


class PatchSWD:
    """SWD of many images against one ground truth at the same pixels: the ground truth's patches are projected
    once. raw: colour and texture; texture: each patch's mean colour removed.

    scale s > 1 measures the images averaged over s x s blocks (downsample), at the centres where the whole
    block is in the mask (reduce_mask): stripes, blocks and repeats wider than a 7 x 7 patch show there."""

    def __init__(self, gt, mask, seed=0, scale=1, texture_only=False):
        self.scale, self.texture_only = scale, texture_only
        small = reduce_mask(mask, scale)
        self.v, self.u = patch_centres(small, seed=seed)
        self.count = len(self.v)
        self.directions = swd_directions(SWD_PATCH * SWD_PATCH * 3)
        self.gt = self._project(gt) if self.count else None

    def _project(self, img):
        img = downsample(img, self.scale)
        raw = None if self.texture_only else sorted_projections(patches(img, self.v, self.u), self.directions)
        return raw, sorted_projections(patches(img, self.v, self.u, remove_mean=True), self.directions)

    def __call__(self, img):
        """(raw, texture) SWD of img; (nan, nan) when no patch fits, raw nan when texture_only."""
        if not self.count:
            return float("nan"), float("nan")
        raw, tex = self._project(img)
        return (float("nan") if raw is None else swd_of_projections(raw, self.gt[0]),
                swd_of_projections(tex, self.gt[1]))


def patch_swd(img, gt, mask, seed=0, scale=1):
    """(raw, texture-only) SWD between the 7x7x3 patches of img and of gt at the same invented pixels, and the
    number of patches used; (nan, nan, 0) when no patch fits."""
    swd = PatchSWD(gt, mask, seed, scale)
    return (*swd(img), swd.count)


def downsample(img, s):
    """[H, W, C] averaged over s x s blocks: [H // s, W // s, C] (the rows and columns past a whole block dropped)."""
    a = np.asarray(img, np.float64)
    if s == 1:
        return a
    H, W = a.shape[0] // s * s, a.shape[1] // s * s
    return a[:H, :W].reshape(H // s, s, W // s, s, *a.shape[2:]).mean((1, 3))


def reduce_mask(mask, s):
    """[H, W] bool -> [H // s, W // s]: a block counts when all of its s x s pixels are in the mask."""
    m = np.asarray(mask, bool)
    if s == 1:
        return m
    H, W = m.shape[0] // s * s, m.shape[1] // s * s
    return m[:H, :W].reshape(H // s, s, W // s, s).all((1, 3))


def shifted(img, dx=4):
    """The image moved dx pixels to the right, its first column repeated into the gap."""
    a = np.asarray(img, np.float64)
    return np.concatenate([np.repeat(a[:, :1], dx, axis=1), a[:, :-dx]], axis=1) if dx else a.copy()


def gaussian_blur(img, sigma=3.0):
    """Separable Gaussian blur (radius 3 sigma, reflect padding) of an [H, W, 3] image."""
    x = _t(img, torch.float32).permute(2, 0, 1)[None]
    r = int(math.ceil(3 * sigma))
    g = _gauss(2 * r + 1, sigma).float()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g[None, None, None, :].repeat(C, 1, 1, 1), groups=C)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g[None, None, :, None].repeat(C, 1, 1, 1), groups=C)
    return x[0].permute(1, 2, 0).double().numpy()


def visible_from(points, K, c2w, depth, tol=DEPTH_TOL):
    """[N] bool: world points [N, 3] (numpy) that the camera (K, c2w) with its depth map sees: inside the image,
    in front, its depth at the nearest pixel within tol. Cheap partner search for self-consistency."""
    M = np.linalg.inv(np.asarray(c2w, np.float64))
    pc = points @ M[:3, :3].T + M[:3, 3]
    z = pc[:, 2]
    K = np.asarray(K, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(K[0, 0] * pc[:, 0] / z + K[0, 2])
        v = np.round(K[1, 1] * pc[:, 1] / z + K[1, 2])
    H, W = np.asarray(depth).shape
    ok = (z > 1e-6) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    d = np.full(len(z), np.inf)
    d[ok] = np.asarray(depth)[v[ok].astype(int), u[ok].astype(int)]
    return ok & np.isfinite(d) & (np.abs(d - z) <= tol * z)
