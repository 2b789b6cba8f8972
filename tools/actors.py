"""The bench's figures on actors: objects that move or change shape during the shot (a walking character, a
rolling ball, a swinging door, a waving flag, a sliding crate), judged with the bench's own per-pixel maps
(tools/surface_maps.py), whatever the kind of motion.

* Where the reference saw an actor's surface: a pixel of the actor on a frame is *seen* when some reference
  pixel of the same object lies, in the object's rest space, within SEEN_RADIUS of the reference pixel's
  footprint on the surface, with a normal within 60 degrees (the side of a thin cloth or door the camera
  sees counts as its own surface). Carried along the surface, not by a rigid transform: a limb that bends, a
  cloth that waves and a ball that rolls keep the part the reference showed.
* What an actor uncovers: still pixels an actor stood in front of on an earlier frame, split by whether the
  reference saw them (then the memory has them) or the actor hid them on the reference itself (then they were
  never shown: invented).

numpy/torch, no bpy; docs/benchmarks.md defines every figure.
"""
import numpy as np
import torch

import metrics

SEEN_RADIUS = 1.5   # a reference pixel's footprints on the surface, in rest space
SEEN_COS = 0.5      # normals within 60 degrees
MIN_COS = 0.5       # a footprint at a grazing angle counts as at most 2 head-on footprints (it is long one way only)
MIN_SHARE = 0.001   # a frame shows an actor when at least 0.1 % of its pixels are the actor's
CHUNK = 2048


def footprint(m):
    """[H, W] world size of each pixel of a frame's maps on its surface (depth / fx over |cos| of the view
    angle, capped at 1 / MIN_COS)."""
    return m["depth"] / m["K"][0, 0] / np.maximum(m["cos"], MIN_COS)


def seen_on_surface(frame, refs, oid, radius=SEEN_RADIUS, min_cos=SEEN_COS):
    """[H, W] bool: pixels of object `oid` in `frame` (maps) whose rest-space point some reference (list of
    maps) showed: a reference pixel of the same object within `radius` of its footprint, normals agreeing."""
    mask = frame["obj"] == oid
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    rp = torch.from_numpy(frame["rest"][mask].astype(np.float32))
    np_ = torch.from_numpy(frame["normal"][mask].astype(np.float32))
    hit = torch.zeros(len(rp), dtype=torch.bool)
    for ref in refs:
        sel = ref["obj"] == oid
        if not sel.any():
            continue
        rq = torch.from_numpy(ref["rest"][sel].astype(np.float32))
        nq = torch.from_numpy(ref["normal"][sel].astype(np.float32))
        tol = torch.from_numpy((radius * footprint(ref)[sel]).astype(np.float32))
        for i in range(0, len(rp), CHUNK):
            near = torch.cdist(rp[i:i + CHUNK], rq) <= tol[None]
            same_side = (np_[i:i + CHUNK] @ nq.T) >= min_cos
            hit[i:i + CHUNK] |= (near & same_side).any(1)
    out[mask] = hit.numpy()
    return out


def unseen_mask(frame, refs, actors, tol=metrics.INVENTED_TOL):
    """[H, W] bool: pixels with a surface that no reference saw: still pixels by depth (the point projected into
    each reference, its depth there agreeing), actors' pixels along their surface (seen_on_surface)."""
    obj = frame["obj"]
    on_actor = np.isin(obj, list(actors))
    still = np.where(on_actor, np.inf, frame["depth"])
    out = metrics.unseen(still, frame["K"], frame["c2w"], [(r["depth"], r["K"], r["c2w"]) for r in refs], tol)
    for oid in actors:
        mine = obj == oid
        if mine.any():
            out |= mine & ~seen_on_surface(frame, refs, oid)
    return out


def invented_masks(order, frame_maps, refs, actors):
    """{frame: [H, W] bool}: the invented pixels (unseen_mask, eroded by metrics.INVENTED_ERODE).
    frame_maps: {frame: maps}; refs: list of maps."""
    return {n: metrics.erode(unseen_mask(frame_maps[n], refs, actors)) for n in order}


def shown_objects(refs, min_pixels):
    """Ids of the objects some reference shows at least `min_pixels` pixels of."""
    counts = {}
    for r in refs:
        ids, c = np.unique(r["obj"], return_counts=True)
        for i, k in zip(ids.tolist(), c.tolist()):
            counts[i] = counts.get(i, 0) + k
    return {i for i, k in counts.items() if i > 0 and k >= min_pixels}


