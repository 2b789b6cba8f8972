"""The bench's figures on invented pixels: what the camera sees that no reference image showed.

Per frame the invented mask (the bench's own maps: `actors.invented_masks`, actors judged along their surface;
`frame_masks` here for rigid objects from camera and object poses), then for each image set (the model, the
compared model, the other layout of the scene, and rows the bench makes from the ground truth so the numbers
can be read) PSNR, detail ratio and patch SWD at three scales on the mask, and self-consistency across
segments. docs/benchmarks.md defines every figure. numpy/torch only, no bpy.
"""
import numpy as np

import metrics

SHIFT_PX = 4         # the ground truth shifted right by this much: a real view, misaligned
BLUR_SIGMA = 3.0     # the ground truth blurred: what a smooth fill looks like at best
MIN_PATCHES = 64     # frames with fewer invented patch centres do not count in the SWD (too few samples)
PAIR_POINTS = 2000   # invented points per frame used to pick its self-consistency partner
MIN_PAIR_PIXELS = 64  # a pair shares at least this many invented pixels
SAME_POSE = (0.15, 5.0)  # a partner this close in pose is a revisit (its own figure), not another view
SWD_SCALES = (1, 2, 4)   # texture SWD on the image, its 2x2- and its 4x4-averaged version
MIN_SHOWN_PIXELS = 49    # an object a reference shows fewer pixels of (one 7 x 7 patch) counts as never shown

REFERENCE_ROWS = ("gt_shifted", "gt_blurred", "flat_mean", "reference_copy")
ROW_LABELS = {"gt_shifted": f"ground truth shifted {SHIFT_PX} px", "gt_blurred": f"ground truth blurred (sigma {BLUR_SIGMA:g} px)",
              "flat_mean": "flat: the ground truth frame's mean colour", "reference_copy": "a copy of the reference image",
              "other_layout": "the other layout (same scene, textures laid out differently)"}


def frame_masks(order, views, refs, ids=None, poses=None):
    """{frame: [H, W] bool invented mask}. views: {frame: (depth, K, c2w)}; refs: reference frame numbers.

    With ids ({frame: [H, W] object id, 0 = static}) and poses ({frame: {id: 4x4 object-to-world}}) each moving
    object's pixels are judged against the reference views carried along with that object (a face the
    reference showed stays seen as the object moves), and the static pixels against the static world only."""
    out = {}
    for n in order:
        depth, K, c2w = views[n]
        if ids is None:
            out[n] = metrics.invented_mask(depth, K, c2w, [views[r] for r in refs])
            continue
        static = np.where(ids[n] == 0, depth, np.inf)
        unseen = metrics.unseen(static, K, c2w, [views[r] for r in refs])
        for oid in poses[n]:
            mine = np.where(ids[n] == oid, depth, np.inf)
            if not np.isfinite(mine).any():
                continue
            carried = [(np.where(ids[r] == oid, views[r][0], np.inf), views[r][1],
                        poses[n][oid] @ np.linalg.inv(poses[r][oid]) @ views[r][2]) for r in refs]
            unseen |= metrics.unseen(mine, K, c2w, carried)
        out[n] = metrics.erode(unseen)
    return out


def reference_images(gt, n, reference):
    """The rows made from the ground truth for frame n: {row: [H, W, 3]}."""
    g = gt[n]
    return {"gt_shifted": metrics.shifted(g, SHIFT_PX), "gt_blurred": metrics.gaussian_blur(g, BLUR_SIGMA),
            "flat_mean": np.broadcast_to(g.mean((0, 1)), g.shape), "reference_copy": reference}


