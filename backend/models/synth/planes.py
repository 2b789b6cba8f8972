"""The flat surfaces an exemplar shows, how each one's texture repeats, and where a point of a plane that no
image showed copies its colour from.

Rooms are mostly planes. An exemplar's still pixels are grouped into planes (scene object, orientation, distance);
each plane's seen texture is laid out flat, in the plane's own coordinates (on walls: along the wall and height),
and the shift that maps the texture best onto itself is found (a checker's period, a brick's course, anything at
all for a plain paint). A point of the plane the exemplar does not show takes the colour of its nearest copy under
that repeat that it does show, so a floor's pattern continues in phase behind a pillar and to the end of the wall.
A plane no exemplar shows takes a shown plane of the same kind (the same object's first: another face of the box),
height kept. The map depends on the world point only, never on the frame, so every frame that sees the point
paints it the same.
"""
import math

import torch
import torch.nn.functional as F

PLANE_NORMAL = 0.97    # pixels on one plane: normals agree this well
PLANE_OFFSET = 0.02    # and distances along the normal agree within this share of their depth
MATCH_NORMAL = 0.95    # a frame's pixel lies on a plane when its normal agrees this well
MATCH_OFFSET = 0.03    # and its distance within this share of its depth
MIN_PLANE = 150        # pixels: smaller planes are left to the region synthesis
GRID_MAX = 320         # the flat layout's cells along a side at most (coarser texels beyond)
MIN_SHIFT = 0.15       # a repeat moves at least this share of the plane's seen extent (it must reach far)
MIN_OVERLAP = 0.2      # and keeps this share of the seen texture on itself
REACH = 5              # repeats tried around the one that brings a point to the seen texture's centre


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def snapped(n, horizontal=0.7):
    """A plane normal [3] snapped so the same wall gives the same normal in every frame: walls made vertical when
    nearly so and turned to whole degrees of azimuth, floors and ceilings made level when nearly so."""
    n = _unit(n.double())
    if n[2].abs() > horizontal:
        if n[2].abs() > 0.98:
            return torch.tensor([0.0, 0.0, 1.0 if n[2] > 0 else -1.0])
        return n.float()
    if n[2].abs() < 0.2:
        az = round(math.degrees(math.atan2(float(n[1]), float(n[0]))))
        return torch.tensor([math.cos(math.radians(az)), math.sin(math.radians(az)), 0.0])
    return n.float()


def tangents(n, horizontal=0.7):
    """Two unit tangents of one plane normal [3]: on walls along the wall and up, on floors and ceilings the x
    axis projected and the third one."""
    up, x = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    t1 = torch.linalg.cross(up, n) if n[2].abs() <= horizontal else x - (x @ n) * n
    t1 = _unit(t1)
    return t1, torch.linalg.cross(n, t1)


class Plane:
    """One plane of an exemplar: normal n, distance d (n . P = d), tangents t1, t2, scene object, kind of surface,
    its label in the exemplar's plane map, the centre of what the exemplar shows of it, and its repeat: world shifts s1, s2 [3] (None where it has none)."""

    def __init__(self, n, d, part, kind, label, count):
        self.n, self.d, self.part, self.kind, self.label, self.count = n, d, part, kind, label, count
        self.t1, self.t2 = tangents(n)
        self.s1 = self.s2 = None
        self.centre = d * n

    def coords(self, P):
        """World points [M, 3] -> plane coordinates [M, 2]."""
        return torch.stack([P @ self.t1, P @ self.t2], -1)

    def point(self, ab):
        """Plane coordinates [M, 2] -> world points [M, 3] on the plane."""
        return ab[:, :1] * self.t1 + ab[:, 1:] * self.t2 + self.d * self.n


