"""Inventing what no image showed, by example: surfaces continued from what is seen.

Where a frame sees surfaces that nothing stored covers, the pixels are painted by copying from an exemplar: the
reference (light taken out) or what the frame already shows, which is what the memory holds, seen or invented
before. The hole is cut into regions, each on one surface (one object, one kind of surface, one orientation).
A region copies from a source surface through a rigid map of the two surfaces onto each other (on walls "up"
stays up), so texture scale and perspective follow the geometry and the copy is coherent: a whole region carries
over, as in shift-map and texture-transfer methods, rather than a patchwork of pixels. Which map is decided by
how well the known pixels just around the region (on its own surface) match what the map puts there, so a
floor's pattern continues in phase and a wall continues its own texture; a region nothing around it shows
(an unseen wall) takes a surface of the same kind (the room's walls), preferring the same height. Candidate
maps: random surface points of the right kind and, for moving objects, the object's own faces turned about its
vertical axis (a box's faces often share their pattern); the best few are refined by a local search. What one
map cannot cover (the source surface ends) is the next piece of the region, with a map of its own.

Before the regions, the still world's planes (backend/planes.py): a floor or wall the reference shows is
continued through its own measured repeat, so a pattern keeps its phase, and a plane nobody saw copies a
seen plane of its kind (its own object's first) at the same height; the painting is a function of the
surface point, so every frame paints the same point the same way. With the shading map the copying happens
on colour with the light divided out (the all-around light's weight read from the reference) and the
frame's own light is put back: a shadow is not copied into the sun, an invented floor gets the shadows
that fall on it.

Guidance comes from what Blender gives exactly: depth, object ids and poses, which object each pixel sees
and the still world's light. The result is written into the memory once; later frames read it back, and
their new regions match against it, so invented content continues from frame to frame. Torch only;
deterministic for a given generator.
"""
import torch
import torch.nn.functional as F

from . import planes
from ...channels import Maps
from ..base import Exemplar

UP = (0.0, 0.0, 1.0)       # Blender's world (and object) up axis
FLOOR, CEILING, WALL = 0, 1, 2
HORIZONTAL = 0.7            # |normal . up| above this: a floor or a ceiling
VISIBLE = 0.03              # a point is on the exemplar's surface when its depth agrees within 3 %
SAME_SURFACE = 0.95         # neighbouring pixels are on one surface when their normals agree this well
MIN_REGION = 12             # smaller holes (slivers along outlines) keep the smooth fill
BAND = 6                    # known pixels this close around a region are matched against the candidate maps
BAND_SAMPLES, AREA_SAMPLES = 160, 64    # at most this many band and region pixels scored per candidate
CANDIDATES = 32             # random candidate maps per piece
REFINE_BEST, REFINE_STEPS = 2, (8, 4, 2, 1)   # local search around the best maps, in exemplar pixels
PIECES = 3                  # maps per region at most (each covering what the previous could not)
UNSEEN_COST = 0.3           # cost of a band pixel the map cannot show
COVER_COST = 0.2            # cost of the share of the region a map cannot cover
HEIGHT_COST = 0.15          # cost per median scene depth of height difference at the anchor
BLUR_COST = 0.03            # cost per halving of a source's resolution against the frame's
OTHER_PART_COST = 0.1       # cost of copying from another scene object than the region's own
def _normalize(v):
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def surface_points(depth, K):
    """[H, W] planar depth -> [H, W, 3] camera-space points (OpenCV), inf where depth is."""
    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    K = K.float()
    d = depth.float()
    return torch.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], -1)


def surface_normals(P, valid):
    """[H, W, 3] points -> ([H, W, 3] unit normals, [H, W] defined), from neighbour differences: central inside
    a surface, one-sided where the other side leaves it (a depth jump) or at the image's edge; facing the camera
    at the origin; zero where undefined."""
    z = P[..., 2]

    def step(dim):
        """Forward and backward differences along `dim`, each with where it stays on one surface."""
        n = P.shape[dim]
        a, b = P.narrow(dim, 1, n - 1), P.narrow(dim, 0, n - 1)
        za, zb = z.narrow(dim, 1, n - 1), z.narrow(dim, 0, n - 1)
        ok = torch.isfinite(za) & torch.isfinite(zb) & ((za - zb).abs() <= 0.05 * torch.minimum(za, zb))
        d = torch.where(ok[..., None], a - b, torch.zeros_like(a))
        fwd, fok = torch.zeros_like(P), torch.zeros_like(z, dtype=torch.bool)
        bwd, bok = torch.zeros_like(P), torch.zeros_like(z, dtype=torch.bool)
        fwd.narrow(dim, 0, n - 1).copy_(d)
        fok.narrow(dim, 0, n - 1).copy_(ok)
        bwd.narrow(dim, 1, n - 1).copy_(d)
        bok.narrow(dim, 1, n - 1).copy_(ok)
        return torch.where(fok[..., None], fwd, bwd), fok | bok
    du, oku = step(1)
    dv, okv = step(0)
    n = torch.cross(du, dv, dim=-1)
    n = torch.where((n * P).sum(-1, keepdim=True) > 0, -n, n)  # toward the camera
    good = valid & oku & okv & (n.norm(dim=-1) > 0)
    return torch.where(good[..., None], _normalize(n), torch.zeros_like(n)), good