def image_figures(order, gt, masks, images, reference, swd=True, scales=SWD_SCALES, same=None, fixed=()):
    """PSNR, detail ratio and SWD on the invented pixels for each image set.

    images: {name: {frame: [H, W, 3]}}; the reference rows are added here. Returns {name: figures} with
    psnr_db (pooled over all invented pixels), detail_ratio (pooled gradient energies), and with swd: swd_raw and
    swd_texture at full size, swd_texture_<s> on the images averaged over s x s blocks (the mask reduced
    alike), each the per-frame SWD's mean weighted by the frame's patch count (frames with fewer than
    MIN_PATCHES patches at that scale left out); psnr_per_frame.

    same: {frame: key}, frames of one key having the same ground truth and mask (a path that repeats its
    poses): the reference rows and the image sets named in `fixed` (made from the ground truth, e.g. the other
    layout) are measured once per key, and the patch centres are drawn with the key as seed."""
    names = list(images) + list(REFERENCE_ROWS)
    fixed = set(fixed) | set(REFERENCE_ROWS)
    acc = {m: {"sse": 0.0, "px": 0, "grad": 0.0, "grad_gt": 0.0, "swd": {s: [] for s in scales},
               "per_frame": {}} for m in names}
    memo = {}
    for n in order:
        mask = masks.get(n)
        if mask is None or not mask.any():
            continue
        key = n if same is None else same[n]
        rows = {}
        g_gt = metrics.gradient_energy(gt[n], mask)
        swds = None

        def measure(img):
            nonlocal swds
            if swds is None:
                swds = {s: metrics.PatchSWD(gt[n], mask, seed=key, scale=s, texture_only=s != 1)
                        for s in scales} if swd else {}
                swds = {s: x for s, x in swds.items() if x.count >= MIN_PATCHES}
            return (metrics.mse(img, gt[n], mask), metrics.gradient_energy(img, mask),
                    [(s, (*x(img), x.count)) for s, x in swds.items()])
        for m in names:
            if m in fixed and (m, key) in memo:
                err, grad, swd_rows = memo[m, key]
            else:
                if m not in images and not rows:
                    rows = reference_images(gt, n, reference)
                err, grad, swd_rows = measure(images[m][n] if m in images else rows[m])
                if m in fixed:
                    memo[m, key] = err, grad, swd_rows
            a = acc[m]
            a["sse"] += err * int(mask.sum())
            a["px"] += int(mask.sum())
            a["grad"] += grad
            a["grad_gt"] += g_gt
            a["per_frame"][str(n)] = metrics.psnr_from_mse(err)
            for s, row in swd_rows:
                a["swd"][s].append(row)
    out = {}
    for m, a in acc.items():
        out[m] = {"psnr_db": metrics.psnr_from_mse(a["sse"] / a["px"]) if a["px"] else None,
                  "detail_ratio": a["grad"] / a["grad_gt"] if a["grad_gt"] > 0 else None,
                  "pixels": a["px"], "psnr_per_frame": a["per_frame"]}
        if not swd:
            continue
        for s in scales:
            rows = a["swd"][s]
            w = sum(c for _, _, c in rows)
            key = "swd_texture" if s == 1 else f"swd_texture_{s}"
            out[m][key] = sum(t * c for _, t, c in rows) / w if w else None
            if s == 1:
                out[m]["swd_raw"] = sum(r * c for r, _, c in rows) / w if w else None
                out[m]["swd_frames"] = len(rows)
    return out


def partners(order, views, segment_of, masks, static=None):
    """{frame: earlier frame} pairs for self-consistency: for each frame after the first segment, the frame of
    an earlier segment (not at nearly the same pose) that sees the most of its invented pixels.

    static: {frame: [H, W] bool} pixels of the static world (moving objects are left out of the pairs)."""
    out = {}
    for i, n in enumerate(order):
        depth, K, c2w = views[n]
        mask = masks[n] & (static[n] if static is not None else True)
        v, u = np.nonzero(mask)
        total = len(v)
        if total < MIN_PAIR_PIXELS:
            continue
        if total > PAIR_POINTS:
            keep = np.random.default_rng(n).choice(total, PAIR_POINTS, replace=False)
            v, u = v[keep], u[keep]
        z = depth[v, u]
        pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1) @ c2w[:3, :3].T + c2w[:3, 3]
        best, best_count = None, 0
        for m in order[:i]:
            if segment_of[m] >= segment_of[n]:
                continue
            d, a = metrics.pose_distance(c2w, views[m][2])
            if d <= SAME_POSE[0] and a <= SAME_POSE[1]:
                continue
            dm = views[m][0] if static is None else np.where(static[m], views[m][0], np.inf)
            count = int(metrics.visible_from(pts, views[m][1], views[m][2], dm).sum())
            if count > best_count:
                best, best_count = m, count
        if best is not None and best_count * total / len(v) >= MIN_PAIR_PIXELS:
            out[n] = best
    return out


def self_consistency(pairs, views, masks, image_sets, static=None):
    """Each image set's frames against their partner frames warped into them with exact depth (bilinear), pooled
    over each frame's invented (static) pixels that its partner also sees.

    image_sets: {name: {frame: [H, W, 3]}}; the ground truth among them gives the ground truth's own figure.
    Returns {"psnr_db": {name: dB}, "pixels": pixels pooled, "pairs": frames paired}."""
    names = list(image_sets)
    sse = dict.fromkeys(names, 0.0)
    px = 0
    for n, m in pairs.items():
        dn, Kn, cn = views[n]
        dm, Km, cm = views[m]
        if static is not None:
            dn, dm = np.where(static[n], dn, np.inf), np.where(static[m], dm, np.inf)
        stack = np.concatenate([image_sets[k][m] for k in names], -1)  # one warp for every image set
        warped, valid = metrics.backward_warp(stack, dm, Km, cm, dn, Kn, cn)
        sel = masks[n] & valid
        if not sel.any():
            continue
        px += int(sel.sum())
        for i, k in enumerate(names):
            sse[k] += metrics.mse(image_sets[k][n], warped[..., 3 * i:3 * i + 3], sel) * int(sel.sum())
    return {"psnr_db": {k: metrics.psnr_from_mse(sse[k] / px) if px else None for k in names},
            "pixels": px, "pairs": len(pairs)}
