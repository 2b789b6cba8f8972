"""Completing a surface's chart once: what no camera showed, invented from what it did.

A surface is laid out in its own 2-D chart at a fixed texel density. Some texels hold seen content (`known`),
some must be invented (`fill`), the rest lie outside the surface and are never read nor written. The result is
written into the product's memory once per chart, so this favours quality over speed, within about a second.

Three ways to invent, chosen per chart:

1. Periodic textures (checker, bricks, tiles) continue in phase. `verified_repeat` measures, for every shift, the
   mean squared difference of the seen texels against themselves under that shift (masked correlations by FFT)
   and accepts a shift only when it is a real repeat: the difference is within the texture's own noise level
   (estimated from a robust Laplacian residual), twice the shift holds too, and the texture decorrelates between
   zero and the shift (a peak, not the slow rise of a smooth noise). Fill texels then copy from the nearest seen
   texel on the lattice of verified shifts; copies that are equally near are averaged, which blends seams.
   Voronoi, noise, plaster and grass have no such repeat and are never forced into one (that shows as stripes).

2. Everything else (unless a guide steers it) is quilted: image quilting with minimum-error boundary cuts (Efros
   and Freeman 2001) in the manner of graph-cut textures (Kwatra, Schoedl, Essa, Turk and Bobick 2003). Blocks of
   QUILT_BLOCK texels, larger than the cells of a voronoi or the stones of a cobble floor, are copied whole from the
   seen texels (or the exemplars) onto a grid that overlaps by QUILT_OVERLAP texels, so that cells come out whole:
     - matching: each block is one of those whose window content best matches what the window already holds (a
       masked SSD for every source place at once, by FFT; seen texels count more; source texels already used are
       charged, Kaspar et al. 2015). A few of the best are cut in, and the one whose cut shows least goes in.
     - cut: on each side of the window where it overlaps content invented before, the cut is the cheapest path by
       dynamic programming among those crossing every row once, free to run along rows (so along mortar, along a
       border of the cells). A pair of texels it separates costs the two copies' mismatch there, discounted where
       the two colours it puts side by side are a pair that the source shows next to each other (a border next to
       a cell, mortar next to a brick; `_Pairs`): seams run along borders, not through cells.
     - the seen boundary: seen texels are never cut away; next to them the seen content continues mirrored over
       MIRROR_BAND texels (the one continuation that is continuous across the boundary, so a seen cell cut by it
       goes on), and blocks cut into that band where they agree with it: the boundary of the hole is a cut like any
       other, not a straight seam.
     - seams: small colour steps left along the cuts (a smooth noise copied from two places rarely meets at one
       level) are removed by gradient-domain compositing (Perez et al. 2003): a correction, 0 on the seen texels,
       whose step across each seam is what one copy's own step there lacks, by conjugate gradients; steps where a
       copy has an edge, and large ones in a texture that has edges, stay.
   On a surface mostly unseen no copy may hold a `max_copy` square (texture synthesis' optimum is a verbatim copy
   of the exemplar: a pasted block); copies continue exactly or differ clearly, and each square held by one copy
   is repaired: one flat region of it (a cell, a stone, a brick, found between the edges) takes the content of a
   flat place elsewhere with its border's near side shaded alike (the cell changes colour, its borders stay), or
   else a neighbouring copy grows over part of the square along the cheapest cut. Where the source holds too few
   whole blocks, the patch-based synthesis below is used instead.

3. With a guide, and where quilting has too few source blocks, multi-scale patch-based completion in the family of
   texture optimisation (Kwatra, Essa, Bobick and Kwatra 2005) and space-time completion (Wexler, Shechtman and
   Irani 2007), with a PatchMatch nearest-neighbour field (Barnes, Shechtman, Finkelstein and Goldman 2009), coarse
   to fine: a guide changes within a block, which a rigid block cannot follow. Per level,
   EM iterations alternate a search and a vote:
     - search: every 7x7 patch that touches a fill texel gets a source patch (fully inside seen texels of this
       chart or valid texels of an extra exemplar). PatchMatch is made parallel: each iteration evaluates, in one
       batch, the neighbours' copies continued here (steps of one and a jump), random samples at shrinking radii
       around the current match and one uniform sample, and keeps the best (distances on the texels of one
       checkerboard colour of the patch: half the cost, thin lines still hit). The coarsest level adds the exact
       nearest patches by exhaustive search on PCA-reduced descriptors.
     - vote: each invented texel takes the centre of its own match. Averaging all overlapping patches (plain
       texture optimisation) blurs whatever the patches disagree on, and the blur feeds back: the nearest patch of
       a blurred patch is a flat one, and on textures with flat areas (voronoi cells) the fill dissolves into flat
       blobs. Texels next to seen ones do take the (mode-seeking, mean-shift) vote of all covering patches, which
       carries what was seen into the invented; a final pass blends the seams between copies over a texel or two.
   What makes this hold on any texture is the patch distance and its charges:
     - per texel the squared colour difference is truncated (at TAU): a patch that continues one side of a seam
       exactly beats a flat compromise that misses everything a little, which plain L2 prefers; seen texels
       weigh more than invented ones, so the invented continue what was seen;
     - a match that continues none of its neighbours' copies is charged (coherence, Ashikhmin 2001), and so is a
       seam where the two copies disagree (the seam cost of Kwatra et al.'s graph-cut textures, 2003): the result
       is coherent copies whose seams run where they show least;
     - source places used more than their share are charged (occurrence, Kaspar et al. 2015);
     - on a surface mostly unseen, a copy may not span more than `max_copy` texels, and one offset may not serve
       many copies: texture optimisation's optimum is a verbatim copy of the exemplar, which would be a pasted
       strip. The last iterations rule such copies out. Seams are everywhere there, so colour differences are
       truncated later (TAU_LIMITED) and seams settle where the copies agree.
   Last, the small colour step that may remain between seen and invented texels is faded out over a few texels
   (a cheap membrane in the spirit of Poisson image editing, Perez et al. 2003); larger steps are edges and stay.
   The source pyramid keeps every phase: at scale k each canvas texel is the mean of the k x k block it starts and
   a patch takes every k-th of them, so coarse levels keep many patches and matches stay in full-resolution canvas
   texels (a match at a finer level is the coarser match moved by the texel's parity). Guides (height, distance to
   seen content, ...) are extra channels in the patch distance (not truncated: they steer).

Only fill texels are written (the patch-based path synthesises outside texels near the fill along with it, a
margin, so that every patch is complete). All randomness comes from the given torch.Generator; CPU, float32.
Costs are linear in the texels to fill: a 256 x 256 chart with half of it to fill takes about a second of one
core (a larger source is searched in crops of QUILT_SEARCH texels).
"""
import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7              # texels on a patch side
TAU = 0.1              # colour difference (per texel, all channels) beyond which a texel counts as simply wrong
TAU_LIMITED = 0.3      # ... where copies are limited in size (a surface mostly unseen)
EVAL_SPARSE = True     # patch distances on the texels of one checkerboard colour (half the cost, lines still hit)
KNOWN_WEIGHT = 4.0     # a seen texel counts this many times in a patch distance
UNIT = 0.1             # penalties are in units of the distance of a patch UNIT off at every texel:
COHERENCE = 0.1        # for a match that continues none of its four neighbours' copies (Ashikhmin 2001)
SEAM = 2.0             # weight of the seam cost (the copies' disagreement where they meet), per neighbour
OCCURRENCE = 0.05      # per share of reuse beyond the even share of a source place (Kaspar et al. 2015)
MAX_COPY = 16          # no copy may hold a square of this many texels on a mostly unseen surface (patch by patch:
                       # a copy may not span this many texels: the match this far away in
                       # each axis direction may not use the same offset)
UNSEEN_SHARE = 0.25    # mostly unseen: fewer seen texels than this share of the texels to invent
COPY_MIN = 2           # the limit at coarse levels, in their texels, is never below this
COPY_PENALTY = 0.1     # a match pays this per neighbour in the same too-large copy (the last iterations rule it out)
COPY_REUSE = 4.0       # one offset may serve this many R x R copies in the chart before it is charged
SETTLED = 0.02         # an exact copy charged less than this is left alone (it has little to gain)
REPAIRS = 32           # searches at most that break up copies still larger than the limit
REVISIT = 0.3          # share of the patches with an unchanged neighbourhood that search again between votes
JUMPS = (2, 4, 8)      # propagation jumps, one per PatchMatch iteration in turn (besides the step of 1)
RANDOM_TRIES = 3       # random-search samples per PatchMatch iteration
# (EM iterations, PatchMatch iterations per EM iteration): the coarsest level, middle levels, the finest
SCHEDULE = ((10, 3), (4, 2), (3, 2))
INIT_BLOCK = 7         # coarsest level: texels on the side of a randomly placed coherent block
EXACT_TOP = 4          # coarsest level: nearest source patches found exhaustively per target patch...
EXACT_MAX = 8000       # ... among at most this many source places
PCA_DIMS = 24          # ... compared by descriptors of this length
PCA_SAMPLES = 4096     # ... whose basis this many source patches estimate
MIN_SOURCE = 64        # distinct source patches (valid patch places over the scale squared) a level needs
FILL_HALF = 6          # the coarsest level still holds a fill square of 2 * FILL_HALF + 1 texels
MAX_LEVELS = 6
BAND = 2               # texels next to seen ones that take the vote of all covering patches...
BAND_MODES = 3         # ... moved by mean-shift steps to their strongest mode
FEATHER = 8            # texels over which the small colour step at the seen texels fades out...
FEATHER_STEP = 0.08    # ... steps larger than this (colour units) are edges and only this much is corrected
MODE_WIDTH = 0.1       # ... (mean-shift bandwidth, colour units)
BLEND_RADIUS = 1       # the final blend: votes of the patches centred this close to a texel
BLEND_MODES = 1        # ... moved by this many mean-shift steps towards their strongest mode
BLEND_OWN = 4.0        # ... where the texel's own patch counts this many times
TRUST_GAMMA = 1.3      # votes trust patches less by this factor per texel away from seen texels...
TRUST_REACH = 16       # ... up to this distance

# quilting (the synthesis of everything that does not repeat, unless a guide steers it)
QUILT_BLOCK = 32       # texels on the side of a block copied whole (larger than a cell of a voronoi, a cobble)...
QUILT_OVERLAP = 12     # ... overlapping its neighbours by this many texels, where the cut between them runs
QUILT_MIN_BLOCK = 12   # blocks shrink (by 3/4) down to this while the source holds too few whole ones...
QUILT_MIN_BLOCKS = 16  # ... (fewer whole blocks than this: patch-based synthesis instead)
QUILT_KNOWN = 2.0      # in block matching, a seen texel counts this many times an invented one
QUILT_TOL = 0.1        # candidate blocks: those within this share of the best match (at least QUILT_POOL best)...
QUILT_POOL = 8
QUILT_TRIES = 4        # ... of which this many, drawn at random, are cut in; the one whose cut costs least goes in
QUILT_CONTRAST = 0.02  # ... (relative to its own contrast, mean colour step between neighbours, plus this)
QUILT_UNIT = 0.1       # block matching charges a texel this far off in every channel...
QUILT_OCCURRENCE = 0.5 # ... this many times per earlier use of its source texel (Kaspar et al. 2015)
QUILT_SEARCH = 256     # a source canvas larger than twice this squared is searched in crops of this side
QUILT_SEPARATION = 3   # limited copies: a block continues a copy around it exactly or lies this far from it...
QUILT_REPAIR_SEPARATION = 12  # ... and a repair this far
QUILT_REPAIRS = 16     # rounds of repairs of copies that hold a max_copy square
SEG_EDGE = 2.5         # a repair first gives one flat region (a cell, a stone, a brick: edge strength below this
SEG_EDGE_MIN = 0.04    # multiple of the source's median and at least this) the content of a flat place elsewhere...
SEG_BOX = 16           # ... a region closed within this many texels of the square's middle...
SEG_MIN = 12           # ... of this many texels at least...
SEG_MAX = 400          # ... and at most...
SEG_FLAT = 0.5         # ... whose new place is this flat (share of the flatness above)...
SEG_CANDIDATES = 16    # ... (this many drawn at random)...
SEG_CHANGE = 0.03      # ... and differs in mean colour at least this much (colour units);
SEG_RING = 3           # ... the texels this near around it that hold its colour shaded (a border's near side:
SEG_SHADE = 0.995      # ... colour direction within this cosine) take the new colour shaded alike
PAIR_LEVELS = 10       # seam cost: colours quantised to this many levels per channel...
PAIR_SAMPLES = 60000   # ... from this many neighbour pairs of the source
PAIR_SHARE = 0.05      # ... a pair this common (share of the median source pair's) counts as fully plausible...
PAIR_FLOOR = 0.1       # ... and costs this share of its mismatch
MIRROR_BAND = 6        # next to the seen texels, this many texels continue them mirrored, for blocks to cut into...
MIRROR_KEEP = 0.1      # ... each mirrored texel kept costs this (blocks that agree with the seen replace them)...
MIRROR_MATCH = 0.25    # ... and counts this much in block matching
SEAM_EDGE = 0.1        # seam smoothing: steps where a copy has an edge this strong (colour units) across stay...
SEAM_STEP = 0.1        # ... and so do residual steps larger than this (both fade out over as much again), except
                       # in a texture without edges that strong
