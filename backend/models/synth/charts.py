"""Inventing what no image showed, once per surface, in the surface's own coordinates, before any frame is drawn.

At the start of each segment (`Inventor.run`), every frame of the segment is read from the memory; its pixels on
a surface that nothing stored covers are the work. They are grouped by surface, using what Blender gives for each
pixel: which bank (the still world, or a moving object), which object, and the surface address with its normal.

- A **plane** (a wall, a floor, a box's face, a flag at rest) gets a chart: its own 2-D coordinates at a texel size
  fixed when the chart is made (the finest the frames give it), walls with "up" up. The window of the chart that
  the segment needs is read from the memory at its texels' addresses (what the references and earlier segments
  left there), the texels the frames see but nothing covers are completed (complete.py: a verified repeat in
  phase, else patch-based completion), and the result is encoded and written into the memory at those texels'
  addresses, as if an orthographic camera had seen the plane. A plane nothing around it shows takes its texture
  from the most similar plane some reference showed (the same object's first, then the same kind of surface).
- The rest (curved or small surfaces: a ball, a character) is completed in the image of the first frame of the
  segment that shows it, object by object, guided by the surface's own rest coordinates and normals, and written
  at the pixels' addresses.

Every frame of the segment, and of later segments, then reads the same invented content at the same surface
points. Colours are completed as the memory holds them (the still world with the references' light in it; moving
objects without their changing light).
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ...fill import push_pull
from ...memory import per_cell, projection
from ...splats import coverage
from .complete import complete

UP = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # Blender's up, in the world and in an object's own space
HORIZONTAL = 0.7     # |normal . up| above this: a floor or a ceiling
FLOOR, CEILING, WALL = 0, 1, 2
PLANE_NORMAL = 0.999  # pixels of one plane: normals (Blender's, flat per face) agree this well
PLANE_GAP = 2.0      # ... and lie within this many of their pixels of each other along the normal
MIN_PLANE = 48       # pixels to invent on a plane before it gets a chart (fewer: completed in the frame's image)
MAX_WINDOW = 384     # texels along a side of one completed window at most (larger regions in several windows)
BUDGET = 2 ** 18     # texels a segment completes on planes at most: new charts get coarser texels beyond it, so
                     # the work per segment is bounded whatever the output size (a 1080p floor: millions at the
                     # pixels' finest footprint)
GRID_MAX = 2 ** 25     # texels in the box round what a new chart needs, at most (a floor to the horizon at a near
                       # pixel's footprint would be a grid of gigabytes)
IMAGE_BUDGET = 2 ** 16  # pixels of a frame's image one curved object is completed on at most (larger: scaled down)
MARGIN = 12          # texels of seen context around what a window completes
CRACK = 1            # uncovered runs this narrow (each side) are cracks between stored cells, not surfaces to invent
MIN_SOURCE = 256     # a window with fewer seen texels than this also copies from other seen planes
SOURCES = 1          # other planes it copies from (one: two unlike walls mixed give neither)
GUIDE = 0.3          # weight of the surface's rest coordinates and normal as guidance in a frame's image


@dataclass
class Chart:
    """A plane's chart: bank (object id, 0 = still world), object (parts number), unit front normal n and offset
    d (n . p = d, bank space), tangents e1, e2 (on walls along the wall and up), texel size, kind of surface."""
    oid: int
    part: int
    n: torch.Tensor
    d: float
    e1: torch.Tensor
    e2: torch.Tensor
    texel: float
    kind: int

    def uv(self, p):
        """Chart coordinates (in texels) of points p [N, 3]."""
        return (p @ self.e1) / self.texel, (p @ self.e2) / self.texel

    def points(self, u0, v0, H, W):
        """[3, H, W] bank-space points of the texel centres of the window whose first texel is (u0, v0)."""
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + v0 + 0.5,
                              torch.arange(W, dtype=torch.float64) + u0 + 0.5, indexing="ij")
        p = (u[..., None] * self.e1 + v[..., None] * self.e2) * self.texel + self.d * self.n
        return p.permute(2, 0, 1)

    def state(self):
        """JSON-able: the chart as the memory keeps it (exact: floats round-trip)."""
        return {"oid": self.oid, "part": self.part, "n": self.n.tolist(), "d": self.d, "e1": self.e1.tolist(),
                "e2": self.e2.tolist(), "texel": self.texel, "kind": self.kind}

    @classmethod
    def from_state(cls, d):
        t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        return cls(int(d["oid"]), int(d["part"]), t(d["n"]), float(d["d"]), t(d["e1"]), t(d["e2"]),
                   float(d["texel"]), int(d["kind"]))

    def camera(self, u0, v0):
        """[3, 4] the window's orthographic projection: bank space -> (texel column, row, 1)."""
        P = torch.zeros(3, 4, dtype=torch.float64)
        P[0, :3], P[0, 3] = self.e1 / self.texel, -u0 - 0.5
        P[1, :3], P[1, 3] = self.e2 / self.texel, -v0 - 0.5
        P[2, 3] = 1.0
        return P