def group(P, N, z, parts, kinds):
    """Points [M, 3] with normals [M, 3], depths [M], scene objects [M] and kinds [M] grouped into planes: a list
    of (normal [3], distance, part, kind, members: indices into the points), largest first within each object."""
    out = []
    for part in torch.unique(parts).tolist():
        left = torch.nonzero(parts == part).squeeze(1)
        for _ in range(16):
            if left.numel() < MIN_PLANE:
                break
            # the commonest orientation left seeds the next plane
            q = torch.round(N[left] * 4).long()
            key = (q[:, 0] + 5) * 121 + (q[:, 1] + 5) * 11 + (q[:, 2] + 5)
            keys, counts = torch.unique(key, return_counts=True)
            common = keys[torch.argmax(counts)]
            n0 = _unit(N[left[key == common]].mean(0))
            near = left[(N[left] @ n0) > PLANE_NORMAL]
            if near.numel() < MIN_PLANE:
                left = left[key != common]
                continue
            off = P[near] @ n0
            # the largest sheet at that orientation: distances near the median's
            members = near[(off - off.median()).abs() <= PLANE_OFFSET * z[near]]
            n_fit = snapped(_unit(N[members].mean(0)))
            d_fit = float((P[members] @ n_fit).median())
            on = ((N[left] @ n_fit) > PLANE_NORMAL) & ((P[left] @ n_fit - d_fit).abs() <= PLANE_OFFSET * z[left])
            members = left[on]
            if members.numel() < MIN_PLANE:
                left = left[~torch.isin(left, near)]
                continue
            out.append((n_fit, d_fit, int(part), int(kinds[members].mode().values), members))
            left = left[~on]
    return out


def find_planes(surface):
    """Group an exemplar's (imagine.Surface) usable still pixels into Planes. Returns (planes, label map [H, W]:
    the plane of each pixel, eroded by one pixel so a copy never reads across an outline; -1 elsewhere)."""
    H, W = surface.H, surface.W
    ok = torch.nonzero((surface.usable & (surface.ids == 0) & (surface.N.norm(dim=-1) > 0)).reshape(-1)).squeeze(1)
    P, N = surface.P.reshape(-1, 3)[ok], surface.N.reshape(-1, 3)[ok]
    label = torch.full((H * W,), -1, dtype=torch.long)
    planes = []
    for n, d, part, kind, members in group(P, N, surface.depth.reshape(-1)[ok], surface.parts.reshape(-1)[ok],
                                           surface.kind.reshape(-1)[ok]):
        plane = Plane(n, d, part, kind, len(planes), int(members.numel()))
        Q = P[members]
        plane.centre = Q.mean(0) - (Q.mean(0) @ n - d) * n
        planes.append(plane)
        label[ok[members]] = plane.label
    label = label.reshape(H, W)
    # erode: a pixel keeps its plane only where its four neighbours are on it too
    inner = label.clone()
    inner[1:] = torch.where(label[:-1] == label[1:], inner[1:], -1)
    inner[:-1] = torch.where(label[1:] == label[:-1], inner[:-1], -1)
    inner[:, 1:] = torch.where(label[:, :-1] == label[:, 1:], inner[:, 1:], -1)
    inner[:, :-1] = torch.where(label[:, 1:] == label[:, :-1], inner[:, :-1], -1)
    inner[0], inner[-1], inner[:, 0], inner[:, -1] = -1, -1, -1, -1
    for p in planes:
        _repeat(p, surface, inner == p.label)
    return planes, inner


def _layout(plane, surface, mask):
    """The plane's seen texture laid out flat: (texture [3, A, B], seen [A, B], origin [2], texel size)."""
    P = surface.P[mask]
    ab = plane.coords(P)
    texel = float(surface.texel[mask].median())
    lo, hi = ab.min(0).values, ab.max(0).values
    texel = max(texel, float((hi - lo).max()) / (GRID_MAX - 1))
    ij = torch.round((ab - lo) / texel).long()
    A, B = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
    flat = ij[:, 0] * B + ij[:, 1]
    col = surface.image[:, mask]
    tex = torch.zeros(3, A * B).index_add_(1, flat, col)
    cnt = torch.zeros(A * B).index_add_(0, flat, torch.ones(flat.numel()))
    tex, cnt = tex.reshape(3, A, B), cnt.reshape(A, B)
    # close the gaps between far pixels' texels (a far pixel covers more than one): the mean of seen neighbours
    for _ in range(2):
        s = F.avg_pool2d(tex[None], 3, 1, 1, count_include_pad=False)[0] * 9
        c = F.avg_pool2d(cnt[None, None], 3, 1, 1, count_include_pad=False)[0, 0] * 9
        fill = (cnt == 0) & (c >= 3)
        tex = torch.where(fill[None], s / c.clamp_min(1e-6), tex)
        cnt = torch.where(fill, torch.ones_like(cnt), cnt)
    seen = cnt > 0
    tex = torch.where(seen[None], tex / cnt.clamp_min(1), torch.zeros_like(tex))
    return tex, seen, lo, texel