def basis(n):
    """Two unit tangents [..., 3] of each surface normal [..., 3]: on walls the first is horizontal and the second
    points up; on floors and ceilings the first follows the x axis. The same normal always gets the same pair."""
    up = torch.tensor(UP, dtype=n.dtype).expand_as(n)
    x = torch.tensor((1.0, 0.0, 0.0), dtype=n.dtype).expand_as(n)
    wall = (n[..., 2].abs() <= HORIZONTAL)[..., None]
    t1 = torch.where(wall, torch.cross(up, n, dim=-1), x - (x * n).sum(-1, keepdim=True) * n)
    t1 = _normalize(t1)
    return t1, torch.cross(n, t1, dim=-1)


def kind(n):
    """[..., 3] normals -> FLOOR, CEILING or WALL."""
    out = torch.full(n.shape[:-1], WALL, dtype=torch.long)
    out[n[..., 2] > HORIZONTAL] = FLOOR
    out[n[..., 2] < -HORIZONTAL] = CEILING
    return out


AMBIENT_WEIGHTS = torch.logspace(-2, 1.5, 36)  # the weights of the all-around light tried against the reference


def light(shade, weight):
    """[2, H, W] direct and all-around light -> [H, W] the light to divide a colour by: direct + weight x
    all-around, kept above a twentieth of its median; 1 where the map gives none (moving objects, sky)."""
    s = shade[0] + weight * shade[1]
    some = (shade[0] + shade[1]) > 0
    floor = 0.05 * float(s[some].median()) if some.any() else 1.0
    return torch.where(some, s.clamp_min(floor), torch.ones_like(s))


def ambient_weight(exemplars):
    """How much the all-around light weighs against the direct light, as the exemplars show it: the weight that
    makes each scene object's colour (luminance over light) vary least over its still pixels, lit or in shadow.
    None where an exemplar has no shading map."""
    if not exemplars or any(e.maps.shade is None for e in exemplars):
        return None
    cost = torch.zeros(AMBIENT_WEIGHTS.numel())
    for e in exemplars:
        lum = e.image.float().mean(0)
        ok = ((e.maps.shade[0] + e.maps.shade[1]) > 0) & (lum > 0.01) & torch.isfinite(e.maps.depth)
        if e.maps.ids is not None:
            ok &= e.maps.ids == 0
        parts = (e.maps.parts if e.maps.parts is not None else torch.zeros_like(lum, dtype=torch.long))[ok]
        log_lum = torch.log(lum[ok])
        d, a = e.maps.shade[0][ok], e.maps.shade[1][ok]
        for w in range(AMBIENT_WEIGHTS.numel()):
            r = log_lum - torch.log((d + AMBIENT_WEIGHTS[w] * a).clamp_min(1e-6))
            n = torch.bincount(parts, minlength=1).float()
            mean = torch.bincount(parts, r, minlength=1) / n.clamp_min(1)
            cost[w] += float(((r - mean[parts]) ** 2).sum())
    return float(AMBIENT_WEIGHTS[int(torch.argmin(cost))])