def kind_of(n):
    """FLOOR, CEILING or WALL of a unit normal [3] (bank space)."""
    up = float(n @ UP)
    return FLOOR if up > HORIZONTAL else CEILING if up < -HORIZONTAL else WALL


def tangents(n):
    """Unit tangents e1, e2 of a unit front normal n, turned as a camera facing the surface sees it (e1 x e2 = -n:
    image x right, y down, looking along -n), so the chart's cells are drawn from the front: on walls along the
    wall and down, on floors and ceilings the x axis projected and the third one."""
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t1 = torch.linalg.cross(UP, n) if abs(float(n @ UP)) <= HORIZONTAL else x - (x @ n) * n
    t1 = t1 / t1.norm()
    return t1, torch.linalg.cross(t1, n)


def wide(mask, width=CRACK):
    """[H, W] bool: the pixels of `mask` in parts of it wider than `width` pixels (a morphological opening)."""
    m = mask[None, None].float()
    k = 2 * width + 1
    eroded = -F.max_pool2d(-m, k, stride=1, padding=width)
    return (F.max_pool2d(eroded, k, stride=1, padding=width)[0, 0] > 0) & mask


def footprint(rest, ok):
    """([H, W], [H, W]) how much surface a pixel covers (bank units): the smaller and the larger of its steps to
    its right and lower neighbours on the same surface (a floor seen at a grazing angle: short across, long along;
    one step where it has only one, inf where it has none)."""
    inf = torch.full(ok.shape, float("inf"), dtype=torch.float64)
    steps = []
    r = rest.double()
    for dim in (1, 2):
        n = ok.shape[dim - 1]
        a, b = r.narrow(dim, 1, n - 1), r.narrow(dim, 0, n - 1)
        both = ok.narrow(dim - 1, 1, n - 1) & ok.narrow(dim - 1, 0, n - 1)
        step = inf.clone()
        d = (a - b).norm(dim=0)
        # a zero step is a padded border repeating its neighbour, not a surface
        step.narrow(dim - 1, 0, n - 1).copy_(torch.where(both & (d > 0), d, inf.narrow(dim - 1, 0, n - 1)))
        steps.append(step)
    lo = torch.minimum(*steps)
    hi = torch.where(torch.isfinite(steps[0]) & torch.isfinite(steps[1]), torch.maximum(*steps), lo)
    return lo, hi