def _repeat(plane, surface, mask):
    """The shifts under which the plane's seen texture matches itself best: s1, and s2 across it (world [3])."""
    if int(mask.sum()) < MIN_PLANE:
        return
    tex, seen, _, texel = _layout(plane, surface, mask)
    A, B = seen.shape
    m = seen.float()
    fa, fb = 2 * A, 2 * B

    def corr(x, y):  # sum_p x(p) y(p + s), for every shift s (wrapped indices)
        return torch.fft.irfft2(torch.conj(torch.fft.rfft2(x, (fa, fb))) * torch.fft.rfft2(y, (fa, fb)), (fa, fb))
    mt = tex * m
    t2 = (mt * tex).sum(0)
    overlap = corr(m, m)
    ssd = corr(t2, m) + corr(m, t2) - 2 * sum(corr(mt[c], mt[c]) for c in range(3))
    err = ssd.clamp_min(0) / overlap.clamp_min(1) / 3
    si = torch.arange(fa)
    sj = torch.arange(fb)
    si = torch.where(si < A, si, si - fa).float()[:, None].expand(fa, fb)
    sj = torch.where(sj < B, sj, sj - fb).float()[None, :].expand(fa, fb)
    length = torch.sqrt(si ** 2 + sj ** 2)
    extent = max(A, B)
    good = (overlap >= max(MIN_OVERLAP * float(m.sum()), 50)) & (length >= MIN_SHIFT * extent)
    if not good.any():
        return
    # the best match, the shorter shift among equals (a plain paint matches itself anywhere)
    score = torch.where(good, err + 1e-4 * length / extent, torch.full_like(err, float("inf")))
    k = int(torch.argmin(score))
    a1 = _refined(score, k, si, sj)
    plane.s1 = (a1[0] * plane.t1 + a1[1] * plane.t2) * texel
    across = (si * a1[1] - sj * a1[0]).abs() / (length * float(a1.norm())).clamp_min(1e-6)
    score2 = torch.where(across > 0.7, score, torch.full_like(score, float("inf")))
    if torch.isfinite(score2).any():
        a2 = _refined(score2, int(torch.argmin(score2)), si, sj)
        plane.s2 = (a2[0] * plane.t1 + a2[1] * plane.t2) * texel


def _refined(score, k, si, sj):
    """A shift (grid units [2]) at flat index k of the score, refined to a fraction of a texel by a parabola
    through its neighbours along each axis."""
    fa, fb = score.shape
    i, j = divmod(k, fb)
    out = [float(si[i, j]), float(sj[i, j])]
    for axis, (pi, pj, ni, nj) in enumerate((((i - 1) % fa, j, (i + 1) % fa, j), (i, (j - 1) % fb, i, (j + 1) % fb))):
        l, c, r = float(score[pi, pj]), float(score[i, j]), float(score[ni, nj])
        den = l - 2 * c + r
        if math.isfinite(l) and math.isfinite(r) and den > 1e-9:
            out[axis] += max(-0.5, min(0.5, 0.5 * (l - r) / den))
    return torch.tensor(out)


def copy_points(plane, surface, label, Q):
    """Where points Q [M, 3] of `plane` (world) copy from: the nearest repeat of each that the exemplar shows on
    this plane, among the repeats around the one that brings it nearest the seen texture's centre (the closest
    ring that has one: most points find theirs in the first). Returns (found [M], u [M], v [M]: the image
    position to sample)."""
    M = Q.shape[0]
    found = torch.zeros(M, dtype=torch.bool)
    u = torch.zeros(M)
    v = torch.zeros(M)
    if M == 0:
        return found, u, v
    if plane.s1 is None:
        rings = [torch.zeros(1, 2)]
    else:
        S = torch.stack([plane.s1, plane.s2 if plane.s2 is not None else torch.zeros(3)], 1)  # [3, 2]
        k0 = torch.round(torch.linalg.lstsq(S, (plane.centre[:, None] - Q.T)).solution.T)  # [M, 2]
        r = torch.arange(-REACH, REACH + 1, dtype=torch.float32)
        dk = torch.stack(torch.meshgrid(r, r if plane.s2 is not None else torch.zeros(1), indexing="ij"), -1)
        dk = dk.reshape(-1, 2)
        ring = dk.abs().amax(1)
        rings = [dk[ring <= 1], dk[ring > 1]]
    todo = torch.arange(M)
    for i, dk in enumerate(rings):
        if todo.numel() == 0:
            break
        q = Q[todo]
        if plane.s1 is None:
            shifts = torch.zeros(q.shape[0], 1, 3)
        else:
            shifts = (k0[todo][:, None] + dk[None]) @ S.T  # [m, C, 3]
            if i == 0:  # the point itself too
                shifts = torch.cat([torch.zeros(q.shape[0], 1, 3), shifts], 1)
        m, C = shifts.shape[:2]
        X = (q[:, None] + shifts).reshape(-1, 3)
        uu, vv, zz = surface.project(X, torch.zeros(X.shape[0], dtype=torch.long))
        idx, inside = surface.pixel(uu, vv)
        ok = inside & (zz > 0) & (label.reshape(-1)[idx] == plane.label)
        cost = torch.where(ok, shifts.norm(dim=-1).reshape(-1), torch.full_like(uu, float("inf"))).reshape(m, C)
        best = torch.argmin(cost, 1)
        hit = torch.isfinite(cost.gather(1, best[:, None])[:, 0])
        pick = (torch.arange(m) * C + best)[hit]
        found[todo[hit]] = True
        u[todo[hit]], v[todo[hit]] = uu[pick], vv[pick]
        todo = todo[~hit]
    return found, u, v