class Surface:
    """An exemplar's pixels as local surface points (object space for moving objects) with their normals, and how
    to sample the exemplar at any local point. With `weight` (ambient_weight) and the exemplar's shading map, its
    colours are the surfaces' own, their light taken out."""

    def __init__(self, ex: Exemplar, weight=None):
        self.image = ex.image.float()
        if weight is not None and ex.maps.shade is not None:
            self.image = self.image / light(ex.maps.shade.float(), weight)
        self.depth = ex.maps.depth.float()
        self.K = ex.K.float()
        H, W = self.depth.shape
        self.H, self.W = H, W
        cam = surface_points(self.depth, ex.K)
        valid = torch.isfinite(self.depth) & (self.depth > 0)
        n_cam, good = surface_normals(torch.where(valid[..., None], cam, torch.full_like(cam, float("inf"))), valid)
        # how much surface one pixel covers (world units across, along the surface's steepest direction): a copy
        # from a surface seen at a grazing angle or from far away would be blurred where it lands
        facing = (n_cam * -_normalize(torch.where(valid[..., None], cam, torch.ones_like(cam)))).sum(-1).abs()
        self.texel = torch.where(good, self.depth / float(self.K[0, 0]) / facing.clamp_min(0.05),
                                 torch.full_like(self.depth, float("inf")))
        ids = ex.maps.ids.long() if ex.maps.ids is not None else torch.zeros(H, W, dtype=torch.long)
        self.ids = ids
        self.parts = ex.maps.parts.long() if ex.maps.parts is not None else torch.zeros(H, W, dtype=torch.long)
        self.oids = sorted(set(torch.unique(ids).tolist()) | {0})
        c2w = ex.cam_to_world.double()
        poses = {0: torch.eye(4, dtype=torch.float64)}
        poses.update({int(k): torch.as_tensor(v, dtype=torch.float64) for k, v in (ex.poses or {}).items()})
        # camera -> local space of each object id, and local -> camera
        self.to_local = {o: (torch.linalg.inv(poses.get(o, poses[0])) @ c2w).float() for o in self.oids}
        self.to_cam = {o: torch.linalg.inv(m.double()).float() for o, m in self.to_local.items()}
        # object id -> row of its matrix, for projecting points of several objects at once
        self.oid_index = torch.zeros(max(self.oids) + 1, dtype=torch.long)
        self.oid_index[torch.tensor(self.oids)] = torch.arange(len(self.oids))
        self.cam_stack = torch.stack([self.to_cam[o] for o in self.oids])
        self.flat = self.image.reshape(3, -1).T.contiguous()
        P = torch.zeros(H, W, 3)
        N = torch.zeros(H, W, 3)
        camf = torch.where(valid[..., None], cam, torch.zeros_like(cam))
        for o in self.oids:
            m = ids == o
            M = self.to_local[o]
            P[m] = camf[m] @ M[:3, :3].T + M[:3, 3]
            N[m] = n_cam[m] @ M[:3, :3].T
        self.P, self.N = P, N
        self.usable = good & (valid if ex.usable is None else ex.usable.to(torch.bool) & valid)
        self._pools = None
        self._planes = None
        self.kind = kind(N)
        self.t1, self.t2 = basis(N)

    def pools(self):
        """Usable pixels (flat indices) by (moving object, part, kind of surface), and by (moving object, -1,
        kind) for any part. Worked out once per Surface."""
        if self._pools is None:
            flat = torch.nonzero(self.usable.reshape(-1)).squeeze(1)
            oid, part, knd = self.ids.reshape(-1)[flat], self.parts.reshape(-1)[flat], self.kind.reshape(-1)[flat]
            self._pools = {}
            for p in (torch.full_like(oid, -1), part):
                key = (oid * (1 << 17) + (p + 1)) * 3 + knd  # one integer per (object, part, kind)
                keys, inv = torch.unique(key, return_inverse=True)
                order = torch.argsort(inv, stable=True)
                counts = torch.bincount(inv, minlength=keys.numel()).tolist()
                for k, members in zip(keys.tolist(), torch.split(flat[order], counts)):
                    o, rest = divmod(k, 3 * (1 << 17))
                    self._pools[(o, rest // 3 - 1, rest % 3)] = members
        return self._pools

    def planes(self):
        """(planes, plane label map) of the still surfaces this exemplar shows (planes.find_planes), once."""
        if self._planes is None:
            self._planes = planes.find_planes(self)
        return self._planes

    def project(self, Q, oid):
        """Local points Q [M, 3] of objects oid [M] -> (u, v, z) in this exemplar's image."""
        if len(self.oids) == 1:
            M = self.to_cam[self.oids[0]]
            cam = Q @ M[:3, :3].T + M[:3, 3]
        else:
            M = self.cam_stack[self.oid_index[oid.clamp(0, self.oid_index.numel() - 1)]]  # [M, 4, 4]
            cam = (M[:, :3, :3] @ Q[:, :, None])[..., 0] + M[:, :3, 3]
        z = cam[:, 2]
        zs = z.clamp_min(1e-6)
        return self.K[0, 0] * cam[:, 0] / zs + self.K[0, 2], self.K[1, 1] * cam[:, 1] / zs + self.K[1, 2], z

    def pixel(self, u, v):
        """Nearest pixel (flat index) of image positions, and whether it lies inside the image."""
        iu, iv = torch.round(u).long(), torch.round(v).long()
        inside = (iu >= 0) & (iu < self.W) & (iv >= 0) & (iv < self.H)
        return iv.clamp(0, self.H - 1) * self.W + iu.clamp(0, self.W - 1), inside

    def visible(self, Q, oid):
        """Whether local points lie on this exemplar's usable surface of their object, with the nearest pixel."""
        u, v, z = self.project(Q, oid)
        idx, inside = self.pixel(u, v)
        d = self.depth.reshape(-1)[idx]
        ok = inside & (z > 0) & ((d - z).abs() <= VISIBLE * z) & self.usable.reshape(-1)[idx]
        ok &= self.ids.reshape(-1)[idx] == oid
        return ok, idx, u, v

    def colour(self, u, v):
        """Bilinear colours [M, 3] at image positions (clamped to the image)."""
        u = u.clamp(0, self.W - 1)
        v = v.clamp(0, self.H - 1)
        u0, v0 = u.floor().long().clamp(max=self.W - 2), v.floor().long().clamp(max=self.H - 2)
        fu, fv = (u - u0)[:, None], (v - v0)[:, None]
        img = self.flat
        i00 = v0 * self.W + u0
        return (img[i00] * (1 - fu) * (1 - fv) + img[i00 + 1] * fu * (1 - fv)
                + img[i00 + self.W] * (1 - fu) * fv + img[i00 + self.W + 1] * fu * fv)


def _regions(target, hole):
    """Connected regions of hole pixels on one surface: same object (and part), same kind of surface, normals agreeing
    (SAME_SURFACE) and depths continuous between 4-neighbours. Returns [H, W] long labels (-1 outside the hole)."""
    H, W = hole.shape
    idx = torch.arange(H * W).reshape(H, W)
    label = torch.where(hole, idx, torch.full_like(idx, -1))
    N, ids, knd, z, parts = target.N, target.ids, target.kind, target.depth, target.parts

    def joins(a, b):  # pixels a and b (slices) on one surface
        ok = hole[a] & hole[b] & (ids[a] == ids[b]) & (knd[a] == knd[b]) & (parts[a] == parts[b])
        ok &= (N[a] * N[b]).sum(-1) > SAME_SURFACE
        return ok & ((z[a] - z[b]).abs() <= 0.05 * torch.minimum(z[a], z[b]))
    right = joins((slice(None), slice(0, W - 1)), (slice(None), slice(1, W)))
    down = joins((slice(0, H - 1), slice(None)), (slice(1, H), slice(None)))
    big = H * W
    while True:
        lab = torch.where(label < 0, torch.full_like(label, big), label)
        new = lab.clone()
        new[:, :-1] = torch.where(right, torch.minimum(new[:, :-1], lab[:, 1:]), new[:, :-1])
        new[:, 1:] = torch.where(right, torch.minimum(new[:, 1:], lab[:, :-1]), new[:, 1:])
        new[:-1] = torch.where(down, torch.minimum(new[:-1], lab[1:]), new[:-1])
        new[1:] = torch.where(down, torch.minimum(new[1:], lab[:-1]), new[1:])
        new = torch.where(hole, new, torch.full_like(new, big))
        flat = new.reshape(-1)
        jumped = torch.where(flat < big, flat[flat.clamp(max=big - 1)], flat)  # follow labels to their root
        jumped = torch.where(jumped < big, torch.minimum(jumped, flat), flat).reshape(H, W)
        jumped = torch.where(hole, jumped, torch.full_like(jumped, -1))
        if torch.equal(jumped, label):
            return label
        label = jumped


def _subsample(rows, count, g):
    if rows.numel() <= count:
        return rows
    return rows[torch.randperm(rows.numel(), generator=g)[:count]]


class _Frame:
    """One frame's synthesis: the frame as a Surface, the sources (exemplars, then the frame itself), candidate
    pools by (object, kind of surface)."""

    def __init__(self, target, sources, covered, depth, generator):
        self.target, self.sources, self.covered, self.g = target, sources, covered, generator
        self.H, self.W = covered.shape
        finite = torch.isfinite(depth)
        self.scale = float(depth[finite].median()) if finite.any() else 1.0
        # candidate pools: usable exemplar pixels by (moving object, kind of surface) and by (moving object, part,
        # kind): a part is the scene object a pixel shows, so an unseen face of a box copies from the box first
        self.pools = {}
        for e, s in enumerate(sources):
            for k, flat in s.pools().items():
                self.pools.setdefault(k, []).append((e, flat))
        self.P, self.N = target.P.reshape(-1, 3), target.N.reshape(-1, 3)
        self.t1, self.t2 = target.t1.reshape(-1, 3), target.t2.reshape(-1, 3)
        self.ids, self.kind, self.parts = target.ids.reshape(-1), target.kind.reshape(-1), target.parts.reshape(-1)

    # -- exemplar points ------------------------------------------------------------------------
    def random_points(self, oid, part, knd, count):
        """(e [c], flat pixel index [c]) of random usable exemplar pixels of this moving object and kind of
        surface: two thirds from the same part (scene object) where it shows any, the rest from any part."""
        if part > 0 and (oid, part, knd) in self.pools:
            mine = (2 * count) // 3
            e1, f1 = self._from_pool(self.pools[(oid, part, knd)], mine)
            e2, f2 = self._from_pool(self.pools.get((oid, -1, knd)), count - mine)
            return torch.cat([e1, e2]), torch.cat([f1, f2])
        return self._from_pool(self.pools.get((oid, -1, knd)), count)

    def _from_pool(self, pools, count):
        if not pools or count == 0:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        sizes = torch.tensor([p[1].numel() for p in pools])
        ends = torch.cumsum(sizes, 0)
        pick = torch.randint(int(ends[-1]), (count,), generator=self.g)
        which = torch.searchsorted(ends, pick, right=True)
        e = torch.tensor([pools[w][0] for w in which.tolist()], dtype=torch.long)
        flat = torch.stack([pools[w][1][p - (ends[w] - sizes[w])] for w, p in zip(which.tolist(), pick)])
        return e, flat

    def turned(self, oid, part, P_a, knd):
        """An object's own other faces: the anchor turned by 90, 180 and 270 degrees about the object's vertical
        axis through its centre, where an exemplar shows a surface of the same kind there. The object: a moving
        one, or a still one's part."""
        es, flats = [], []
        if oid == 0 and part <= 0:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        for ei, s in enumerate(self.sources):
            mine = s.usable & (s.ids == oid) & ((s.parts == part) if part > 0 else True)
            if not mine.any():
                continue
            centre = s.P[mine].mean(0)
            d = P_a - centre
            for c, si in ((0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)):
                q = torch.stack([centre[0] + c * d[0] - si * d[1], centre[1] + si * d[0] + c * d[1], P_a[2]])
                ok, idx, _, _ = s.visible(q[None], torch.tensor([oid]))
                if bool(ok[0]) and int(s.kind.reshape(-1)[idx[0]]) == knd:
                    es.append(ei)
                    flats.append(int(idx[0]))
        return torch.tensor(es, dtype=torch.long), torch.tensor(flats, dtype=torch.long)

    def at(self, e, flat):
        """Points and tangents [..., 3] of exemplar pixels (e, flat) [...]."""
        shape = e.shape
        e, flat = e.reshape(-1), flat.reshape(-1)
        Ps, t1, t2 = torch.zeros(e.numel(), 3), torch.zeros(e.numel(), 3), torch.zeros(e.numel(), 3)
        for ei, s in enumerate(self.sources):
            m = e == ei
            if m.any():
                Ps[m] = s.P.reshape(-1, 3)[flat[m]]
                t1[m], t2[m] = s.t1.reshape(-1, 3)[flat[m]], s.t2.reshape(-1, 3)[flat[m]]
        return Ps.reshape(*shape, 3), t1.reshape(*shape, 3), t2.reshape(*shape, 3)

    def part_at(self, e, flat):
        """Scene object (part) of exemplar pixels (e, flat) [...]."""
        out = torch.zeros(e.shape, dtype=torch.long)
        for ei, s in enumerate(self.sources):
            m = e == ei
            if m.any():
                out[m] = s.parts.reshape(-1)[flat[m]]
        return out

    def texel_at(self, e, flat):
        """Surface size of exemplar pixels (e, flat) [...], world units (Surface.texel)."""
        out = torch.full(e.shape, float("inf"))
        for ei, s in enumerate(self.sources):
            m = e == ei
            if m.any():
                out[m] = s.texel.reshape(-1)[flat[m]]
        return out

    def jittered(self, e, flat, step):
        """Exemplar pixels `step` pixels from each of (e, flat) [r, b] in eight directions: ([r, 8b], [r, 8b],
        usable [r, 8b])."""
        es, fs, oks = [], [], []
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            f = flat.clone()
            ok = torch.zeros_like(flat, dtype=torch.bool)
            for ei, s in enumerate(self.sources):
                m = e == ei
                if not m.any():
                    continue
                y, x = flat[m] // s.W + dy * step, flat[m] % s.W + dx * step
                inside = (y >= 0) & (y < s.H) & (x >= 0) & (x < s.W)
                fm = y.clamp(0, s.H - 1) * s.W + x.clamp(0, s.W - 1)
                f[m] = fm
                ok[m] = inside & s.usable.reshape(-1)[fm]
            es.append(e)
            fs.append(f)
            oks.append(ok)
        return torch.cat(es, 1), torch.cat(fs, 1), torch.cat(oks, 1)

    def look(self, e, Q, oid):
        """(visible, colours [..., 3]) of source points Q [..., 3] in exemplars e [...] on objects oid [...]."""
        shape = e.shape
        e, Q, oid = e.reshape(-1), Q.reshape(-1, 3), oid.reshape(-1)
        vis = torch.zeros(e.numel(), dtype=torch.bool)
        col = torch.zeros(e.numel(), 3)
        for ei, s in enumerate(self.sources):
            m = torch.nonzero(e == ei).squeeze(1)
            if m.numel() == 0:
                continue
            ok, _, u, v = s.visible(Q[m], oid[m])
            vis[m] = ok
            col[m] = s.colour(u, v)
        return vis.reshape(shape), col.reshape(*shape, 3)

    # -- regions ----------------------------------------------------------------------------------
    def band(self, rows, known, oid, knd, n_g, P_a):
        """Flat indices of the known pixels within BAND pixels of `rows` on the same surface (same object and
        kind, normal n_g, the plane through P_a), found in the region's bounding box only."""
        t, H, W = self.target, self.H, self.W
        y, x = rows // W, rows % W
        y0, y1 = max(int(y.min()) - BAND, 0), min(int(y.max()) + BAND + 1, H)
        x0, x1 = max(int(x.min()) - BAND, 0), min(int(x.max()) + BAND + 1, W)
        mask = torch.zeros(y1 - y0, x1 - x0)
        mask[y - y0, x - x0] = 1.0
        near = F.max_pool2d(mask[None, None], 2 * BAND + 1, stride=1, padding=BAND)[0, 0] > 0
        P, N = t.P[y0:y1, x0:x1], t.N[y0:y1, x0:x1]
        ok = near & known.reshape(H, W)[y0:y1, x0:x1] & (t.ids[y0:y1, x0:x1] == oid) & (t.kind[y0:y1, x0:x1] == knd)
        ok &= t.parts[y0:y1, x0:x1] == t.parts.reshape(-1)[rows[0]]
        ok &= ((N @ n_g) > SAME_SURFACE) & (((P - P_a) @ n_g).abs() <= 0.03 * t.depth[y0:y1, x0:x1])
        yy, xx = torch.nonzero(ok, as_tuple=True)
        return (yy + y0) * W + xx + x0

    def pieces(self, regions, out, known):
        """One map per region (a list of flat pixel index tensors), chosen and painted for all of them at once.
        Returns the pixels each map could not cover."""
        R = len(regions)
        oid = torch.tensor([int(self.ids[r[0]]) for r in regions])
        knd = torch.tensor([int(self.kind[r[0]]) for r in regions])
        part = torch.tensor([int(self.parts[r[0]]) for r in regions])
        anchors, band_P, band_c, band_m, area_P, area_m = [], [], [], [], [], []
        colours = out.reshape(3, -1)
        for i, rows in enumerate(regions):
            y, x = (rows // self.W).float(), (rows % self.W).float()
            a = rows[torch.argmin((y - y.mean()) ** 2 + (x - x.mean()) ** 2)]
            anchors.append(a)
            n_g = _normalize(self.N[rows].mean(0))
            b = _subsample(self.band(rows, known, int(oid[i]), int(knd[i]), n_g, self.P[a]), BAND_SAMPLES, self.g)
            ar = _subsample(rows, AREA_SAMPLES, self.g)
            band_P.append(F.pad(self.P[b], (0, 0, 0, BAND_SAMPLES - b.numel())))
            band_c.append(F.pad(colours[:, b].T, (0, 0, 0, BAND_SAMPLES - b.numel())))
            band_m.append(torch.arange(BAND_SAMPLES) < b.numel())
            area_P.append(F.pad(self.P[ar], (0, 0, 0, AREA_SAMPLES - ar.numel())))
            area_m.append(torch.arange(AREA_SAMPLES) < ar.numel())
        a = torch.stack(anchors)
        P_a, t1_a, t2_a = self.P[a], self.t1[a], self.t2[a]
        texel_a = self.target.texel.reshape(-1)[a]
        band_P, band_c, band_m = torch.stack(band_P), torch.stack(band_c), torch.stack(band_m)
        area_P, area_m = torch.stack(area_P), torch.stack(area_m)

        def coords(P):  # [R, M, 3] -> surface coordinates [R, M, 2] around each region's anchor
            d = P - P_a[:, None]
            return torch.stack([(d * t1_a[:, None]).sum(-1), (d * t2_a[:, None]).sum(-1)], -1)
        band_ab, area_ab = coords(band_P), coords(area_P)

        def mapped(e, flat, ab):  # source points [R, k, M, 3] of surface coordinates ab [R, M, 2] under maps
            Ps, t1s, t2s = self.at(e, flat)
            return Ps[:, :, None] + ab[:, None, :, :1] * t1s[:, :, None] + ab[:, None, :, 1:] * t2s[:, :, None]

        def score(e, flat, ok):  # [R, k]
            k = e.shape[1]
            o = oid[:, None, None].expand(R, k, BAND_SAMPLES)
            vis, col = self.look(e[:, :, None].expand(-1, -1, BAND_SAMPLES), mapped(e, flat, band_ab), o)
            diff = torch.where(vis, ((col - band_c[:, None]) ** 2).sum(-1), torch.full(vis.shape, UNSEEN_COST))
            nb = band_m.sum(1).clamp_min(1)[:, None]
            cost = (diff * band_m[:, None]).sum(-1) / nb
            o = oid[:, None, None].expand(R, k, AREA_SAMPLES)
            vis, _ = self.look(e[:, :, None].expand(-1, -1, AREA_SAMPLES), mapped(e, flat, area_ab), o)
            cover = (vis & area_m[:, None]).sum(-1) / area_m.sum(1).clamp_min(1)[:, None]
            Ps, _, _ = self.at(e, flat)
            cost = cost + COVER_COST * (1.0 - cover) + HEIGHT_COST * (Ps[..., 2] - P_a[:, None, 2]).abs() / self.scale
            # sharper sources first: each halving of the source's resolution against the frame's costs this much
            coarser = torch.log2((self.texel_at(e, flat) / texel_a[:, None]).clamp_min(1e-6)).clamp_min(0.0)
            cost = cost + BLUR_COST * coarser
            cost = cost + OTHER_PART_COST * (self.part_at(e, flat) != part[:, None]).float()
            return torch.where(ok, cost, torch.full_like(cost, float("inf")))

        # candidates: random points of each region's object and kind, and a moving object's own faces turned
        cand_e, cand_f, cand_ok = [], [], []
        for i in range(R):
            e1, f1 = self.random_points(int(oid[i]), int(part[i]), int(knd[i]), CANDIDATES)
            e2, f2 = self.turned(int(oid[i]), int(part[i]), P_a[i], int(knd[i]))
            e, f = torch.cat([e1, e2]), torch.cat([f1, f2])
            cand_e.append(F.pad(e, (0, CANDIDATES + 3 - e.numel())))
            cand_f.append(F.pad(f, (0, CANDIDATES + 3 - f.numel())))
            cand_ok.append(torch.arange(CANDIDATES + 3) < e.numel())
        e, flat, ok = torch.stack(cand_e), torch.stack(cand_f), torch.stack(cand_ok)
        cost = score(e, flat, ok)
        for step in REFINE_STEPS:  # a local search around the best maps: the phase of a pattern
            best = torch.argsort(cost, dim=1, stable=True)[:, :REFINE_BEST]
            ej, fj, okj = self.jittered(e.gather(1, best), flat.gather(1, best), step)
            okj &= torch.isfinite(cost.gather(1, best)).repeat(1, 8)
            e, flat = torch.cat([e, ej], 1), torch.cat([flat, fj], 1)
            ok, cost = torch.cat([ok, okj], 1), torch.cat([cost, score(ej, fj, okj)], 1)
        k = torch.argmin(cost, dim=1)
        found = torch.isfinite(cost.gather(1, k[:, None])[:, 0])
        # paint every pixel of each region through its map
        rows = torch.cat(regions)
        which = torch.repeat_interleave(torch.arange(R), torch.tensor([r.numel() for r in regions]))
        ek, fk = e.gather(1, k[:, None])[:, 0], flat.gather(1, k[:, None])[:, 0]
        Ps, t1s, t2s = self.at(ek, fk)
        d = self.P[rows] - P_a[which]
        ab = torch.stack([(d * t1_a[which]).sum(-1), (d * t2_a[which]).sum(-1)], -1)
        Q = Ps[which] + ab[:, :1] * t1s[which] + ab[:, 1:] * t2s[which]
        vis, col = self.look(ek[which], Q, oid[which])
        vis &= found[which]
        hit = rows[vis]
        colours[:, hit] = col[vis].T
        known[hit] = True
        return rows[~vis], hit


def surfaces_of(exemplars, cache=None, weight=None):
    """The Surfaces of exemplars, reused from `cache` (a dict the caller keeps: exemplar -> Surface, the
    exemplar kept alive beside it) when the same exemplar comes again, as the reference does on every frame."""
    out = []
    for e in exemplars:
        hit = cache.get((id(e), weight)) if cache is not None else None
        if hit is None or hit[0] is not e:
            hit = (e, Surface(e, weight))
            if cache is not None:
                cache[(id(e), weight)] = hit
        out.append(hit[1])
    return out


def synthesize(drawn, covered, depth, K, cam_to_world, exemplars, ids=None, poses=None, base=None,
               generator=None, parts=None, cache=None, repaint=False, shade=None):
    """Fill the frame's pixels that no stored cell covers by copying surfaces from the exemplars.

    drawn [3, H, W] and covered [H, W]: what the memory drew; depth [H, W] the frame's depth (inf = sky); K,
    cam_to_world its camera; ids [H, W] object ids and poses {id: [4, 4]} on this frame; exemplars: the views to
    copy from (models.base.Exemplar); base [3, H, W] what pixels nothing can serve keep (a smooth fill); parts
    [H, W] which scene object each pixel sees (None: not known); cache: a dict kept between calls, so each
    exemplar's surface is worked out once (surfaces_of). With `repaint`, every still pixel on a plane that no
    exemplar shows is painted from the plane's repeat too, covered or not: the same content the memory holds
    for it, at this frame's own resolution. With the frame's shading map `shade` [2, H, W] (and the exemplars'),
    colours are copied without their light and painted in the frame's: a shadow stays where it falls. Returns
    (image [3, H, W], invented [H, W]: the pixels copied, exact [H, W]: those painted from a plane's repeat,
    which every frame paints the same)."""
    H, W = covered.shape
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    out = (base if base is not None else drawn).clone().float()
    out[:, covered] = drawn[:, covered].float()
    weight = None
    if shade is not None:
        key = ("weight",) + tuple(id(e) for e in exemplars)
        if cache is None or key not in cache:
            w = ambient_weight(exemplars)
            if cache is None:
                weight = w
            else:
                cache[key] = (tuple(exemplars), w)  # the exemplars kept alive beside their ids
        if cache is not None:
            weight = cache[key][1]
    lit = out
    lighting = None
    if weight is not None:
        lighting = light(shade.float(), weight)
        out = out / lighting
    target = Surface(Exemplar(out, K, cam_to_world, Maps(depth=depth, ids=ids, parts=parts), poses, usable=covered))
    surfaced = torch.isfinite(depth) & (target.N.norm(dim=-1) > 0)
    hole = ~covered & surfaced
    invented = torch.zeros(H, W, dtype=torch.bool)
    exact = torch.zeros(H, W, dtype=torch.bool)
    shown = surfaces_of(exemplars, cache, weight)
    ask = hole | (planes.unseen(target, shown) & surfaced) if repaint else hole
    if not ask.any():
        return lit, invented, exact
    # planes first: their repeat continues a pattern in phase, the same for every frame; regions for the rest
    hit = planes.paint(target, ask, shown, out.reshape(3, -1))
    exact.reshape(-1)[hit] = True
    invented |= exact & hole
    known = (covered.reshape(-1) | exact.reshape(-1)).clone()
    todo = hole & ~exact
    frame = _Frame(target, shown + [target], covered | exact, depth, g)
    for _ in range(PIECES):
        labels = _regions(target, todo).reshape(-1)
        inside = labels >= 0
        if not inside.any():
            break
        names, counts = torch.unique(labels[inside], return_counts=True)
        big = names[counts >= MIN_REGION]
        if big.numel() == 0:
            break
        order = torch.argsort(labels[inside], stable=True)
        flat = torch.nonzero(inside).squeeze(1)[order]
        groups = torch.split(flat, counts.tolist())
        regions = [grp for grp, nm in zip(groups, names.tolist()) if grp.numel() >= MIN_REGION]
        left, hit = frame.pieces(regions, out, known)
        invented.reshape(-1)[hit] = True
        if hit.numel() == 0:
            break
        todo = torch.zeros(H * W, dtype=torch.bool)
        todo[left] = True
        todo = todo.reshape(H, W)
    if lighting is not None:
        out = torch.where((invented | exact)[None], out * lighting, lit)
    return out, invented, exact