def uncovered_masks(order, frame_maps, ref, actors):
    """{frame: {"uncovered_seen", "uncovered_unseen", "never_covered"}} for the frames after the reference:
    still pixels an actor stood in front of on some earlier frame (the reference included) and that the
    reference saw; still pixels behind an actor on the reference itself (never shown, uncovered later); and the
    still pixels the reference saw that no actor ever covered (the yardstick)."""
    ids = set(actors)
    out = {}
    r = frame_maps[ref]
    for k, n in enumerate(order):
        if n == ref:
            continue
        m = frame_maps[n]
        still = (m["obj"] > 0) & ~np.isin(m["obj"], list(ids))
        seen = metrics.covisible(r["depth"], r["K"], r["c2w"], m["depth"], m["K"], m["c2w"])
        hidden = np.zeros_like(still)
        for e in order[:k]:
            o = frame_maps[e]
            hidden |= metrics.occluded_by(m["depth"], m["K"], m["c2w"], o["depth"], o["obj"], ids, o["K"], o["c2w"])
        behind_ref = metrics.occluded_by(m["depth"], m["K"], m["c2w"], r["depth"], r["obj"], ids, r["K"], r["c2w"])
        out[n] = {"uncovered_seen": still & seen & hidden, "never_covered": still & seen & ~hidden,
                  "uncovered_unseen": still & ~seen & behind_ref}
    return out


class Pool:
    """Squared errors pooled over pixels, per key: one MSE, then dB."""

    def __init__(self):
        self.sse, self.px = {}, {}

    def add(self, key, img, gt, mask):
        k = int(np.count_nonzero(mask))
        if k:
            self.sse[key] = self.sse.get(key, 0.0) + metrics.mse(img, gt, mask) * k
            self.px[key] = self.px.get(key, 0) + k

    def psnr(self, key):
        return metrics.psnr_from_mse(self.sse[key] / self.px[key]) if self.px.get(key) else None

    def pixels(self, key):
        return self.px.get(key, 0)


def actor_figures(order, ref, frame_maps, refs, actors, gt, images, segment_of, min_share=MIN_SHARE):
    """Per actor: for each image set, PSNR on the actor's pixels per frame that shows it (the reference frame
    left out) with their mean and worst frame; per segment, PSNR pooled over the actor's pixels, over those
    a reference saw (seen_on_surface) and over the rest, and their pixel counts.

    actors: {id: name}; images: {name: {frame: [H, W, 3]}}; segment_of: {frame: segment index}.
    Returns {name: {"id", "frames", "images": {image set: {...}}, "seen_share_per_segment"}}."""
    segments = sorted(set(segment_of.values()))
    out = {}
    for oid, name in actors.items():
        per = {k: {} for k in images}
        pool = {k: Pool() for k in images}
        for n in order:
            if n == ref:
                continue
            m = frame_maps[n]
            mine = m["obj"] == oid
            if mine.mean() < min_share:
                continue
            seen = seen_on_surface(m, refs, oid)
            s = segment_of[n]
            for k, imgs in images.items():
                per[k][str(n)] = metrics.psnr(imgs[n], gt[n], mine)
                pool[k].add(("all", s), imgs[n], gt[n], mine)
                pool[k].add(("seen", s), imgs[n], gt[n], seen)
                pool[k].add(("unseen", s), imgs[n], gt[n], mine & ~seen)
                pool[k].add("seen", imgs[n], gt[n], seen)
                pool[k].add("unseen", imgs[n], gt[n], mine & ~seen)
        figs = {}
        for k in images:
            p = per[k]
            worst = min(p, key=p.get) if p else None
            figs[k] = {"per_frame": p, "mean_db": float(np.mean(list(p.values()))) if p else None,
                       "worst_db": p[worst] if p else None, "worst_frame": int(worst) if worst else None,
                       "psnr_per_segment": [pool[k].psnr(("all", s)) for s in segments],
                       "seen_psnr_per_segment": [pool[k].psnr(("seen", s)) for s in segments],
                       "unseen_psnr_per_segment": [pool[k].psnr(("unseen", s)) for s in segments],
                       "seen_psnr_db": pool[k].psnr("seen"), "unseen_psnr_db": pool[k].psnr("unseen")}
        any_set = next(iter(images))
        seen_px = [pool[any_set].pixels(("seen", s)) for s in segments]
        all_px = [pool[any_set].pixels(("all", s)) for s in segments]
        out[name] = {"id": oid, "frames": len(per[any_set]), "images": figs,
                     "pixels_per_segment": all_px, "seen_pixels_per_segment": seen_px,
                     "seen_share_per_segment": [a and b / a for a, b in zip(all_px, seen_px)]}
    return out


def uncovered_figures(masks, gt, images):
    """PSNR per image set pooled over the uncovered_masks' three kinds of still pixels, and their pixel counts."""
    out = {}
    for k, imgs in images.items():
        pool = Pool()
        for n, ms in masks.items():
            for key, mask in ms.items():
                pool.add(key, imgs[n], gt[n], mask)
        out[k] = {key: pool.psnr(key) for key in ("uncovered_seen", "never_covered", "uncovered_unseen")}
        out["pixels"] = {key: pool.pixels(key) for key in ("uncovered_seen", "never_covered", "uncovered_unseen")}
    return out