def _sample(e, chart, pts, oid, ok, reach):
    """(image [3, H, W], seen [H, W]) of the exemplar `e` at a chart's texel points `pts` [3, H, W] (bank space):
    its image where the pixel a texel projects to shows that very point of the plane (the same bank and object,
    within the pixel's footprint `reach` [H', W'] plus a texel), nothing elsewhere."""
    H, W = pts.shape[1:]
    Hi, Wi = e.image.shape[1:]
    none = torch.zeros(3, H, W), torch.zeros(H, W, dtype=torch.bool)
    P = projection(e.K, e.cam_to_world)
    if chart.oid:
        pose = (e.poses or {}).get(chart.oid)
        if pose is None:
            return none
        P = P @ torch.as_tensor(pose, dtype=torch.float64)
    flat = pts.reshape(3, -1).T.double()
    h = flat @ P[:, :3].T + P[:, 3]
    z = h[:, 2]
    x, y = h[:, 0] / z, h[:, 1] / z
    xi, yi = torch.floor(x + 0.5).long(), torch.floor(y + 0.5).long()
    inside = (z > 0) & (xi >= 0) & (xi < Wi) & (yi >= 0) & (yi < Hi)
    idx = yi.clamp(0, Hi - 1) * Wi + xi.clamp(0, Wi - 1)
    rest = e.maps.rest.reshape(3, -1)[:, idx].T.double()
    tol = torch.nan_to_num(reach.reshape(-1)[idx], posinf=0.0) + chart.texel
    seen = inside & ok.reshape(-1)[idx] & (oid.reshape(-1)[idx] == chart.oid) & ((rest - flat).norm(dim=1) <= tol)
    if e.maps.parts is not None:
        seen &= e.maps.parts.reshape(-1)[idx] == chart.part
    if not bool(seen.any()):
        return none
    grid = torch.stack([x / max(Wi - 1, 1) * 2 - 1, y / max(Hi - 1, 1) * 2 - 1], 1).float()
    image = F.grid_sample(e.image[None].float(), grid.reshape(1, H, W, 2), mode="bilinear", padding_mode="border",
                          align_corners=True)[0]
    return image * seen.reshape(1, H, W), seen.reshape(H, W)


def _complete_scaled(image, known, fill, guide, generator):
    """complete() on a frame's region, at most IMAGE_BUDGET pixels of it: a larger one is completed at a whole
    fraction of its size (a pixel known where all it covers is, to fill where any is) and the invented pixels
    taken from that, scaled back up."""
    H, W = fill.shape
    f = int(math.ceil((H * W / IMAGE_BUDGET) ** 0.5))
    if f <= 1:
        return complete(image, known, fill, guide=guide, generator=generator)
    ph, pw = -H % f, -W % f
    pad = lambda t, v: F.pad(t, (0, pw, 0, ph), value=v)  # noqa: E731
    small = F.avg_pool2d(pad(image, 0.0)[None], f)[0]
    k = -F.max_pool2d(-pad(known.float(), 0.0)[None, None], f)[0, 0] > 0
    want = F.max_pool2d(pad(fill.float(), 0.0)[None, None], f)[0, 0] > 0
    g = F.avg_pool2d(pad(guide, 0.0)[None], f)[0]
    done = complete(small, k, want & ~k, guide=g, generator=generator)
    up = F.interpolate(done[None], scale_factor=f, mode="bilinear", align_corners=False)[0, :, :H, :W]
    return torch.where(fill[None], up, image)


@dataclass
class _Seen:
    """A reference's maps where _plane_groups expects a view's."""
    maps: object