SEAM_ITERS = 100       # conjugate-gradient iterations of the seam smoothing

# repeat verification
NOISE_FACTOR = 3.0     # a repeat matches within this multiple of the difference noise alone would give
REL_TOL = 0.02         # ... or within this share of the difference between unrelated texels
PEAK = 0.2             # between zero and the shift the texture must differ at least 1 / PEAK times more
MIN_OVERLAP = 256      # texels that must overlap under a shift (and its double) to judge it
OVERLAP_SHARE = 0.2    # ... and at least this share of the seen texels
MAX_CANDIDATES = 400   # candidate shifts examined


def _generator(generator):
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(0)
    return g


def _dilate(mask, r):
    """Square dilation of a [H, W] bool mask by r texels (outside counts as False)."""
    if r <= 0:
        return mask.clone()
    return F.max_pool2d(mask.float()[None, None], 2 * r + 1, stride=1, padding=r)[0, 0] > 0.5


def _erode(mask, r):
    """Square erosion by r texels; outside the array counts as False, so the border erodes too."""
    if r <= 0:
        return mask.clone()
    m = F.pad(mask.float()[None, None], (r, r, r, r), value=0.0)
    return -F.max_pool2d(-m, 2 * r + 1, stride=1)[0, 0] > 0.5


def _even(t, value):
    """Pad the last two dims of t up to even sizes."""
    H, W = t.shape[-2:]
    if H % 2 or W % 2:
        t = F.pad(t, (0, W % 2, 0, H % 2), value=value)
    return t


def _down_all(mask):
    """Half-resolution mask: a coarse texel is set when all four of its fine texels are."""
    m = _even(mask.float()[None, None], 0.0)
    return F.avg_pool2d(m, 2)[0, 0] > 0.999


def _down_any(mask):
    m = _even(mask.float()[None, None], 0.0)
    return F.max_pool2d(m, 2)[0, 0] > 0.5


def _down(img):
    """2x2 average of a [K, H, W] image (odd sizes: the last row / column repeated)."""
    H, W = img.shape[-2:]
    x = img[None]
    if H % 2 or W % 2:
        x = F.pad(x, (0, W % 2, 0, H % 2), mode="replicate")
    return F.avg_pool2d(x, 2)[0]