def paint(target, hole, sources, colours):
    """Paint the still hole pixels [H, W] of the frame `target` (an imagine.Surface) that lie on a plane, from
    the planes of `sources` (imagine.Surfaces with planes()): a plane a source shows copies from its repeat,
    any other plane from the source plane of its kind it is given (its own object's first, then the largest).
    colours [3, H * W] is painted in place. Returns the flat indices painted."""
    rows = torch.nonzero((hole & (target.ids == 0) & (target.N.norm(dim=-1) > 0)).reshape(-1)).squeeze(1)
    shown = sorted(((s, p, lab) for s in sources for p, lab in [(q, s.planes()[1]) for q in s.planes()[0]]),
                   key=lambda x: -x[1].count)
    if rows.numel() == 0 or not shown:
        return rows[:0]
    P, N = target.P.reshape(-1, 3)[rows], target.N.reshape(-1, 3)[rows]
    z, part, kind = target.depth.reshape(-1)[rows], target.parts.reshape(-1)[rows], target.kind.reshape(-1)[rows]
    todo = torch.ones(rows.numel(), dtype=torch.bool)
    done = []

    def put(sel, s, plane, Q):
        found, u, v = copy_points(plane, s, s.planes()[1], Q)
        hit = sel[found]
        colours[:, rows[hit]] = s.colour(u[found], v[found]).T
        todo[hit] = False
        done.append(rows[hit])
    for s, plane, _ in shown:  # planes a source shows
        on = todo & (part == plane.part) & ((N @ plane.n) > MATCH_NORMAL)
        on &= (P @ plane.n - plane.d).abs() <= MATCH_OFFSET * z
        sel = torch.nonzero(on).squeeze(1)
        if sel.numel():
            put(sel, s, plane, P[sel] - (P[sel] @ plane.n - plane.d)[:, None] * plane.n)
    left = torch.nonzero(todo).squeeze(1)
    for n, d, pt, knd, members in group(P[left], N[left], z[left], part[left], kind[left]):
        donors = [x for x in shown if x[1].kind == knd]
        if not donors:
            continue
        s, donor, _ = next((x for x in donors if x[1].part == pt), donors[0])
        sel = left[members]
        own = Plane(n, d, pt, knd, -1, 0)
        Q = P[sel] - (P[sel] @ n - d)[:, None] * n
        put(sel, s, donor, donor.point(own.coords(Q)))
    return torch.cat(done) if done else rows[:0]


def unseen(target, sources):
    """[H, W] bool: the frame's still pixels whose surface point no source shows (imagine.Surface.visible)."""
    flat = (target.ids == 0).reshape(-1) & torch.isfinite(target.depth.reshape(-1))
    rows = torch.nonzero(flat).squeeze(1)
    seen = torch.zeros(rows.numel(), dtype=torch.bool)
    Q, oid = target.P.reshape(-1, 3)[rows], torch.zeros(rows.numel(), dtype=torch.long)
    for s in sources:
        seen |= s.visible(Q, oid)[0]
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[rows[~seen]] = True
    return out.reshape(target.depth.shape)