class Inventor:
    """Invents, segment by segment, what the memory lacks on the surfaces the segment's frames see; keeps its
    charts (one per plane, for the whole run) and the seen planes other planes may copy from."""

    def __init__(self, model):
        self.model = model
        self.charts = []     # Chart
        self.shown = None    # (Chart, seen image [3, h, w], seen [h, w]) of the planes the references show
        self.exemplars = ()
        self.memory = None   # the memory the charts were last taken from

    # -- what the segment needs ---------------------------------------------------------------------------
    def run(self, memory, views, exemplars, generator):
        """Invent what `views` (the segment's step.Views, in order) see and the memory lacks, into `memory`."""
        if not hasattr(memory, "write_chart"):
            return  # a memory without surfaces (the bench's baselines): the frames' own fill stays
        self.exemplars = exemplars
        notes = getattr(memory, "notes", None)
        if notes is not None and memory is not self.memory:
            # the charts live with the memory: a resumed run or the next shot finds the same ones
            self.charts = [Chart.from_state(d) for d in notes.get("charts", [])]
            self.shown, self.memory = None, memory
        known = {id(c) for c in self.charts}  # charts made before this segment keep their texel size
        planes, curved = {}, []
        for v in views:
            todo, drawn, covered = self._todo(memory, v)
            if todo is None or not bool(todo.any()):
                continue
            rest = v.maps.rest
            oid = v.maps.ids if v.maps.ids is not None else torch.zeros_like(todo, dtype=torch.long)
            left = todo.clone()
            for chart, pix, reach in self._plane_groups(v, todo, oid):
                planes.setdefault(id(chart), (chart, []))[1].append((rest.reshape(3, -1)[:, pix].T, reach))
                left.view(-1)[pix] = False
            if bool(wide(left).any()):
                curved.append(v)
        needs = self._budget([(c, s, id(c) not in known) for c, s in planes.values()])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the completion's work does not split well: a second thread mostly waits
        try:
            for chart, u0, v0, need in needs:
                self._complete_plane(memory, chart, u0, v0, need, generator)
            for v in curved:
                self._complete_image(memory, v, exemplars, generator)
        finally:
            torch.set_num_threads(threads)
            if notes is not None:
                notes["charts"] = [c.state() for c in self.charts]

    def _todo(self, memory, v, draw=False):
        """(pixels to invent [H, W], what the memory draws there [3, H, W] (with `draw`, else None), covered [H, W])
        of a view: pixels on a surface with an address that no stored cell covers (nor a moving object's material
        paints), cracks left out; (None, ...) without addresses."""
        if v.maps.rest is None or v.maps.normal is None:
            return None, None, None
        H, W = v.maps.rest.shape[-2:]
        read = v.read(memory)
        if read.splats is None:
            return None, None, None
        if draw:
            drawn, covered, _ = self.model.draw(read.splats, H, W, v.maps.ids)
        else:  # which pixels are covered is all the search for work needs: nothing decoded
            drawn, covered = torch.zeros(3, H, W), coverage(read.splats, self.model.cell, H, W, v.maps.ids)
        if v.prefill is not None:
            drawn, covered, _ = v.prefill.paint(drawn, covered)
        surfaced = torch.isfinite(v.maps.rest).all(0) & torch.isfinite(v.maps.depth)
        return wide(surfaced & ~covered) & surfaced, (drawn if draw else None), covered

    def _reach(self, v, pix):
        """(fine, coarse) [N] each pixel's footprint on its surface (bank units: footprint) for pixels `pix` (flat
        indices); a pixel with no neighbour on its surface takes the median."""
        ok = torch.isfinite(v.maps.rest).all(0)
        out = []
        for step in footprint(v.maps.rest, ok):
            step = step.reshape(-1)[pix]
            fin = torch.isfinite(step)
            out.append(torch.where(fin, step, step[fin].median() if bool(fin.any()) else torch.ones_like(step)))
        return out

    def _plane_groups(self, v, todo, oid):
        """[(Chart, flat pixel indices)] of the view's pixels to invent that lie on planes: same bank and object, the
        same normal, the same offset along it; each plane's chart found among the known ones or made now."""
        H, W = todo.shape
        pix = torch.nonzero(todo.reshape(-1)).squeeze(1)
        parts = v.maps.parts.reshape(-1)[pix] if v.maps.parts is not None else torch.zeros_like(pix)
        banks = oid.reshape(-1)[pix]
        n = v.maps.normal.reshape(3, -1)[:, pix].T.double()
        p = v.maps.rest.reshape(3, -1)[:, pix].T.double()
        q = torch.round(n * 1000).long()
        key = ((banks * 65536 + parts) * 4096 + (q[:, 0] + 1000)) * 4096 * 4096 + (q[:, 1] + 1000) * 4096 + q[:, 2] + 1000
        out = []
        keys, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
        fine, coarse = self._reach(v, pix)
        for g in torch.nonzero(counts >= MIN_PLANE).squeeze(1).tolist():
            members = torch.nonzero(inv == g).squeeze(1)
            nn = n[members].mean(0)
            nn = nn / nn.norm()
            if float((n[members] @ nn).min()) < PLANE_NORMAL:
                continue
            d = p[members] @ nn
            # parallel planes of one object (a shelf's boards) split where their offsets part
            order = torch.argsort(d)
            gap = (d[order][1:] - d[order][:-1]) > PLANE_GAP * coarse[members][order][1:]
            starts = [0] + (torch.nonzero(gap).squeeze(1) + 1).tolist() + [members.numel()]
            for a, b in zip(starts[:-1], starts[1:]):
                if b - a < MIN_PLANE:
                    continue
                m = members[order[a:b]]
                chart = self._chart(int(banks[m[0]]), int(parts[m[0]]), nn, float((p[m] @ nn).median()), fine[m])
                out.append((chart, pix[m], coarse[m]))
        return out

    def _chart(self, oid, part, n, d, step):
        """The chart of a plane: a known one when this plane has one, else a new one at the finest texel size the
        pixels give (their smaller footprints)."""
        for c in self.charts:
            if c.oid == oid and c.part == part and float(c.n @ n) > PLANE_NORMAL \
                    and abs(c.d - d) <= PLANE_GAP * c.texel:
                return c
        e1, e2 = tangents(n)
        texel = float(torch.quantile(step.double(), 0.2))
        chart = Chart(oid, part, n, d, e1, e2, texel, kind_of(n))
        self.charts.append(chart)
        return chart

    # -- a plane ----------------------------------------------------------------------------------------------
    def _budget(self, planes):
        """[(Chart, u0, v0, need [H, W])] of `planes` [(Chart, samples, new)]: each chart's texels the samples reach
        (_need); when they are more than BUDGET, the new charts' texels grow (by one factor, so their detail stays
        in proportion) until they fit, or as far as the charts made before allow."""
        for c, s, new in planes:
            if new:  # a grid that large is not made even to count: such a chart starts coarser
                u, v = c.uv(torch.cat([x[0] for x in s]).double())
                area = float((u.max() - u.min() + 2 * MARGIN) * (v.max() - v.min() + 2 * MARGIN))
                if area > GRID_MAX:
                    c.texel *= (area / GRID_MAX) ** 0.5
        needs = [(c, new) + self._need(c, s) for c, s, new in planes]
        fixed = sum(int(n[-1].sum()) for n in needs if not n[1])
        fresh = sum(int(n[-1].sum()) for n in needs if n[1])
        if fresh and fixed + fresh > BUDGET:
            grow = (fresh / max(BUDGET - fixed, BUDGET // 4)) ** 0.5
            for c, s, new in planes:
                if new:
                    c.texel *= grow
            needs = [(c, new) + self._need(c, s) if new else n for n, (c, s, new) in zip(needs, planes)]
        return [(n[0],) + n[2:] for n in needs]

    def _need(self, chart, samples):
        """(u0, v0, need [H, W] bool) the texels of `chart` that the samples [(points [N, 3], footprints [N])]
        reach, each sample as far as its pixel's footprint (at most 8 texels out), with MARGIN texels around."""
        p = torch.cat([s[0] for s in samples]).double()
        reach = torch.cat([s[1] for s in samples]).double()
        u, v = chart.uv(p)
        r = torch.ceil(reach / chart.texel / 2).clamp(0, 8).long()
        u0, v0 = int(torch.floor((u - r).min())) - MARGIN, int(torch.floor((v - r).min())) - MARGIN
        u1, v1 = int(torch.ceil((u + r).max())) + MARGIN, int(torch.ceil((v + r).max())) + MARGIN
        H, W = v1 - v0, u1 - u0
        iu, iv = (u - u0).long().clamp(0, W - 1), (v - v0).long().clamp(0, H - 1)
        need = torch.zeros(H, W, dtype=torch.bool)
        for k in torch.unique(r).tolist():  # the samples of one reach mark their centres, grown by that reach
            s = r == k
            mark = torch.zeros(1, 1, H, W)
            mark[0, 0, iv[s], iu[s]] = 1.0
            if k:
                mark = F.max_pool2d(mark, 2 * k + 1, stride=1, padding=k)
            need |= mark[0, 0] > 0
        return u0, v0, need

    def _complete_plane(self, memory, chart, u0, v0, need, generator):
        """Complete the texels of `chart` in `need` (its first texel at (u0, v0)) that the memory lacks, a window
        at a time, and write them into the memory."""
        c = self.model.cell
        H0, W0 = need.shape
        step = MAX_WINDOW - 2 * MARGIN
        for wv in range(0, H0, step):
            for wu in range(0, W0, step):
                part = need[wv:wv + MAX_WINDOW, wu:wu + MAX_WINDOW]
                if not bool(part.any()):
                    continue
                H, W = -(-part.shape[0] // c) * c, -(-part.shape[1] // c) * c
                window = torch.zeros(H, W, dtype=torch.bool)
                window[:part.shape[0], :part.shape[1]] = part
                self._complete_window(memory, chart, u0 + wu, v0 + wv, H, W, window, generator)

    def _complete_window(self, memory, chart, u0, v0, H, W, need, generator):
        """Complete one window of a chart: what the memory holds there is read, the texels the frames need and the
        memory lacks are completed and written into the memory."""
        pts = chart.points(u0, v0, H, W)
        image, known = self.look(memory, chart, pts)
        fill = need & ~known
        if not bool(fill.any()):
            return
        sources = self._sources(memory, chart) if int(known.sum()) < MIN_SOURCE else ()
        if not bool(known.any()) and not sources:
            return  # nothing seen anywhere to invent from: the frames' own fill stays
        out = complete(image, known, fill, sources=sources, generator=generator)
        self._seen = known
        self._write(memory, chart.oid, out, pts, chart.n.float()[:, None, None].expand(3, H, W), fill,
                    chart.camera(u0, v0))

    def look(self, memory, chart, pts):
        """(image [3, H, W], seen [H, W]) of what the memory holds at a window's texel points [3, H, W]."""
        H, W = pts.shape[1:]
        flat = pts.reshape(3, -1).T
        sp = memory.read_points(chart.oid, flat, chart.n[None].expand(flat.shape[0], 3), plane=(chart.n, chart.d))
        if sp is None:
            return torch.zeros(3, H, W), torch.zeros(H, W, dtype=torch.bool)
        img, covered, _ = self.model.draw(sp, 1, H * W, None)
        return img.reshape(3, H, W), covered.reshape(H, W)

    def _sources(self, memory, chart):
        """Seen windows of the planes most like `chart` (the same object's first, then the same kind of surface, then
        any), at the chart's texel size: [(image, seen, None)]."""
        if self.shown is None:  # read once, when a plane first needs it
            self.shown = self._shown_planes(self.exemplars)
        ranked = sorted(self.shown, key=lambda s: (s[0].part != chart.part or s[0].oid != chart.oid,
                                                  s[0].kind != chart.kind, -int(s[2].sum())))
        out = []
        for c, img, seen in ranked[:SOURCES]:
            if c is chart:
                continue
            scale = c.texel / chart.texel
            if abs(scale - 1) > 0.05:  # the same texture scale as the chart it fills
                size = (max(8, round(img.shape[1] * scale)), max(8, round(img.shape[2] * scale)))
                img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
                seen = F.interpolate(seen[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0] > 0.99
            out.append((img, seen, None))
        return out

    def _shown_planes(self, exemplars):
        """[(Chart, seen image [3, h, w], seen [h, w])] of the planes the references show, each sampled from the
        reference's image over what it saw of the plane: what a plane nobody saw may copy from. Taken from the
        references alone (not the memory), so it is the same whenever it is first needed."""
        out = []
        for e in exemplars:
            maps = e.maps
            if maps.rest is None or maps.normal is None or maps.depth is None:
                continue
            ok = torch.isfinite(maps.rest).all(0) & torch.isfinite(maps.depth)
            if e.usable is not None:
                ok &= e.usable
            oid = maps.ids if maps.ids is not None else torch.zeros_like(ok, dtype=torch.long)
            coarse = footprint(maps.rest, ok)[1]
            for chart, pix, _ in self._plane_groups(_Seen(maps), ok, oid):
                p = maps.rest.reshape(3, -1)[:, pix].T.double()
                u, v = chart.uv(p)
                u0, v0 = int(torch.floor(u.min())), int(torch.floor(v.min()))
                H = min(MAX_WINDOW, int(torch.ceil(v.max())) - v0 + 1)
                W = min(MAX_WINDOW, int(torch.ceil(u.max())) - u0 + 1)
                image, seen = _sample(e, chart, chart.points(u0, v0, H, W), oid, ok, coarse)
                if int(seen.sum()) >= MIN_SOURCE:
                    out.append((chart, image, seen))
        return out

    # -- the rest, in a frame's own image -------------------------------------------------------------------------
    def _complete_image(self, memory, v, exemplars, generator):
        """Complete, object by object, what the frame `v` sees and the memory still lacks, in the frame's image,
        guided by the surface's rest coordinates and normal; written at the pixels' addresses."""
        todo, drawn, covered = self._todo(memory, v, draw=True)
        if todo is None or not bool(todo.any()):
            return
        parts = v.maps.parts if v.maps.parts is not None else torch.zeros_like(todo, dtype=torch.long)
        rest, nrm = v.maps.rest, v.maps.normal.float()
        ok = torch.isfinite(rest).all(0)
        scale = footprint(rest, ok)[0]
        scale = float(scale[torch.isfinite(scale)].median()) * 8 if bool(torch.isfinite(scale).any()) else 1.0
        guide = torch.cat([torch.nan_to_num(rest.float()) / scale, nrm]) * GUIDE
        out = drawn.clone()
        done = torch.zeros_like(todo)
        for part in torch.unique(parts[todo]).tolist():
            mine = parts == part
            fill = todo & mine
            # the object's part of the image around what it lacks: what the completion works on
            ys, xs = torch.nonzero(fill, as_tuple=True)
            y0, y1 = max(int(ys.min()) - MARGIN * 4, 0), min(int(ys.max()) + MARGIN * 4 + 1, fill.shape[0])
            x0, x1 = max(int(xs.min()) - MARGIN * 4, 0), min(int(xs.max()) + MARGIN * 4 + 1, fill.shape[1])
            box = (slice(y0, y1), slice(x0, x1))
            known = (covered & mine & ok)[box]
            if not bool(known.any()):
                continue
            out[(slice(None),) + box] = _complete_scaled(out[(slice(None),) + box], known, fill[box],
                                                         guide[(slice(None),) + box], generator)
            done |= fill
        if bool(done.any()):
            self._write(memory, None, out, rest, nrm, done, None, v)

    # -- into the memory ---------------------------------------------------------------------------------------
    def _write(self, memory, oid, image, pts, normals, fill, camera, view=None):
        """Encode `image` [3, H, W] and store the cells holding `fill` pixels at their addresses `pts` [3, H, W]
        (the fill pixels alone owned): a chart's into bank `oid` with its orthographic `camera`; a frame's through
        the view (each pixel into its own bank)."""
        c = self.model.cell
        if view is None:
            # the texels outside what is seen or invented take a smooth fill, so the codec sees a surface around
            # the invented texels and not black
            have = fill | self._seen
            image = torch.where(have[None], image, push_pull(image, ~have))
        latent = self.model.encode(image.clamp(0, 1))
        cells = per_cell(fill, c).any(-1)
        if view is None:
            memory.write_chart(oid, latent, pts.float(), normals.float(), cells, fill, camera)
            return
        # a frame: only the invented pixels get addresses, so nothing else of the frame is stored again
        maps = view.stored_maps
        keep = fill & torch.isfinite(maps.rest).all(0)
        rest = torch.where(keep[None], maps.rest, torch.full_like(maps.rest, float("nan")))
        depth = torch.where(keep, maps.depth, torch.full_like(maps.depth, float("inf")))
        from dataclasses import replace
        memory.write(latent, view.cells, view.K, view.cam_to_world, mask=cells, ids=view.cell_ids, poses=view.poses,
                     maps=replace(maps, rest=rest, depth=depth))