def _push_pull(img, mask):
    """Fill the texels outside `mask` smoothly from those inside (push-pull: average down, interpolate up)."""
    if bool(mask.all()) or not bool(mask.any()):
        return img.clone()
    w = mask.float()[None]
    levels = [(img * w, w)]
    while min(levels[-1][1].shape[-2:]) > 1 and not bool((levels[-1][1] > 0).all()):
        s, ww = levels[-1]
        levels.append((F.avg_pool2d(_even(s, 0.0)[None], 2)[0], F.avg_pool2d(_even(ww, 0.0)[None], 2)[0]))
    s, ww = levels[-1]
    cur = s / ww.clamp_min(1e-8)
    if not bool((ww > 0).all()):  # still holes at 1 texel: the mean
        mean = (s.sum((1, 2)) / ww.sum().clamp_min(1e-8))[:, None, None]
        cur = torch.where(ww > 0, cur, mean.expand_as(cur))
    for s, ww in reversed(levels[:-1]):
        up = F.interpolate(cur[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
        up = up[:, :s.shape[1], :s.shape[2]]
        cur = s + (1 - ww) * up  # the seen mean where a cell has some, the coarser estimate for the rest
    return torch.where(mask[None], img, cur)


# ---------------------------------------------------------------------------------------------------------------
# repeats
# ---------------------------------------------------------------------------------------------------------------
def _noise_var(x, m):
    """Per-texel noise variance of the seen texels: robust spread of the residual against the 4-neighbour mean
    (residual variance of white noise = 1.25 sigma^2), averaged over channels."""
    C, H, W = x.shape
    if H < 3 or W < 3:
        return 0.0
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    if int(inner.sum()) < 16:
        return 0.0
    res = x[:, 1:-1, 1:-1] - 0.25 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
    res = res[:, inner]
    med = res.median(1, keepdim=True).values
    mad = (res - med).abs().median(1).values * 1.4826
    return float((mad ** 2).mean()) / 1.25


def _shift_differences(image, known, P):
    """Mean squared difference per channel of the seen texels against themselves under every shift (dy, dx),
    |dy|, |dx| <= P, and the count of texels that overlap: two [2P + 1, 2P + 1] grids, centre = no shift."""
    C, H, W = image.shape
    m = known.float()
    x = torch.where(known, image, torch.zeros(()))
    sq = (x * x).sum(0)
    fh, fw = H + P, W + P  # no wrap-around for shifts up to P
    Fs = torch.fft.rfft2(torch.cat([m[None], sq[None], x], 0), s=(fh, fw))

    def corr(a, b):  # sum_p a(p) b(p + s), s on the wrapped grid
        return torch.fft.irfft2(torch.conj(a) * b, s=(fh, fw))
    N = corr(Fs[0], Fs[0])
    A = corr(Fs[1], Fs[0])
    B = corr(Fs[0], Fs[1])
    X = corr(Fs[2:], Fs[2:]).sum(0)
    D = (A + B - 2 * X).clamp_min(0) / (C * N.clamp_min(1))
    dy = torch.arange(-P, P + 1) % fh
    dx = torch.arange(-P, P + 1) % fw
    return D[dy][:, dx].double(), torch.round(N[dy][:, dx]).double()


def _lattice(image, known, max_period=None):
    """The verified repeat's basis: a list of 0, 1 or 2 shifts (dy, dx), shortest first."""
    image = torch.as_tensor(image, dtype=torch.float32)
    known = torch.as_tensor(known, dtype=torch.bool)
    C, H, W = image.shape
    n = int(known.sum())
    min_overlap = max(MIN_OVERLAP, OVERLAP_SHARE * n)
    if n < 2 * min_overlap or H < 4 or W < 4:
        return []
    P = min(H - 1, W - 1, max_period if max_period else max(H, W) // 2)
    if P < 2:
        return []
    D, N = _shift_differences(image, known, P)
    x = image[:, known].double()
    unrelated = 2 * float(x.var(1).mean())
    if unrelated <= 1e-10:
        return []  # a flat colour: nothing to continue
    tol = NOISE_FACTOR * 2 * _noise_var(image.double(), known) + REL_TOL * unrelated + 1e-6
    enough = N >= min_overlap
    Dm = torch.where(enough, D, torch.full_like(D, float("inf")))
    local_min = Dm <= -F.max_pool2d(-Dm[None, None], 3, stride=1, padding=1)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(-P, P + 1), torch.arange(-P, P + 1), indexing="ij")
    half = (ys > 0) | ((ys == 0) & (xs > 0))
    reach = torch.maximum(ys.abs(), xs.abs())
    cand = enough & local_min & half & (reach >= 2) & (D <= tol)
    if not bool(cand.any()):
        return []
    cy, cx = ys[cand], xs[cand]
    length = (cy.double() ** 2 + cx.double() ** 2).sqrt()
    order = torch.argsort(length + 1e-3 * D[cand] / max(tol, 1e-12))[:MAX_CANDIDATES]

    def at(dy, dx):
        if abs(dy) > P or abs(dx) > P:
            return None
        i, j = dy + P, dx + P
        return (float(D[i, j]), float(N[i, j]))

    def repeats(dy, dx):
        d = at(dy, dx)
        if d is None or d[1] < min_overlap or d[0] > tol:
            return False
        d2 = at(2 * dy, 2 * dx)  # its double must hold too, on enough overlap
        if d2 is None or d2[1] < min_overlap or d2[0] > tol:
            return False
        d3 = at(3 * dy, 3 * dx)
        if d3 is not None and d3[1] >= min_overlap and d3[0] > tol:
            return False
        # a peak: somewhere between zero and the shift the texture differs clearly more
        m = max(abs(dy), abs(dx))
        seg = [at(int(round(dy * k / m)), int(round(dx * k / m))) for k in range(1, m)]
        top = max(s[0] for s in seg if s is not None)
        return top >= max(d[0] / PEAK, 2 * tol, 0.1 * unrelated)

    basis = []
    for k in order.tolist():
        dy, dx = int(cy[k]), int(cx[k])
        if basis and basis[0][0] * dx - basis[0][1] * dy == 0:
            continue  # along the first shift: a multiple of it
        if not repeats(dy, dx):
            continue
        if basis:
            ok = True
            for sy, sx in ((basis[0][0] + dy, basis[0][1] + dx), (basis[0][0] - dy, basis[0][1] - dx)):
                d = at(sy, sx)
                if d is not None and d[1] >= min_overlap and d[0] > tol:
                    ok = False
            if not ok:
                continue
        basis.append((dy, dx))
        if len(basis) == 2:
            break
    return basis


def verified_repeat(image, known, max_period=None):
    """The texture's repeat as a 2-D shift (dy, dx) in texels, only when it is verified: the known texels match
    themselves under that shift (and its small multiples) within the texture's own noise level, on enough
    overlap, and the match is a real peak (the texture differs between zero and the shift). None for textures
    without a repeat (voronoi, noise, photographs of gravel or grass), also where a weak autocorrelation peak
    exists. max_period: the longest shift (texels along either axis) tried; default half the chart."""
    basis = _lattice(image, known, max_period)
    return basis[0] if basis else None


def _copy_along(image, have, todo, basis):
    """Fill `todo` texels from `have` texels along the lattice of `basis` shifts: rounds of one lattice step, each
    texel taking the mean of its neighbours on the lattice that already hold content (nearest copies first;
    equally near copies are averaged, which blends seams). Returns (image, reached mask)."""
    C, H, W = image.shape
    steps = []
    for s in basis:
        steps += [s, (-s[0], -s[1])]
    if len(basis) == 2:
        (a, b), (c, d) = basis
        steps += [(a + c, b + d), (-a - c, -b - d), (a - c, b - d), (c - a, d - b)]
    out = image.clone()
    cur = have.clone()
    left = todo.clone()
    reached = torch.zeros_like(todo)
    pad = max(max(abs(s[0]), abs(s[1])) for s in steps)
    while bool(left.any()):
        src = F.pad(torch.where(cur, out, torch.zeros(())), (pad, pad, pad, pad))
        ok = F.pad(cur.float(), (pad, pad, pad, pad))
        acc = torch.zeros_like(out)
        cnt = torch.zeros(H, W)
        for dy, dx in steps:  # the texel p looks at p + s
            acc += src[:, pad + dy:pad + dy + H, pad + dx:pad + dx + W]
            cnt += ok[pad + dy:pad + dy + H, pad + dx:pad + dx + W]
        new = left & (cnt > 0)
        if not bool(new.any()):
            break
        out[:, new] = acc[:, new] / cnt[new]
        cur |= new
        reached |= new
        left &= ~new
    return out, reached


# ---------------------------------------------------------------------------------------------------------------
# synthesis
# ---------------------------------------------------------------------------------------------------------------
def _canvas(parts, C, G):
    """Stack the source parts [(image, valid, guide)] into one canvas, a gap of invalid texels between parts:
    (canvas [C + G, Hc, Wc], valid [Hc, Wc])."""
    Wc = max(p[0].shape[2] for p in parts)
    rows = []
    y = 0
    for img, valid, gd in parts:
        rows.append(y)
        y += img.shape[1] + 1
    canvas = torch.zeros(C + G, y, Wc)
    ok = torch.zeros(y, Wc, dtype=torch.bool)
    for (img, valid, gd), y0 in zip(parts, rows):
        h, w = img.shape[1:]
        canvas[:C, y0:y0 + h, :w] = img
        if G:
            canvas[C:, y0:y0 + h, :w] = gd
        ok[y0:y0 + h, :w] = valid
    return canvas, ok


def _source_centres(valid, k, p):
    """[Hs, Ws] bool: canvas texels s whose patch at scale k (texels s + k o, each the mean of the block
    [s + k o, + k)) lies on valid texels only. The blocks tile the window [s - k r, s + k r + k) exactly, so this
    is a box count of invalid texels (summed-area table)."""
    r = p // 2
    Hs, Ws = valid.shape
    a, b = k * r, k * r + k  # the window reaches a texels before s and b - 1 after
    bad = F.pad((~valid).float(), (a, b, a, b), value=1.0).double()
    S = F.pad(bad.cumsum(0).cumsum(1), (1, 0, 1, 0))
    n = k * p
    box = S[n:n + Hs, n:n + Ws] - S[:Hs, n:n + Ws] - S[n:n + Hs, :Ws] + S[:Hs, :Ws]
    return box < 0.5


def _offsets(p, sparse):
    r = p // 2
    oy, ox = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    oy, ox = oy.flatten(), ox.flatten()
    if sparse:
        keep = (oy + ox) % 2 == 0
        oy, ox = oy[keep], ox[keep]
    return oy, ox


def _source_level(canvas, valid, k, p, C):
    """The source at scale k: every canvas texel is the mean of the k x k block it starts, and a patch takes every
    k-th of them. Unlike a decimated pyramid this keeps every phase of the source, so coarse levels still have
    many patches to copy from (and matches stay in full-resolution canvas texels at every level)."""
    K, Hs, Ws = canvas.shape
    if k > 1:
        blur = F.avg_pool2d(F.pad(canvas[None], (0, k - 1, 0, k - 1), mode="replicate"), k, stride=1)[0]
    else:
        blur = canvas
    centres = _source_centres(valid, k, p)
    vidx = torch.nonzero(centres.flatten())[:, 0]
    gh, gw = -(-Hs // k), -(-Ws // k)  # source cells of k x k texels: where reuse is counted
    used_cells = torch.bincount((vidx // Ws // k) * gw + (vidx % Ws) // k, minlength=gh * gw) > 0
    oy, ox = _offsets(p, False)
    ey, ex = _offsets(p, EVAL_SPARSE)
    evalS = k * ey * Ws + k * ex
    # every valid patch as one contiguous row [K, E]: distances gather whole rows, not scattered texels
    flat = blur.reshape(K, -1)
    srows = flat[:, vidx[:, None] + evalS[None]].permute(1, 0, 2).contiguous()
    row_of = torch.full((Hs * Ws,), -1, dtype=torch.long)
    row_of[vidx] = torch.arange(vidx.numel())
    return dict(k=k, Hs=Hs, Ws=Ws, blur=blur, srows=srows, row_of=row_of, flat=flat, colour=blur[:C].reshape(C, -1),
                centres_flat=centres.flatten(), vidx=vidx, cells=(gh, gw), ncells=max(1, int(used_cells.sum())),
                offS=(k * oy * Ws + k * ox), evalS=evalS)


def _pca(flat, Ws, vidx, offS, K, p, gen):
    """Descriptor basis: the leading principal directions of the source patches, as conv kernels [D, K, p, p]."""
    idx = vidx
    if idx.numel() > PCA_SAMPLES:
        idx = idx[torch.randperm(idx.numel(), generator=gen)[:PCA_SAMPLES]]
    X = flat[:, idx[:, None] + offS[None]]  # [K, n, p * p]
    X = X.permute(1, 0, 2).reshape(idx.numel(), -1)
    X = X - X.mean(0)
    cov = (X.T @ X / max(idx.numel() - 1, 1)).double()
    vals, vecs = torch.linalg.eigh(cov + 1e-9 * torch.eye(cov.shape[0], dtype=cov.dtype))
    d = min(PCA_DIMS, vecs.shape[1])
    return vecs[:, -d:].flip(1).T.float().reshape(d, K, p, p).contiguous()


def _choose_levels(fill, valid, p, levels):
    """Pyramid levels: down until the fill region is only a couple of patches across, as long as the source keeps
    enough distinct patches at that scale."""
    if levels is not None:  # as asked, as long as the source has a patch at that scale
        count = 1
        while count < int(levels) and bool(_source_centres(valid, 2 ** count, p).any()):
            count += 1
        return count
    fl = fill
    count = 1
    for lev in range(1, MAX_LEVELS):
        fl = _down_any(fl)
        k = 2 ** lev
        if not bool(_erode(fl, FILL_HALF).any()):
            break
        if int(_source_centres(valid, k, p).sum()) / (k * k) < MIN_SOURCE:
            break
        count = lev + 1
    return count


def _source_canvas(image, known, surface, guide, sources):
    """The chart's seen texels and the extra exemplars stacked in one canvas (guides as extra channels):
    (canvas [C + G, Hc, Wc], valid [Hc, Wc], guide of the chart smoothly extended outside the surface or None)."""
    C = image.shape[0]
    G = 0 if guide is None else guide.shape[0]
    if G:
        # the guide is defined on the surface; outside texels take a smooth extension (never their own values)
        guide = _push_pull(guide, surface)
    parts = [(image, known, guide)]
    for s in sources:
        img, valid, gd = s
        img = torch.as_tensor(img, dtype=torch.float32)
        valid = torch.as_tensor(valid, dtype=torch.bool)
        if img.dim() != 3 or img.shape[0] != C or valid.shape != img.shape[1:]:
            raise ValueError(f"complete: source image {tuple(img.shape)} / valid {tuple(valid.shape)} do not fit")
        if G:
            if gd is None:  # no guide there: the chart's mean guide, so it matches on colour alone
                gd = guide[:, surface].mean(1)[:, None, None].expand(G, *img.shape[1:])
            gd = torch.as_tensor(gd, dtype=torch.float32)
            if gd.shape != (G, *img.shape[1:]):
                raise ValueError(f"complete: source guide {tuple(gd.shape)} does not fit")
        parts.append((img, valid, gd))
    canvas, valid = _canvas(parts, C, G)
    canvas = torch.where(valid, canvas, torch.zeros(()))  # texels that are never read hold nothing
    return canvas, valid, guide


def _synthesise(image, known, fill, guide, sources, gen, p, levels, max_copy, blend):
    C, H, W = image.shape
    G = 0 if guide is None else guide.shape[0]
    canvas, valid, guide = _source_canvas(image, known, known | fill, guide, sources)
    if not bool(_source_centres(valid, 1, p).any()):
        # no complete patch anywhere: a smooth continuation of what was seen is all there is
        if not bool(known.any()):
            raise ValueError("complete: nothing to copy from (no known texels and no valid source patch)")
        return torch.where(fill[None], _push_pull(image, known), image)

    L = _choose_levels(fill, valid, p, levels)
    target0 = torch.where(known, image, torch.zeros(()))
    if G:
        target0 = torch.cat([target0, guide], 0)
    targ, kns, fls = [target0], [known], [fill]
    for _ in range(1, L):
        targ.append(_down(targ[-1]))
        kn = _down_all(kns[-1])
        fls.append(_down_any(fls[-1]) & ~kn)
        kns.append(kn)

    prev = None
    for lev in reversed(range(L)):
        coarsest = prev is None
        n_em, n_pm = SCHEDULE[0 if coarsest else (2 if lev == 0 else 1)]
        st = _setup(_source_level(canvas, valid, 2 ** lev, p, C), targ[lev], kns[lev], fls[lev], C, p)
        # the copy limit in this level's texels; where copies are cut small, seams are everywhere and colour
        # differences count more fully, so that they settle where the copies agree
        st["R"] = None if max_copy is None else max(COPY_MIN, int(round(max_copy / 2 ** lev)))
        st["tau"] = TAU if max_copy is None else TAU_LIMITED
        if coarsest:
            st["kernels"] = _pca(st["flat"], st["Ws"], st["vidx"], st["offS"], st["T"].shape[0], p, gen)
            st["dS"] = F.conv2d(st["blur"][None], st["kernels"], padding=st["k"] * st["r"],
                                dilation=st["k"])[0].flatten(1).T.contiguous()
            _init_blocks(st, gen)
        else:
            _init_from(st, prev, gen)
        _vote(st)
        for e in range(n_em):
            extra = _exhaustive(st) if coarsest else None
            for it in range(n_pm):
                _patchmatch(st, it + e * n_pm, gen, extra)
            if lev == 0 and e == n_em - 1 and st["R"] is not None:
                # repair: the copies still larger than the limit are broken up (only they may change, so that
                # no new one forms next to them), until none is left
                idle = 0
                for it in range(REPAIRS):
                    idle = 0 if _patchmatch(st, it, gen, hard=True) else idle + 1
                    if idle == 2:  # neither colour of the checkerboard has any left
                        break
            _vote(st)
        prev = st
    if blend:
        # seams between copies are blended by the votes of the patches that overlap them
        _vote(prev, final=True)
    pad = prev["pad"]
    res = prev["T"][:C, pad:pad + H, pad:pad + W]
    res = _feather(res, known, fill)
    return torch.where(fill[None], res, image)


def _feather(img, known, fill):
    """Remove the small colour steps left between seen and invented texels: the step measured across the boundary
    (smoothed along it, and clipped to FEATHER_STEP so that real edges such as a cell cut by the boundary stay
    sharp) is added to the invented texels, fading out over FEATHER texels (a cheap membrane, Perez et al. 2003)."""
    if FEATHER <= 0 or not bool(known.any()):
        return img
    C, H, W = img.shape
    kn = known.float()
    # per boundary texel: mean of (seen neighbour - itself) over its seen 4-neighbours
    delta = torch.zeros(C, H, W)
    cnt = torch.zeros(H, W)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        sk = torch.roll(kn, (dy, dx), (0, 1))
        si = torch.roll(img, (dy, dx), (1, 2))
        ok = sk * fill.float()  # (roll wraps: the wrapped row / column is masked below)
        if dy:
            ok[0 if dy > 0 else -1] = 0
        if dx:
            ok[:, 0 if dx > 0 else -1] = 0
        delta += (si - img) * ok
        cnt += ok
    edge = cnt > 0
    delta = torch.where(edge, delta / cnt.clamp_min(1), torch.zeros(()))
    size = delta.norm(dim=0, keepdim=True)
    delta = delta * (FEATHER_STEP / size.clamp_min(FEATHER_STEP))
    # smoothed along the boundary (normalised convolution), then faded with the distance from the seen texels
    g = torch.exp(-torch.arange(-6, 7, dtype=torch.float32) ** 2 / (2 * 2.0 ** 2))
    g = g / g.sum()

    def blur(x):
        x = F.conv2d(x[:, None], g.view(1, 1, 1, -1), padding=(0, 6))
        return F.conv2d(x, g.view(1, 1, -1, 1), padding=(6, 0))[:, 0]
    num, den = blur(delta), blur(edge.float()[None])
    reach = known.clone()
    fade = torch.zeros(H, W)
    for i in range(FEATHER):
        reach = _dilate(reach, 1)
        fade += reach.float()  # texels at distance d from the seen get FEATHER - d + 1 of FEATHER steps
    fade = (fade / FEATHER) * fill.float()
    corr = torch.where(den > 1e-3, num / den.clamp_min(1e-3), torch.zeros(())) * fade
    return img + corr


def _setup(src, target, known, fill, C, p):
    r = p // 2
    pad = 3 * r
    T = F.pad(target[None], (pad, pad, pad, pad), mode="replicate")[0].clone()
    kn = F.pad(known, (pad, pad, pad, pad), value=False)
    fl = F.pad(fill, (pad, pad, pad, pad), value=False)
    Ht, Wt = kn.shape
    Q = _dilate(fl, r)               # patch centres: every patch that touches a fill texel
    work = _dilate(fl, 2 * r) & ~kn  # texels those patches cover, other than seen ones: synthesised
    qidx = torch.nonzero(Q.flatten())[:, 0]
    oy, ox = _offsets(p, False)
    ey, ex = _offsets(p, EVAL_SPARSE)
    pos = torch.full((Ht * Wt,), -1, dtype=torch.long)
    pos[qidx] = torch.arange(qidx.numel())
    widx = torch.nonzero(work.flatten())[:, 0]
    # work texels this close to seen ones are voted by all covering patches (the seam with the seen)
    band = (_dilate(kn, BAND) & work).flatten()[widx] if BAND > 0 else torch.zeros(widx.numel(), dtype=torch.bool)
    st = dict(src)
    st.update(band=band, C=C, p=p, r=r, pad=pad, Ht=Ht, Wt=Wt, H=known.shape[0], W=known.shape[1], T=T, known=kn,
              qidx=qidx, qy=qidx // Wt, qx=qidx % Wt, widx=widx,
              wq=pos[widx], offT=(oy * Wt + ox), evalT=(ey * Wt + ex),
              unit=UNIT ** 2 * ey.numel())
    st["trust"] = _trust(st)
    seen = kn.flatten()[qidx[:, None] + st["evalT"][None]]
    st["tweight"] = torch.where(seen, torch.full(seen.shape, KNOWN_WEIGHT), torch.ones(seen.shape))
    return st


def _trust(st):
    """Vote weights of the patches by their distance to seen texels (Wexler et al.: gamma^-distance)."""
    Ht, Wt = st["Ht"], st["Wt"]
    dist = torch.zeros(Ht, Wt)
    reach = st["known"].clone()
    for _ in range(TRUST_REACH):
        reach = _dilate(reach, 1)
        dist += (~reach).float()
    return (TRUST_GAMMA ** -dist).flatten()[st["qidx"]]


def _random_centres(st, n, gen):
    v = st["vidx"]
    return v[torch.randint(0, v.numel(), (n,), generator=gen)]


def _valid_src(st, sy, sx):
    """Flat canvas index of (sy, sx) where that is a valid patch centre, else -1."""
    Hs, Ws = st["Hs"], st["Ws"]
    inside = (sy >= 0) & (sy < Hs) & (sx >= 0) & (sx < Ws)
    f = (sy.clamp(0, Hs - 1) * Ws + sx.clamp(0, Ws - 1))
    ok = inside & st["centres_flat"][f]
    return torch.where(ok, f, torch.full_like(f, -1))


def _set_nnf(st, f):
    st["f"] = f
    grid = torch.full((st["Ht"] * st["Wt"],), -1, dtype=torch.long)
    grid[st["qidx"]] = f
    st["grid"] = grid
    st["cost"] = None  # unknown until measured against the current image


def _init_blocks(st, gen):
    """Coarsest level: a quilting-like random placement (Efros and Freeman 2001, without the cut: the
    optimisation moves the seams): irregular regions about INIT_BLOCK texels across (the cells around jittered
    seeds, so no seam starts out straight) each copy a random source place coherently."""
    k, B = st["k"], INIT_BLOCK
    qy, qx = st["qy"].float(), st["qx"].float()
    gy = torch.arange(0, st["Ht"] + B, B, dtype=torch.float32)
    gx = torch.arange(0, st["Wt"] + B, B, dtype=torch.float32)
    sy0, sx0 = torch.meshgrid(gy, gx, indexing="ij")
    sy0 = sy0.flatten() + torch.rand(sy0.numel(), generator=gen) * B
    sx0 = sx0.flatten() + torch.rand(sx0.numel(), generator=gen) * B
    label = torch.cat([((qy[i:i + 4096, None] - sy0) ** 2 + (qx[i:i + 4096, None] - sx0) ** 2).argmin(1)
                       for i in range(0, qy.numel(), 4096)])
    start = _random_centres(st, sy0.numel(), gen)
    cy, cx = sy0.round().long()[label], sx0.round().long()[label]
    sy = start[label] // st["Ws"] + k * (st["qy"] - cy)
    sx = start[label] % st["Ws"] + k * (st["qx"] - cx)
    f = _valid_src(st, sy, sx)
    bad = f < 0
    f[bad] = start[label][bad]  # off the source: the region's own seed place
    _set_nnf(st, f)


def _init_from(st, prev, gen):
    """A finer level starts from the coarser level's matches: the fine texel 2q + e copies from the coarse match of
    q moved by e fine steps."""
    pad, ppad, k = st["pad"], prev["pad"], st["k"]
    y, x = st["qy"] - pad, st["qx"] - pad          # chart coordinates (negative in the padding)
    cy, cx = torch.div(y, 2, rounding_mode="floor") + ppad, torch.div(x, 2, rounding_mode="floor") + ppad
    inside = (cy >= 0) & (cy < prev["Ht"]) & (cx >= 0) & (cx < prev["Wt"])
    cf = prev["grid"][(cy.clamp(0, prev["Ht"] - 1) * prev["Wt"] + cx.clamp(0, prev["Wt"] - 1))]
    cf = torch.where(inside, cf, torch.full_like(cf, -1))
    f = _valid_src(st, cf // st["Ws"] + k * (y % 2), cf % st["Ws"] + k * (x % 2))
    f = torch.where(cf >= 0, f, torch.full_like(f, -1))
    bad = f < 0
    if bool(bad.any()):  # the coarse match moved off the source: its neighbour on the source side
        f[bad] = _valid_src(st, cf[bad] // st["Ws"], cf[bad] % st["Ws"])
        bad = f < 0
        f[bad] = _random_centres(st, int(bad.sum()), gen)
    _set_nnf(st, f)


def _source_subset(st, limit):
    """Source patch places for exhaustive searches: one phase (every k-th texel), evenly thinned to `limit`."""
    k = st["k"]
    v = st["vidx"]
    sub = v[((v // st["Ws"]) % k == 0) & ((v % st["Ws"]) % k == 0)]
    if sub.numel() < 16:
        sub = v
    if sub.numel() > limit:
        sub = sub[torch.linspace(0, sub.numel() - 1, limit).long()]
    return sub


def _exhaustive(st, top=EXACT_TOP):
    """The `top` nearest source patches of every target patch (PCA descriptors, exhaustive over the source places of
    one phase): at the coarsest level the boundary patches must find their true match, which random search alone
    finds too rarely. [n, top] canvas indices."""
    d = F.conv2d(st["T"][None], st["kernels"])[0]  # valid positions: padded coords shifted by r
    r = st["r"]
    dT = F.pad(d, (r, r, r, r)).flatten(1).T[st["qidx"]]
    sub = _source_subset(st, EXACT_MAX)
    B = st["dS"][sub]
    b2 = (B * B).sum(1)
    out = []
    for a in dT.split(2048):
        dist = b2[None] - 2 * a @ B.T
        out.append(sub[dist.topk(min(top, sub.numel()), 1, largest=False).indices])
    return torch.cat(out, 0)


def _distance(st, qi, s):
    """Patch distances [P] between target patches qi (positions in the centre list) and source patches s (canvas
    places): per texel the squared colour difference, truncated at TAU^2 (a patch that continues one side of a
    seam exactly and misses the other beats a flat compromise that misses everything a little, which plain L2
    prefers: that preference is what washes textures out), plus the guides' squared difference (not truncated:
    guides steer)."""
    C = st["C"]
    tp = st["tpatch"].index_select(0, qi)                # [P, K, E]
    sp = st["srows"].index_select(0, st["row_of"][s])     # [P, K, E]
    d = (sp - tp).square_()
    e = d[:, :C].sum(1).clamp_max_(st["tau"] ** 2)
    if KNOWN_WEIGHT != 1.0:  # seen texels weigh more: invented texels continue what was seen
        e *= st["tweight"].index_select(0, qi)
    if d.shape[1] > C:
        e += d[:, C:].sum(1)
    return e.sum(1)


KEY = 1 << 24  # offsets (dy, dx) packed into one integer: dy * KEY + dx


def _keys(st):
    """Per target place, the offset key of its match (source place minus k x target place); a value no offset has
    where there is no match."""
    Ws, k = st["Ws"], st["k"]
    f = st["f"]
    key = torch.full((st["Ht"] * st["Wt"],), -(1 << 62), dtype=torch.long)
    key[st["qidx"]] = (f // Ws - k * st["qy"]) * KEY + (f % Ws - k * st["qx"])
    return key


def _unkey(key):
    """(dy, dx) from offset keys (a missing match decodes to a far-away offset)."""
    h = key + KEY // 2
    return torch.div(h, KEY, rounding_mode="floor"), h % KEY - KEY // 2


def _key_at(st, keys, qy, qx, dy, dx):
    Ht, Wt = st["Ht"], st["Wt"]
    ny, nx = qy + dy, qx + dx
    inside = (ny >= 0) & (ny < Ht) & (nx >= 0) & (nx < Wt)
    kk = keys[ny.clamp(0, Ht - 1) * Wt + nx.clamp(0, Wt - 1)]
    return torch.where(inside, kk, torch.full_like(kk, -(1 << 62)))


def _penalties(st, keys, use, qy, qx, cand, hard=False):
    """Charges [n, K] for candidate matches cand [n, K] (canvas places, >= 0) at target places (qy, qx) [n]; hard:
    a copy larger than the limit is ruled out, not charged."""
    Ws, k, unit = st["Ws"], st["k"], st["unit"]
    ck = (cand // Ws - k * qy[:, None]) * KEY + (cand % Ws - k * qx[:, None])
    pen = torch.zeros(cand.shape)
    if COHERENCE > 0 or SEAM > 0:
        agree = torch.zeros(cand.shape)
        seam = torch.zeros(cand.shape)
        mine = st["colour"][:, cand]                                   # [C, n, K]: what the candidate puts here
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            kk = _key_at(st, keys, qy, qx, dy, dx)
            agree += kk[:, None] == ck
            if SEAM > 0:
                # a seam with this neighbour's copy costs what the two copies disagree on here (the seam cost of
                # Kwatra et al.'s graph-cut textures): seams run where copies agree, not straight through a cell
                ny, nx = _unkey(kk)
                sy, sx = ny + k * qy, nx + k * qx
                inside = (sy >= 0) & (sy < st["Hs"]) & (sx >= 0) & (sx < Ws)
                theirs = st["colour"][:, (sy.clamp(0, st["Hs"] - 1) * Ws + sx.clamp(0, Ws - 1))]  # [C, n]
                d = ((mine - theirs[:, :, None]) ** 2).sum(0).clamp_max(st["tau"] ** 2)
                seam += torch.where(inside[:, None] & (kk[:, None] != ck), d, torch.zeros(()))
        pen += COHERENCE * unit * (1 - agree / 4) + SEAM * seam
    R = st.get("R")
    if R is not None:
        # a copy may not span R texels: a match R texels away with the same offset is charged (in the last
        # iterations: ruled out)
        hits = torch.zeros(cand.shape)
        for dy, dx in ((0, R), (0, -R), (R, 0), (-R, 0)):
            hits += _key_at(st, keys, qy, qx, dy, dx)[:, None] == ck
        pen += torch.where(hits > 0, torch.full_like(hits, float("inf")), hits) if hard else COPY_PENALTY * unit * hits
        # and one offset may not serve much more than a few such copies in the chart, or copies cut small would
        # reassemble the exemplar's layout (a pasted strip with scars)
        ukeys, counts = st["offset_use"]
        i = torch.searchsorted(ukeys, ck).clamp_max(ukeys.numel() - 1)
        used = torch.where(ukeys[i] == ck, counts[i], torch.zeros_like(counts[i])).float()
        allow = COPY_REUSE * R * R
        pen += COPY_PENALTY * unit * ((used - allow) / allow).clamp(0, 4)
    if use is not None:
        gw = st["cells"][1]
        cell = ((cand // Ws) // k) * gw + (cand % Ws) // k
        share = max(1.0, st["f"].numel() / st["ncells"])
        pen += OCCURRENCE * unit * (use[cell] - share).clamp_min(0) / share
    return pen


def _patchmatch(st, it, gen, extra=None, hard=False):
    """One parallel PatchMatch iteration (Barnes et al. 2009) over the target patches that are not settled (an exact
    copy that continues all its neighbours' copies and pays nothing has nothing to gain). hard: only the matches in
    a copy larger than the limit search, and such copies are ruled out. Returns whether any patch searched."""
    Ws, k = st["Ws"], st["k"]
    f = st["f"]
    n = f.numel()
    fresh = st["cost"] is None  # the image changed since the last search: every patch is measured again
    if fresh:
        st["cost"] = _distance(st, torch.arange(n), f)
    use = None
    if OCCURRENCE > 0:
        gh, gw = st["cells"]
        use = torch.bincount(((f // Ws) // k) * gw + (f % Ws) // k, minlength=gh * gw).float().view(1, 1, gh, gw)
        use = F.avg_pool2d(use, 3, stride=1, padding=1).flatten()
    keys = _keys(st)
    if st.get("R") is not None:
        st["offset_use"] = torch.unique(keys[st["qidx"]], return_counts=True)
    pen_cur = _penalties(st, keys, use, st["qy"], st["qx"], f[:, None], hard)[:, 0]
    active = (st["cost"] > 1e-9) | (pen_cur > SETTLED * st["unit"])
    if hard:
        # only the matches of a copy that is too large, and of those only one colour of a checkerboard of R x R
        # blocks at a time: two matches R texels apart are never in the same colour, so two simultaneous changes
        # cannot make a new such pair
        R = st["R"]
        active = torch.isinf(pen_cur) & ((torch.div(st["qy"], R, rounding_mode="floor")
                                          + torch.div(st["qx"], R, rounding_mode="floor") + it) % 2 == 0)
    elif not fresh:
        # between votes, a patch whose neighbourhood did not change has already seen its propagation candidates:
        # only a share of those searches again (at random)
        near = _near_changed(st)
        active &= near | (torch.rand(n, generator=gen) < REVISIT) | torch.isinf(pen_cur)
    act = torch.nonzero(active)[:, 0]
    st["changed"] = torch.zeros(n, dtype=torch.bool)
    if act.numel() == 0:
        return False
    fa, qy, qx = f[act], st["qy"][act], st["qx"][act]
    na = act.numel()
    sy, sx = fa // Ws, fa % Ws
    cands = []
    jump = JUMPS[it % len(JUMPS)]
    dirs = ((0, 1), (0, -1), (1, 0), (-1, 0))
    steps = ((1, dirs), (2, dirs)) if hard else ((1, dirs), (jump, dirs[:2] if it % 2 else dirs[2:]))
    for j, ds in steps:
        for dy, dx in ds:
            ny, nx = _unkey(_key_at(st, keys, qy, qx, j * dy, j * dx))  # the neighbour's copy, continued here
            cands.append(_valid_src(st, ny + k * qy, nx + k * qx))
    if not hard:  # (a repair only grows the neighbouring copies in: random places would be shards)
        R = max(st["Hs"], Ws)
        for t in range(RANDOM_TRIES):
            rad = max(k, int(R * 0.25 ** t * (0.5 if it % 2 else 1.0)))
            ry = torch.randint(-rad, rad + 1, (na,), generator=gen)
            rx = torch.randint(-rad, rad + 1, (na,), generator=gen)
            cands.append(_valid_src(st, sy + ry, sx + rx))
        cands.append(_random_centres(st, na, gen))
    if extra is not None:
        cands += list(extra[act].T)
    cand = torch.stack(cands, 1)                                  # [na, K]
    ok = (cand >= 0) & (cand != fa[:, None])
    cand = torch.where(ok, cand, fa[:, None])
    pi, pk = torch.nonzero(ok, as_tuple=True)
    cost = torch.full(cand.shape, float("inf"))
    if pi.numel():
        cost[pi, pk] = _distance(st, act[pi], cand[pi, pk])
    score = cost + _penalties(st, keys, use, qy, qx, cand, hard)
    best = torch.argmin(score, 1)
    bs = score.gather(1, best[:, None])[:, 0]
    better = bs < st["cost"][act] + pen_cur[act]
    if bool(better.any()):
        a = act[better]
        nf = cand[better, best[better]]
        f[a] = nf
        st["cost"][a] = cost[better, best[better]]
        st["grid"][st["qidx"][a]] = nf
        st["changed"][a] = True
    return True


def _near_changed(st):
    """[n] bool: patch centres within one texel of a centre whose match changed in the last search."""
    g = torch.zeros(st["Ht"] * st["Wt"])
    g[st["qidx"]] = st["changed"].float()
    g = F.max_pool2d(g.view(1, 1, st["Ht"], st["Wt"]), 3, stride=1, padding=1).flatten()
    return g[st["qidx"]] > 0.5


def _mean_vote(st, texels, w, radius, modes=0, own=1.0):
    """Texels (flat target places) take the weighted mean of what the patches centred within `radius` of them put
    there; w [n]: the weight of each patch. modes: mean-shift steps (MODE_WIDTH) from the mean towards the
    strongest group of agreeing votes, so that votes that disagree (a cell border and a cell) are not averaged."""
    wgrid = torch.zeros(st["Ht"] * st["Wt"])
    wgrid[st["qidx"]] = w
    offT, offS = st["offT"], st["offS"]
    if radius < st["r"]:
        oy, ox = _offsets(st["p"], False)
        near = (oy.abs() <= radius) & (ox.abs() <= radius)
        offT, offS = offT[near], offS[near]
    q = texels[None, :] - offT[:, None]   # [m, n]: the centre of each covering patch
    fq = st["grid"][q]
    okq = fq >= 0
    wv = torch.where(okq, wgrid[q], torch.zeros(()))
    if own != 1.0:  # the texel's own patch counts `own` times
        wv[offT == 0] *= own
    vals = st["colour"][:, (fq + offS[:, None]).clamp_min(0)]  # [C, m, n]
    den = wv.sum(0)
    got = den > 0
    m = (vals * wv[None]).sum(1) / den.clamp_min(1e-12)
    for _ in range(modes):
        wm = wv * torch.exp(-((vals - m[:, None]) ** 2).sum(0) / (2 * MODE_WIDTH ** 2))
        m = (vals * wm[None]).sum(1) / wm.sum(0).clamp_min(1e-12)
    T = st["T"].view(st["T"].shape[0], -1)
    T[:st["C"], texels[got]] = m[:, got]


def _vote(st, final=False):
    """Write the matches into the image. During the optimisation each texel takes the centre of its own match (no
    averaging: averages of patches that disagree blur, and the blur feeds back into the matching), except next to
    seen texels, where the mean of all covering patches carries what was seen into the invented (Wexler et al.);
    margin texels that are no patch centre take that mean too. The final pass blends the seams between copies
    with the patches centred within BLEND_RADIUS of each texel."""
    widx, wq, band = st["widx"], st["wq"], st["band"]
    centre = (wq >= 0) & ~band
    T = st["T"].view(st["T"].shape[0], -1)
    T[:st["C"], widx[centre]] = st["colour"][:, st["f"][wq[centre]]]
    w = st["trust"]
    if st["cost"] is not None:  # matches measured against the image they were found for
        s2 = float(torch.quantile(st["cost"], 0.75)) + 1e-6
        w = w * torch.exp(-st["cost"] / (2 * s2))
    rest = widx[~centre]
    if rest.numel():
        _mean_vote(st, rest, w, st["r"], BAND_MODES)
    if final and BLEND_RADIUS > 0:
        _mean_vote(st, widx[centre], w, BLEND_RADIUS, BLEND_MODES, BLEND_OWN)
    st["cost"] = None
    st["tpatch"] = T[:, st["qidx"][:, None] + st["evalT"][None]].permute(1, 0, 2).contiguous()  # [n, K, E]


# ---------------------------------------------------------------------------------------------------------------
# quilting with minimum-error boundary cuts
# ---------------------------------------------------------------------------------------------------------------
_NONE = -(1 << 62)     # label of a texel that holds no copy (seen, outside, not yet invented); else its copy's offset
_MIRROR = -(1 << 61)   # label of a texel of the mirrored band next to the seen texels       (source - target, packed)


def _block_positions(valid, B):
    """[Hs, Ws] bool: canvas places whose B x B block (from that corner) lies on valid texels only."""
    Hs, Ws = valid.shape
    bad = F.pad((~valid).double(), (0, B, 0, B), value=1.0)
    S = F.pad(bad.cumsum(0).cumsum(1), (1, 0, 1, 0))
    box = S[B:B + Hs, B:B + Ws] - S[:Hs, B:B + Ws] - S[B:B + Hs, :Ws] + S[:Hs, :Ws]
    return box < 0.5


def _mirror(image, known, fill, width):
    """Fill texels within `width` of the seen ones: the seen content mirrored about the boundary between them, the
    one continuation that is continuous across it (a seen cell cut by the boundary goes on). Returns (values
    [C, H, W], mask [H, W], source [H, W] flat index of the mirrored texel)."""
    C, H, W = image.shape
    r = width + 1
    near = fill & _dilate(known, width)
    ys, xs = torch.nonzero(near, as_tuple=True)
    best = torch.full((ys.numel(),), float("inf"))
    src = torch.full((ys.numel(),), -1, dtype=torch.long)
    kflat = known.flatten()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            d2 = dy * dy + dx * dx
            if d2 == 0 or d2 > r * r:
                continue
            ky, kx = ys + dy, xs + dx
            inside = (ky >= 0) & (ky < H) & (kx >= 0) & (kx < W)
            hit = inside & kflat[(ky.clamp(0, H - 1) * W + kx.clamp(0, W - 1))]
            better = hit & (d2 < best)
            if not bool(better.any()):
                continue
            # the boundary lies half a texel from the nearest seen texel k: p mirrors to k + (k - p)(1 - 1 / |p - k|)
            f = 1 - 1 / d2 ** 0.5
            sy = torch.round(ky + dy * f).long()
            sx = torch.round(kx + dx * f).long()
            ok = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
            s = sy.clamp(0, H - 1) * W + sx.clamp(0, W - 1)
            ok &= kflat[s]
            best = torch.where(better, torch.full_like(best, float(d2)), best)
            src = torch.where(better, torch.where(ok, s, torch.full_like(s, -1)), src)
    keep = (src >= 0) & (best <= width * width)
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[ys[keep], xs[keep]] = True
    source = torch.full((H, W), -1, dtype=torch.long)
    source[ys[keep], xs[keep]] = src[keep]
    vals = image.reshape(C, -1)[:, source.clamp_min(0).flatten()].reshape(C, H, W)
    return vals, mask, source


class _Pairs:
    """Which colours lie next to each other in the source: a table over pairs of quantised colours (first three
    channels, PAIR_LEVELS levels each, each colour spread over the corners of its cell) of how often two neighbouring
    texels of the source hold them. A cut that shows two colours side by side that the source never shows side by
    side (two cells' colours without the border between them, two bricks without mortar, a jump in a smooth noise)
    shows; one that shows a pair the source has (a border next to any cell, mortar next to any brick) does not."""

    def __init__(self, canvas, valid, gen):
        L = PAIR_LEVELS
        x = canvas[:3].clamp(0, 1) * (L - 1)
        if x.shape[0] < 3:
            x = torch.cat([x, torch.zeros(3 - x.shape[0], *x.shape[1:])], 0)
        a, b = [], []
        for dy, dx in ((0, 1), (1, 0)):
            ok = valid[:valid.shape[0] - dy, :valid.shape[1] - dx] & valid[dy:, dx:]
            a.append(x[:, :x.shape[1] - dy, :x.shape[2] - dx][:, ok])
            b.append(x[:, dy:, dx:][:, ok])
        a, b = torch.cat(a, 1), torch.cat(b, 1)
        if a.shape[1] > PAIR_SAMPLES:
            keep = torch.randperm(a.shape[1], generator=gen)[:PAIR_SAMPLES]
            a, b = a[:, keep], b[:, keep]
        ia, wa = self._corners(a)
        ib, wb = self._corners(b)
        n = L ** 3
        idx = (ia[:, :, None] * n + ib[:, None, :]).flatten()
        w = (wa[:, :, None] * wb[:, None, :]).flatten()
        table = torch.zeros(n * n, dtype=torch.float64).index_add_(0, idx, w.double()).view(n, n)
        table = table + table.T
        own = table.flatten()[self._index(a, b)]
        self.table = (table / max(float(own.median()) * PAIR_SHARE, 1e-12)).clamp_max(1).float().numpy().ravel()

    @staticmethod
    def _corners(x):
        L = PAIR_LEVELS
        f = x.floor().clamp(0, L - 2)
        t = x - f
        f = f.long()
        idx, w = [], []
        for k in range(8):
            o = torch.tensor([(k >> 2) & 1, (k >> 1) & 1, k & 1])[:, None]
            idx.append(((f[0] + o[0]) * L + (f[1] + o[1])) * L + (f[2] + o[2]))
            w.append(torch.where(o.bool(), t, 1 - t).prod(0))
        return torch.stack(idx, 1), torch.stack(w, 1)

    @staticmethod
    def _index(a, b):
        L = PAIR_LEVELS
        qa, qb = a.round().long(), b.round().long()
        return ((qa[0] * L + qa[1]) * L + qa[2]) * L ** 3 + (qb[0] * L + qb[1]) * L + qb[2]

    def plausible(self, a, b):
        """[...] in 0..1: how plausible colours a, b [C, ...] (numpy) are as neighbours."""
        L = PAIR_LEVELS

        def q(x):
            x = np.clip(x[:3], 0, 1) * (L - 1)
            if x.shape[0] < 3:
                x = np.concatenate([x, np.zeros((3 - x.shape[0],) + x.shape[1:], x.dtype)], 0)
            x = np.rint(x).astype(np.int64)
            return (x[0] * L + x[1]) * L + x[2]
        return self.table[q(a) * L ** 3 + q(b)]


def _pair_costs(A, N, has, need, axis, pairs):
    """Seam cost of each pair of neighbouring texels along `axis` (-1: (i, j)-(i, j + 1); -2: (i, j)-(i + 1, j)) of
    a window with old content A and new content N [C, h, w], the old content kept on the first texel: the two
    copies' mismatch at both texels (Kwatra et al. 2003), discounted where the two colours the cut puts side by side
    are a pair the source shows (`_Pairs`): then the cut runs along a border, not through a cell. A texel still to
    invent has no old content: twice the other texel's mismatch."""
    def a(x):
        return x[..., :-1] if axis == -1 else x[..., :-1, :]

    def b(x):
        return x[..., 1:] if axis == -1 else x[..., 1:, :]
    d = np.sqrt(((A - N) ** 2).sum(0))
    hs, ht, ns, nt, ds, dt = a(has), b(has), a(need), b(need), a(d), b(d)
    num = np.where(hs & ht, ds + dt, np.where(hs & nt, 2 * ds, np.where(ht & ns, 2 * dt, 0.0)))
    return num * (1 - pairs.plausible(a(A), b(N)) * (1 - PAIR_FLOOR))


def _cut_dp(ch, cv, forbid, unary):
    """The minimum-error boundary cut (Efros and Freeman 2001) among the cuts that cross every row once: in row i the
    texels left of j_i keep the old content, the others take the new. ch [h, n]: cost of cutting between columns j - 1
    and j (j = 1..n; the cut at n keeps all n columns); cv [h - 1, n]: cost of separating (i, c) from (i + 1, c), paid
    for every column the cut passes between rows i and i + 1 (so it may run along a row: along mortar, along a cell
    border); forbid [h, n + 1]; unary [h, n + 1] a cost per row and position. Dynamic programming over rows."""
    h, n = ch.shape
    vert = np.concatenate([np.zeros((h, 1)), ch], 1) + unary
    vert = np.where(forbid, np.inf, vert)
    cs = np.concatenate([np.zeros((h - 1, 1)), np.cumsum(cv, 1)], 1)
    trans = np.abs(cs[:, :, None] - cs[:, None, :])  # [h - 1, j, j']
    acc = vert[0]
    back = np.zeros((h, n + 1), np.int64)
    ar = np.arange(n + 1)
    for i in range(1, h):
        t = acc[:, None] + trans[i - 1]
        arg = t.argmin(0)
        acc = vert[i] + t[arg, ar]
        back[i] = arg
    j = np.zeros(h, np.int64)
    j[-1] = int(np.argmin(acc))
    for i in range(h - 1, 0, -1):
        j[i - 1] = back[i, j[i]]
    return j, float(acc[j[-1]])


def _side_cut(A, N, state, keep, n, pairs):
    """New-content mask [h, w] of a window from a cut through its first n columns (state: 0 outside the surface, 1 seen,
    2 invented before, 3 still to invent; keep: a cost per old texel kept). Seen texels stay old, texels still to
    invent become new, and the cut does not run along the window's edge where old content lies beyond it."""
    C, h, w = A.shape
    n = min(n, w)
    has = (state == 1) | (state == 2)
    need = state == 3
    m = min(n + 1, w)
    ch = _pair_costs(A[:, :, :m], N[:, :, :m], has[:, :m], need[:, :m], -1, pairs)  # pairs (j - 1, j), j = 1..m - 1
    if m == n:  # (the window is no wider than the range: a cut at n costs nothing more)
        ch = np.concatenate([ch, np.zeros((h, 1))], 1)
    cv = _pair_costs(A[:, :, :n], N[:, :, :n], has[:, :n], need[:, :n], -2, pairs)
    nd = need[:, :n]
    forbid = np.concatenate([np.zeros((h, 1), bool), np.cumsum(nd, 1) > 0], 1)        # texels to invent left of it
    seen = state[:, :n] == 1
    forbid |= np.concatenate([np.cumsum(seen[:, ::-1], 1)[:, ::-1] > 0, np.zeros((h, 1), bool)], 1)  # seen right
    forbid[:, 0] |= state[:, 0] == 2
    forbid[forbid.all(1)] = False
    unary = np.concatenate([np.zeros((h, 1)), np.cumsum(keep[:, :n], 1)], 1)
    j, cost = _cut_dp(ch, cv, forbid, unary)
    return np.arange(w)[None] >= j[:, None], cost


def _cut(old, new, state, keep, n, pairs):
    """New-content mask of a window, the intersection of the cuts on each side that has old content invented before
    (in the window's first n texels from that side), and the cuts' total cost."""
    mask = np.ones(state.shape, bool)
    total = 0.0
    for flip in range(4):
        a, b, t, k = old, new, state, keep
        if flip & 1:
            a, b, t, k = a[:, :, ::-1], b[:, :, ::-1], t[:, ::-1], k[:, ::-1]
        if flip & 2:
            a, b, t, k = a.transpose(0, 2, 1), b.transpose(0, 2, 1), t.T, k.T
        if not (t[:, :n] == 2).any():
            continue
        c, cost = _side_cut(a, b, t, k, n, pairs)
        total += cost
        if flip & 2:
            c = c.T
        if flip & 1:
            c = c[:, ::-1]
        mask &= c
    return (mask | (state == 3)) & (state >= 2), total


class _Search:
    """Masked sum of squared differences of a target window against every block of the source canvas, by FFT:
    sum m (S - T)^2 = corr(m, S^2) - 2 corr(m T, S) + sum m T^2. A canvas larger than twice QUILT_SEARCH^2 is
    searched in crops of that size (the cost per block stays fixed)."""

    def __init__(self, canvas, valid, C, ok, gen):
        self.canvas, self.valid, self.C, self.gen = canvas, valid, C, gen
        self.Hs, self.Ws = ok.shape
        self.cache = {}
        self.blocks = {}
        S = QUILT_SEARCH
        if self.Hs * self.Ws <= 2 * S * S:
            self.crops = [(0, 0, self.Hs, self.Ws)]
        else:
            ys = list(range(0, max(1, self.Hs - S), S // 2)) + [max(0, self.Hs - S)]
            xs = list(range(0, max(1, self.Ws - S), S // 2)) + [max(0, self.Ws - S)]
            self.crops = [(y, x, min(S, self.Hs - y), min(S, self.Ws - x)) for y in sorted(set(ys))
                          for x in sorted(set(xs)) if bool(ok[y:y + S, x:x + S].any())]

    def crop_for(self, y, x, B):
        """A crop for the block at chart place (y, x): the one around that place, or (every other block and where
        none there holds source blocks) a random one."""
        if len(self.crops) == 1:
            return self.crops[0]
        S = QUILT_SEARCH
        near = [c for c in self.crops if c[0] <= y + B // 2 < c[0] + S and c[1] <= x + B // 2 < c[1] + S]
        if near and bool(torch.rand((), generator=self.gen) < 0.5):
            return min(near, key=lambda c: abs(c[0] + S / 2 - y) + abs(c[1] + S / 2 - x))
        return self.crops[int(torch.randint(0, len(self.crops), (1,), generator=self.gen))]

    def spectra(self, crop):
        got = self.cache.get(crop)
        if got is None:
            y, x, h, w = crop
            S = self.canvas[:, y:y + h, x:x + w]
            got = torch.fft.rfft2(torch.cat([S, (S ** 2).sum(0, keepdim=True)], 0))
            if len(self.crops) <= 4:
                self.cache[crop] = got
        return got

    def positions(self, crop, b):
        """[h, w] bool: corners in the crop whose b x b block lies on valid texels inside the crop."""
        got = self.blocks.get((crop, b))
        if got is None:
            y, x, h, w = crop
            got = _block_positions(self.valid[y:y + h, x:x + w], b)
            if len(self.blocks) < 16:
                self.blocks[(crop, b)] = got
        return got

    def ssd(self, crop, win, m):
        """[h, w] SSD of the window (win [C, b, b], texel weights m [b, b]) against the block at every corner of the
        crop (corners whose block leaves the crop are garbage: the caller masks them)."""
        y, x, h, w = crop
        C = self.C
        b = win.shape[1]
        spec = self.spectra(crop)
        K = torch.zeros(C + 1, h, w)
        K[:, :b, :b] = torch.from_numpy(np.concatenate([win * m, m[None]], 0))
        kf = torch.conj(torch.fft.rfft2(K))
        tot = spec[C] * kf[C] - 2 * (spec[:C] * kf[:C]).sum(0)
        return torch.fft.irfft2(tot, s=(h, w)) + float((m * (win ** 2).sum(0)).sum())


def _edges(img, mask):
    """[H, W]: edge strength, the largest colour difference to a 4-neighbour in the mask (0 where none)."""
    C, H, W = img.shape
    x = torch.where(mask, img, torch.zeros(()))
    g = torch.zeros(H, W)
    for a, b, ma, mb in ((x[:, :, :-1], x[:, :, 1:], mask[:, :-1], mask[:, 1:]),
                         (x[:, :-1], x[:, 1:], mask[:-1], mask[1:])):
        d = torch.where(ma & mb, (a - b).norm(dim=0), torch.zeros(()))
        if a.shape[-1] < W:
            g[:, :-1] = torch.maximum(g[:, :-1], d)
            g[:, 1:] = torch.maximum(g[:, 1:], d)
        else:
            g[:-1] = torch.maximum(g[:-1], d)
            g[1:] = torch.maximum(g[1:], d)
    return g


def _uniform_windows(label, size):
    """[H - size + 1, W - size + 1] bool: windows of size x size texels that hold one copy only (a verbatim copy that
    large)."""
    ok = label > _MIRROR
    eqx = ((label[:, 1:] == label[:, :-1]) & ok[:, 1:]).double()
    eqy = ((label[1:] == label[:-1]) & ok[1:]).double()

    def box(a, h, w):
        S = F.pad(a.cumsum(0).cumsum(1), (1, 0, 1, 0))
        return S[h:, w:] - S[:-h, w:] - S[h:, :-w] + S[:-h, :-w]
    H, W = label.shape
    if H < size or W < size:
        return torch.zeros(max(0, H - size + 1), max(0, W - size + 1), dtype=torch.bool)
    n = size * (size - 1)
    return (box(eqx, size, size - 1) == n) & (box(eqy, size - 1, size) == n)


def _quilt(image, known, fill, sources, gen, max_copy, blend):
    """Image quilting for completion (Efros and Freeman 2001; graph-cut textures, Kwatra et al. 2003): the fill is
    covered by overlapping square blocks copied whole from the source, each chosen among those that best match what
    its window already holds (seen texels count more) and cut in where it disagrees least with that content (along
    edges: cell borders, mortar). Seen texels are never cut away; next to them a mirrored band continues the seen
    content, and the blocks cut into it where they agree, so the boundary of the seen is a cut like any other. The
    small colour steps left along the cuts are then removed (`_smooth_seams`). Returns None where the source holds
    too few whole blocks (the caller then synthesises patch by patch)."""
    C, H, W = image.shape
    canvas, valid, _ = _source_canvas(image, known, known | fill, None, sources)
    limited = max_copy is not None
    B, O = QUILT_BLOCK, QUILT_OVERLAP
    ok = _block_positions(valid, B)
    while int(ok.sum()) < QUILT_MIN_BLOCKS and B > QUILT_MIN_BLOCK:
        B, O = max(QUILT_MIN_BLOCK, B * 3 // 4), max(3, O * 3 // 4)
        ok = _block_positions(valid, B)
    if int(ok.sum()) < QUILT_MIN_BLOCKS:
        return None
    Hs, Ws = valid.shape
    search = _Search(canvas, valid, C, ok, gen)
    pairs = _Pairs(canvas, valid, gen)
    cnp = canvas.numpy()
    # the target, padded by a block on every side: content, state, label (the copy's canvas offset, packed)
    P = B
    T = np.zeros((C, H + 2 * P, W + 2 * P), np.float32)
    T[:, P:P + H, P:P + W] = torch.where(known, image, torch.zeros(())).numpy()
    state = np.zeros((H + 2 * P, W + 2 * P), np.int8)
    state[P:P + H, P:P + W][known.numpy()] = 1
    state[P:P + H, P:P + W][fill.numpy()] = 3
    label = np.full((H + 2 * P, W + 2 * P), _NONE, np.int64)
    keep = np.zeros((H + 2 * P, W + 2 * P), np.float32)
    mirror_src = None
    if MIRROR_BAND > 0 and bool(known.any()):
        mv, mm, mirror_src = _mirror(image, known, fill, MIRROR_BAND)
        mmn = mm.numpy()
        T[:, P:P + H, P:P + W][:, mmn] = mv.numpy()[:, mmn]
        state[P:P + H, P:P + W][mmn] = 2
        label[P:P + H, P:P + W][mmn] = _MIRROR
        keep[P:P + H, P:P + W][mmn] = MIRROR_KEEP
    used = np.zeros((Hs, Ws), np.float32)  # how often each source texel was copied
    n_cut = O + (MIRROR_BAND if mirror_src is not None else 0)
    unit = QUILT_UNIT ** 2 * C

    def place(y0, x0, b, forced=None):
        """Copy one block into the window of side b at padded place (y0, x0); forced: texels that must take it."""
        st = state[y0:y0 + b, x0:x0 + b]
        if forced is not None:
            st = st.copy()
            st[forced & (st >= 2)] = 3
        if not (st == 3).any():
            return False
        win = T[:, y0:y0 + b, x0:x0 + b]
        lb = label[y0:y0 + b, x0:x0 + b]
        mc = np.where(st == 1, QUILT_KNOWN, np.where(lb == _MIRROR, MIRROR_MATCH,
                                                     np.where(st == 2, 1.0, 0.0))).astype(np.float32)
        if forced is not None:
            mc[forced] = 0.0
        crop = search.crop_for(y0 - P, x0 - P, b)
        cy, cx, ch_, cw_ = crop
        okc = search.positions(crop, b)
        cost = search.ssd(crop, win, mc)
        if QUILT_OCCURRENCE > 0:
            u = F.pad(torch.from_numpy(used[cy:cy + ch_, cx:cx + cw_]).double(), (0, b, 0, b))
            Su = F.pad(u.cumsum(0).cumsum(1), (1, 0, 1, 0))
            mean_use = (Su[b:b + ch_, b:b + cw_] - Su[:ch_, b:b + cw_] - Su[b:b + ch_, :cw_] + Su[:ch_, :cw_]) / (b * b)
            cost = cost + QUILT_OCCURRENCE * unit * float(max(mc.sum(), b * b / 4)) * mean_use.float()
        allowed = okc.clone()
        sep = QUILT_SEPARATION if forced is None else QUILT_REPAIR_SEPARATION
        if limited and sep > 0:
            # a copy may not continue the copies around it (nor nearly): every block is a new piece
            labs = torch.from_numpy(np.unique(lb[lb > _MIRROR]))
            for dy, dx in zip(*[v.tolist() for v in _unkey(labs)]):
                sy, sx = y0 - P + dy - cy, x0 - P + dx - cx  # (in the crop: the corner of the same copy here)
                y_a, y_b = max(0, sy - sep), min(ch_, sy + sep + 1)
                x_a, x_b = max(0, sx - sep), min(cw_, sx + sep + 1)
                if y_a < y_b and x_a < x_b:
                    same = bool(allowed[sy, sx]) if 0 <= sy < ch_ and 0 <= sx < cw_ else False
                    allowed[y_a:y_b, x_a:x_b] = False
                    if forced is None and same:
                        allowed[sy, sx] = True  # (the same copy continued: one piece, checked below)
            if not bool(allowed.any()):
                allowed = okc
        if not bool(allowed.any()):
            return False
        cost = torch.where(allowed, cost, torch.full_like(cost, float("inf")))
        emin = float(cost.min())
        tol = QUILT_TOL * max(emin, 0.0) + 1e-4 * unit * float(mc.sum()) + 1e-9
        cand = torch.nonzero((cost <= emin + tol).flatten())[:, 0]
        if cand.numel() < QUILT_POOL:
            cand = torch.topk(cost.flatten(), min(QUILT_POOL, int(allowed.sum())), largest=False).indices
        # a few of the blocks that match best; the one whose cut shows least (seams along edges) goes in
        pick = cand[torch.randperm(cand.numel(), generator=gen)[:QUILT_TRIES]]
        best = None
        for i in pick.tolist():
            sy, sx = divmod(i, cw_)
            sy, sx = sy + cy, sx + cx
            new = cnp[:, sy:sy + b, sx:sx + b]
            nm, seam = _cut(win, new, st, keep[y0:y0 + b, x0:x0 + b], n_cut, pairs)
            # (a cut through a smooth block costs less: relative to the block's own contrast, so that the choice
            # does not favour the smoothest places of the source)
            contrast = np.abs(np.diff(new, axis=1)).sum(0).mean() + np.abs(np.diff(new, axis=2)).sum(0).mean()
            seam /= QUILT_CONTRAST + float(contrast)
            if best is None or seam < best[0]:
                best = (seam, sy, sx, new, nm)
        _, sy, sx, new, nm = best
        win[:, nm] = new[:, nm]
        state[y0:y0 + b, x0:x0 + b][nm] = 2
        keep[y0:y0 + b, x0:x0 + b][nm] = 0.0
        label[y0:y0 + b, x0:x0 + b][nm] = (sy - (y0 - P)) * KEY + (sx - (x0 - P))
        used[sy:sy + b, sx:sx + b][nm] += 1
        return True

    def expand(cy, cx, b, R):
        """Break up a copy too large, which holds the R x R square centred at padded place (cy, cx), by letting a
        neighbouring copy grow over a few texels of that square, cut in where it shows least (along a border of the
        cells, the mortar): among a few places in the square and the copies around each, the cheapest cut. False
        where no neighbouring copy can reach there."""
        best = None
        h = R // 2 - 3
        for oy, ox in ((0, 0), (-h, 0), (h, 0), (0, -h), (0, h)):
            y0, x0 = cy + oy - b // 2, cx + ox - b // 2
            st = state[y0:y0 + b, x0:x0 + b].copy()
            core = np.zeros((b, b), bool)
            core[b // 2 - 2:b // 2 + 2, b // 2 - 2:b // 2 + 2] = True
            core &= st >= 2
            if not core.any():
                continue
            st[core] = 3
            win = T[:, y0:y0 + b, x0:x0 + b]
            own = np.unique(label[y0:y0 + b, x0:x0 + b][core])
            own_off = list(zip(*[v.tolist() for v in _unkey(torch.from_numpy(own[own > _MIRROR]))]))
            ring = label[max(0, y0 - 2):y0 + b + 2, max(0, x0 - 2):x0 + b + 2]
            for l in np.unique(ring[ring > _MIRROR]).tolist():
                dy, dx = [int(v) for v in _unkey(torch.tensor(l))]
                if any(max(abs(dy - oy_), abs(dx - ox_)) <= QUILT_SEPARATION for oy_, ox_ in own_off):
                    continue  # (the same copy, or nearly: that would change little)
                sy, sx = y0 - P + dy, x0 - P + dx
                if sy < 0 or sx < 0 or sy + b > Hs or sx + b > Ws or not bool(valid[sy:sy + b, sx:sx + b].all()):
                    continue
                new = cnp[:, sy:sy + b, sx:sx + b]
                nm, seam = _cut(win, new, st, keep[y0:y0 + b, x0:x0 + b], b, pairs)
                if best is None or seam < best[0]:
                    best = (seam, y0, x0, sy, sx, new, nm, l)
        if best is None:
            return False
        _, y0, x0, sy, sx, new, nm, l = best
        T[:, y0:y0 + b, x0:x0 + b][:, nm] = new[:, nm]
        state[y0:y0 + b, x0:x0 + b][nm] = 2
        label[y0:y0 + b, x0:x0 + b][nm] = l
        used[sy:sy + b, sx:sx + b][nm] += 1
        return True

    # the source's own edge strength (for repairs that swap a whole cell, stone or brick)
    sg = _edges(canvas, valid)
    flat_tol = max(SEG_EDGE_MIN, SEG_EDGE * float(sg[valid].median()))
    src_energy = torch.where(valid, sg.square(), torch.full_like(sg, 1e3))

    def swap_segment(cy, cx, R):
        """Break up a copy too large, which holds the R x R square centred at padded place (cy, cx), by giving one
        flat region of it (a cell, a stone, a brick: texels without an edge, between the edges) the content of a
        flat region of the source elsewhere: the region changes colour, its borders stay. False where the square
        holds no such region small enough."""
        r = SEG_BOX
        y0, x0 = max(0, cy - r), max(0, cx - r)
        img = torch.from_numpy(T[:, y0:cy + r + 1, x0:cx + r + 1])
        st = state[y0:cy + r + 1, x0:cx + r + 1]
        g = _edges(img, torch.from_numpy(st >= 2)).numpy()
        flat = (g < flat_tol) & (st >= 2)
        h_, w_ = flat.shape
        # the flat texel nearest the middle of the square, and its flat region
        yy, xx = np.nonzero(flat[cy - y0 - R // 2 + 2:cy - y0 + R // 2 - 2, cx - x0 - R // 2 + 2:cx - x0 + R // 2 - 2])
        if not len(yy):
            return False
        k = int(np.argmin((yy - (R // 2 - 2)) ** 2 + (xx - (R // 2 - 2)) ** 2))
        seed = (int(yy[k]) + cy - y0 - R // 2 + 2, int(xx[k]) + cx - x0 - R // 2 + 2)
        region = np.zeros_like(flat)
        region[seed] = True
        stack = [seed]
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h_ and 0 <= nx < w_ and flat[ny, nx] and not region[ny, nx]:
                    if ny in (0, h_ - 1) or nx in (0, w_ - 1):
                        return False  # (no closed region: a smooth texture)
                    region[ny, nx] = True
                    stack.append((ny, nx))
        n = int(region.sum())
        if n < SEG_MIN or n > SEG_MAX:
            return False
        ry, rx = np.nonzero(region)
        by, bx = int(ry.min()), int(rx.min())
        mask = torch.from_numpy(region[by:ry.max() + 1, bx:rx.max() + 1].astype(np.float32))
        mh, mw = mask.shape
        # source places whose footprint of the region is flat and valid (correlation by FFT)
        ty, tx = y0 + by - P, x0 + bx - P  # chart place of the region's box
        ky, kx, kh, kw = search.crop_for(ty, tx, max(mh, mw))
        if kh < mh or kw < mw:
            return False
        K = torch.zeros(kh, kw)
        K[:mh, :mw] = mask
        e = torch.fft.irfft2(torch.fft.rfft2(src_energy[ky:ky + kh, kx:kx + kw]) * torch.conj(torch.fft.rfft2(K)),
                             s=(kh, kw))
        e[kh - mh + 1:] = float("inf")
        e[:, kw - mw + 1:] = float("inf")
        labs = label[y0 + ry, x0 + rx]
        offs = list(zip(*[v.tolist() for v in _unkey(torch.from_numpy(np.unique(labs[labs > _MIRROR])))]))
        for dy, dx in offs:  # not the same copy, nor nearly
            sy, sx = ty + dy - ky, tx + dx - kx
            e[max(0, sy - QUILT_REPAIR_SEPARATION):max(0, sy + QUILT_REPAIR_SEPARATION + 1),
              max(0, sx - QUILT_REPAIR_SEPARATION):max(0, sx + QUILT_REPAIR_SEPARATION + 1)] = float("inf")
        cand = torch.nonzero(e.flatten() < n * (SEG_FLAT * flat_tol) ** 2)[:, 0]
        old = T[:, y0 + ry, x0 + rx]
        for i in cand[torch.randperm(cand.numel(), generator=gen)[:SEG_CANDIDATES]].tolist():
            sy, sx = divmod(i, kw)
            sy, sx = sy + ky, sx + kx
            new = cnp[:, sy + ry - by, sx + rx - bx]
            if np.abs(new.mean(1) - old.mean(1)).max() < SEG_CHANGE:
                continue  # (the same colour: nothing would change)
            # the texels around the region that hold its colour darkened or lightened (the border's near side: a
            # shading of the region's colour) take the new colour shaded alike
            mo, mn = old.mean(1), new.mean(1)
            ring = _dilate(torch.from_numpy(region), SEG_RING).numpy() & ~region & (st >= 2)
            qy, qx = np.nonzero(ring)
            v = T[:, y0 + qy, x0 + qx]
            cos = (v * mo[:, None]).sum(0) / (np.linalg.norm(v, axis=0) * np.linalg.norm(mo) + 1e-6)
            shade = cos > SEG_SHADE
            T[:, y0 + qy[shade], x0 + qx[shade]] = v[:, shade] * (mn / np.maximum(mo, 1e-3))[:, None]
            T[:, y0 + ry, x0 + rx] = new
            label[y0 + ry, x0 + rx] = (sy - ty) * KEY + (sx - tx)
            used[sy + ry - by, sx + rx - bx] += 1
            return True
        return False

    ys, xs = np.nonzero(fill.numpy())

    def starts(lo, hi, n):  # window corners covering [lo, hi], overlapping the content before lo, inside [0, n)
        a = max(0, lo - O)
        b = max(a, min(n, hi + 1 + O) - B)
        return list(range(a, b, B - O)) + [b]
    for y0 in starts(int(ys.min()), int(ys.max()), H):
        for x0 in starts(int(xs.min()), int(xs.max()), W):
            place(y0 + P, x0 + P, B)
    for _ in range(8):  # texels the grid left (a block found no source): windows centred on them
        left = np.argwhere(state == 3)
        if not len(left):
            break
        for y, x in left[:: max(1, len(left) // 64)]:
            if state[y, x] == 3:
                place(int(y) - B // 2, int(x) - B // 2, B)
    if (state == 3).any():
        return None
    lab = torch.from_numpy(label[P:P + H, P:P + W].copy())
    if limited:
        # no copy may hold a max_copy x max_copy square: a smaller block is cut into the middle of each such square
        R = int(max_copy)
        b = max(4, R - 2)
        for _ in range(QUILT_REPAIRS):
            bad = _uniform_windows(lab, R)
            if not bool(bad.any()):
                break
            taken = np.zeros((H + 2 * P, W + 2 * P), bool)
            for y, x in torch.nonzero(bad).tolist():
                cy, cx = y + R // 2 + P, x + R // 2 + P
                if taken[cy, cx]:
                    continue
                if not swap_segment(cy, cx, R) and not expand(cy, cx, b, R):
                    y0, x0 = cy - b // 2, cx - b // 2
                    core = np.zeros((b, b), bool)
                    core[b // 2 - 2:b // 2 + 2, b // 2 - 2:b // 2 + 2] = True
                    place(y0, x0, b, forced=core)
                taken[max(0, cy - R):cy + R, max(0, cx - R):cx + R] = True
            lab = torch.from_numpy(label[P:P + H, P:P + W].copy())
        else:
            if bool(_uniform_windows(lab, R).any()):
                return None
    out = torch.from_numpy(T[:, P:P + H, P:P + W].copy())
    if blend:
        # a texture without edges (a smooth noise) has no step of any size: there every step left is corrected
        smooth = float(torch.quantile(sg[valid][:PAIR_SAMPLES].float(), 0.99)) < SEAM_EDGE
        out = _smooth_seams(out, lab, known, fill, canvas, valid, float("inf") if smooth else SEAM_STEP)
    lo = canvas[:, valid].amin(1)[:, None, None]
    hi = canvas[:, valid].amax(1)[:, None, None]
    return torch.where(fill[None], torch.minimum(torch.maximum(out, lo), hi), image)


def _smooth_seams(out, label, known, fill, canvas, valid, step):
    """Remove the small colour steps along the cuts and at the seen texels (a smooth noise copied from two places
    rarely meets at the same level): a correction c on the fill texels (0 on the seen ones) whose difference across
    each seam is the residual step there (a step one of the two copies has there, less the step shown) and 0 elsewhere,
    solved in the least-squares sense by conjugate gradients (gradient-domain compositing, Perez et al. 2003). Where
    either copy has an edge across the pair, or the residual is large, the step is an edge and stays."""
    C, H, W = out.shape
    Hs, Ws = valid.shape
    ys, xs = torch.nonzero(fill, as_tuple=True)
    y0, y1 = max(0, int(ys.min()) - 1), min(H, int(ys.max()) + 2)
    x0, x1 = max(0, int(xs.min()) - 1), min(W, int(xs.max()) + 2)
    o, lab, kn, fl = out[:, y0:y1, x0:x1], label[y0:y1, x0:x1], known[y0:y1, x0:x1], fill[y0:y1, x0:x1]
    h, w = fl.shape
    yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
    cflat = canvas.reshape(C, -1)
    vflat = valid.flatten()
    isblock = lab > _MIRROR
    area = kn | fl

    def copy_at(l, b, y, x):  # what copy l puts at chart texel (y, x), and whether it is defined there
        dy, dx = _unkey(torch.where(b, l, torch.zeros_like(l)))
        sy, sx = y + dy, x + dx
        inside = b & (sy >= 0) & (sy < Hs) & (sx >= 0) & (sx < Ws)
        f = sy.clamp(0, Hs - 1) * Ws + sx.clamp(0, Ws - 1)
        inside &= vflat[f]
        return cflat[:, f], inside

    rhs = torch.zeros(C, h, w)
    masks = []
    for axis in (-1, -2):
        def a(x):
            return x[..., :-1] if axis == -1 else x[..., :-1, :]

        def b(x):
            return x[..., 1:] if axis == -1 else x[..., 1:, :]
        pair = a(area) & b(area) & (a(fl) | b(fl))
        la, lb, ba, bb = a(lab), b(lab), a(isblock), b(isblock)
        seam = pair & ~(ba & bb & (la == lb))
        shown = b(o) - a(o)
        want = torch.zeros_like(shown)
        got = torch.zeros(shown.shape[1:], dtype=torch.bool)
        gmax = torch.zeros(shown.shape[1:])
        for l, bl in ((la, ba), (lb, bb)):
            va, oka = copy_at(l, bl, a(yy), a(xx))
            vb, okb = copy_at(l, bl, b(yy), b(xx))
            okp = oka & okb
            g = torch.where(okp, vb - va, torch.zeros(()))
            want = torch.where(okp & ~got, g, want)  # (one copy's own step: a mean of two would be too smooth)
            got |= okp
            gmax = torch.maximum(gmax, g.norm(dim=0))
        r = torch.where(seam & got, want - shown, torch.zeros(()))
        r = r * ((2 - gmax / SEAM_EDGE).clamp(0, 1) * (2 - r.norm(dim=0) / step).clamp(0, 1))
        # the pair (s, t = s + 1) wants c(t) - c(s) = r
        full = torch.zeros(C, h, w)
        if axis == -1:
            full[:, :, :-1] = r
            rhs[:, :, :-1] -= r
            rhs[:, :, 1:] += r
        else:
            full[:, :-1, :] = r
            rhs[:, :-1, :] -= r
            rhs[:, 1:, :] += r
        pm = torch.zeros(h, w)
        if axis == -1:
            pm[:, :-1] = pair.float()
        else:
            pm[:-1, :] = pair.float()
        masks.append(pm)
    flf = fl.float()
    rhs = rhs * flf
    mx, my = masks

    def lap(c):  # sum over pairs of (c(s) - c(t)) at s and (c(t) - c(s)) at t, on the fill texels
        c = c * flf
        res = torch.zeros_like(c)
        d = (c[:, :, :-1] - c[:, :, 1:]) * mx[:, :-1]
        res[:, :, :-1] += d
        res[:, :, 1:] -= d
        d = (c[:, :-1, :] - c[:, 1:, :]) * my[:-1, :]
        res[:, :-1, :] += d
        res[:, 1:, :] -= d
        return res * flf
    x = torch.zeros(C, h, w)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum((1, 2))
    for _ in range(SEAM_ITERS):
        Ap = lap(p)
        alpha = rs / (p * Ap).sum((1, 2)).clamp_min(1e-20)
        x += alpha[:, None, None] * p
        r -= alpha[:, None, None] * Ap
        rs_new = (r * r).sum((1, 2))
        if float(rs_new.max()) < 1e-12:
            break
        p = r + (rs_new / rs.clamp_min(1e-30))[:, None, None] * p
        rs = rs_new
    res = out.clone()
    res[:, y0:y1, x0:x1] = o + x * flf
    return res


# ---------------------------------------------------------------------------------------------------------------
def complete(image, known, fill, guide=None, sources=(), generator=None, patch=PATCH, levels=None, *,
             repeat=True, max_copy="auto", blend=True, quilt=True):
    """image [C, H, W] float (light-free colour 0..1; C usually 3), known [H, W] bool (seen texels),
    fill [H, W] bool (texels to invent; disjoint from known). guide: optional [G, H, W] float guidance channels
    (already weighted by the caller, e.g. height on the object, distance to seen content), matched between target
    and source patches along with colour. sources: extra exemplars, each (image [C, h, w], valid [h, w] bool,
    guide [G, h, w] or None), patches may be copied from their valid texels too (needed when `known` is empty or
    tiny: a surface nobody saw). Returns [C, H, W]: known texels unchanged, fill texels invented, others untouched
    (as given).

    repeat: continue a verified repeat in phase before synthesising. quilt: synthesise the rest by quilting where
    no guide is given (else, and with quilt=False, patch by patch). max_copy: no copy may hold a square of this
    many texels (None: unlimited; "auto": MAX_COPY where the seen texels are fewer than a quarter of those to
    invent, e.g. a surface nobody saw). blend: the small colour steps along the seams between copies are smoothed
    out (quilting), the overlapping patches' votes blend the seams (patch by patch). patch: patch side in texels
    (odd) and levels: pyramid levels (default: chosen so that the coarsest fill region is a few patches across) of
    the patch-based synthesis."""
    image = torch.as_tensor(image, dtype=torch.float32)
    known = torch.as_tensor(known, dtype=torch.bool)
    fill = torch.as_tensor(fill, dtype=torch.bool) & ~known
    if image.dim() != 3 or known.shape != image.shape[1:] or fill.shape != image.shape[1:]:
        raise ValueError(f"complete: image {tuple(image.shape)}, known {tuple(known.shape)}, fill "
                         f"{tuple(fill.shape)} do not fit")
    if patch < 3 or patch % 2 == 0:
        raise ValueError("complete: patch must be odd and at least 3")
    if guide is not None:
        guide = torch.as_tensor(guide, dtype=torch.float32)
        if guide.dim() != 3 or guide.shape[1:] != image.shape[1:]:
            raise ValueError(f"complete: guide {tuple(guide.shape)} does not fit the image")
    out = image.clone()
    if not bool(fill.any()):
        return out
    gen = _generator(generator)
    have, todo = known.clone(), fill.clone()
    if repeat and bool(known.any()):
        basis = _lattice(image, known)
        if basis:
            out, reached = _copy_along(out, known, fill, basis)
            have |= reached
            todo &= ~reached
    if max_copy == "auto":
        # a surface mostly unseen is synthesised from few seen texels or from other exemplars: copies are kept
        # small there, or the result would be pasted blocks; a hole in a seen surface copies freely
        max_copy = MAX_COPY if int(have.sum()) < UNSEEN_SHARE * int(todo.sum()) else None
    if bool(todo.any()):
        # guides steer texel by texel (a rigid block cannot follow a guide that changes within it): patch-based
        got = _quilt(out, have, todo, sources, gen, max_copy, blend) if quilt and guide is None else None
        out = got if got is not None else _synthesise(out, have, todo, guide, sources, gen, patch, levels, max_copy,
                                                      blend)
    return torch.where(fill[None], out, image)
