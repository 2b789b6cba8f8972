"""The memory anchored to surfaces: a moving object's cells are stored at their pixels' surface addresses and
read back per pixel at the addresses of another frame, so a surface that deforms keeps its texture."""
import math

import torch

from backend.channels import Maps
from backend.memory import SceneMemory
from backend.models.base import FrameNeeds
from backend.models.patch import PatchModel

W, H, Z = 96, 64, 4.0
K = torch.tensor([[80.0, 0.0, (W - 1) / 2], [0.0, 80.0, (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
EYE = torch.eye(4, dtype=torch.float64)


def texture(x, y):
    """A sharp pattern on the surface's rest coordinates: stripes both ways and a ramp, in 0..1."""
    a = 0.5 + 0.5 * torch.sign(torch.sin(9.0 * x)) * torch.sign(torch.sin(7.0 * y))
    return torch.stack([a, 0.5 + 0.4 * torch.sin(5.0 * x + 3.0 * y), 0.2 + 0.6 * (y + 1) / 2]).clamp(0, 1)


def view(bend):
    """A flat sheet facing the camera at depth Z, its texture pushed sideways by `bend` (a deformation inside the
    sheet: rest x = world x - bend * sin(2 world y)). Returns (image [3, H, W], maps: channels.Maps)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    xw, yw = (u - K[0, 2]) / K[0, 0] * Z, (v - K[1, 2]) / K[1, 1] * Z
    rest = torch.stack([xw - bend * torch.sin(2.0 * yw), yw, torch.zeros_like(xw)])
    normal = torch.zeros(3, H, W)
    normal[2] = -1.0  # facing the camera (OpenCV: it looks along +z)
    maps = Maps(depth=torch.full((H, W), Z), ids=torch.ones(H, W, dtype=torch.long), rest=rest.float(),
                normal=normal)
    return texture(rest[0], rest[1]).float(), maps


def psnr(a, b):
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def test_a_deforming_surface_reads_its_texture_at_its_own_rest_points():
    model = PatchModel("p", cell=8)  # exact cells: what is read back is what was stored
    seen, maps_a = view(0.0)
    mem = SceneMemory(model.channels, 8)
    cells = torch.full((H // 8, W // 8), Z)
    ids = torch.ones(H // 8, W // 8, dtype=torch.long)
    assert mem.write(model.encode(seen), cells, K, EYE, ids=ids, poses={1: EYE}, maps=maps_a) > 0
    truth, maps_b = view(0.35)  # the same sheet, its texture pushed up to 0.35 units sideways
    read = mem.read(K, EYE, H // 8, W // 8, poses={1: EYE}, ids=ids, maps=maps_b)
    assert read.splats.pairs is not None and read.splats.pairs.pixel.numel() > 0.8 * H * W
    drawn = model.render(read.latent, read, FrameNeeds(maps=maps_b))
    # inside: the points of the sheet that frame a saw (the bend pushes some of its edge out of view)
    inside = (maps_b.rest[0].abs() < 0.9 * Z * (W / 2 - 4) / 80.0)
    inside[:4], inside[-4:] = False, False
    # the known answer: frame a's image sampled (bilinearly) where frame a saw each pixel's own rest point
    sx = maps_b.rest[0].double() * K[0, 0] / Z + K[0, 2]
    sy = maps_b.rest[1].double() * K[1, 1] / Z + K[1, 2]
    grid = torch.stack([sx / (W - 1) * 2 - 1, sy / (H - 1) * 2 - 1], -1)[None].float()
    want = torch.nn.functional.grid_sample(seen[None], grid, align_corners=True)[0]
    got = psnr(drawn[:, inside], want[:, inside])
    assert got > 33.0, got
    # exact wherever the point falls inside one stored cell (a sample between two cells takes the nearer one's
    # pixel, which on this sharp pattern is the error that remains)
    within = inside & (sx % 8 < 7)
    assert float((drawn - want).abs().amax(0)[within].max()) < 1e-3
    assert psnr(drawn[:, inside], truth[:, inside]) > 22.0  # the sharp pattern itself, up to that resampling
    # read as a rigid object instead (no surface addresses), the same cells land where the sheet was
    rigid = mem.read(K, EYE, H // 8, W // 8, poses={1: EYE}, ids=ids, maps=Maps(depth=maps_b.depth, ids=maps_b.ids))
    wrong = psnr(model.render(rigid.latent, rigid, FrameNeeds(maps=maps_b))[:, inside], want[:, inside])
    assert got > wrong + 15.0, (got, wrong)


def test_the_far_side_of_a_thin_surface_is_not_the_near_side():
    model = PatchModel("p", cell=8)
    seen, maps_a = view(0.0)
    mem = SceneMemory(model.channels, 8)
    ids = torch.ones(H // 8, W // 8, dtype=torch.long)
    mem.write(model.encode(seen), torch.full((H // 8, W // 8), Z), K, EYE, ids=ids, poses={1: EYE}, maps=maps_a)
    # the same sheet turned round (the camera now sees its back: the normals that face it point the other way)
    back = Maps(depth=maps_a.depth, ids=maps_a.ids, rest=maps_a.rest, normal=-maps_a.normal)
    read = mem.read(K, EYE, H // 8, W // 8, poses={1: EYE}, ids=ids, maps=back)
    assert read.hole.all() and read.splats.pairs.pixel.numel() == 0


def test_a_crease_is_stored_as_two_planes():
    # a box's edge seen from its corner: two faces at 90 degrees meet in the middle of the image; each cell on the
    # edge is stored once per face, so every pixel on either face finds its own face's cell
    model = PatchModel("p", cell=8)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    left = u < W / 2 + 3  # not on a cell boundary
    s = (u - W / 2 - 3) / 20.0
    rest = torch.stack([torch.where(left, s, torch.zeros_like(s)), (v - H / 2) / 20.0,
                        torch.where(left, torch.zeros_like(s), s)])
    normal = torch.stack([torch.where(left, 0.0, -1.0), torch.zeros_like(s), torch.where(left, -1.0, 0.0)]).float()
    maps = Maps(depth=torch.full((H, W), Z) + 0.01 * (u - W / 2).abs(), ids=torch.ones(H, W, dtype=torch.long),
                rest=rest.float(), normal=normal)
    image = texture(rest[0] + rest[2] * 1.3, rest[1]).float()
    mem = SceneMemory(model.channels, 8)
    ids = torch.ones(H // 8, W // 8, dtype=torch.long)
    mem.write(model.encode(image), torch.full((H // 8, W // 8), Z), K, EYE, ids=ids, poses={1: EYE}, maps=maps)
    read = mem.read(K, EYE, H // 8, W // 8, poses={1: EYE}, ids=ids, maps=maps)
    drawn = model.render(read.latent, read, FrameNeeds(maps=maps))
    assert psnr(drawn, image) > 40.0
    assert math.isclose(float((drawn - image).abs().amax()), 0.0, abs_tol=0.02)


def test_a_still_room_read_back_from_its_own_camera_is_covered_everywhere():
    # a level camera over a floor that runs to a far wall, a block close in front (a hall's end): the floor's
    # cells near the horizon are long and narrow, the block's cells near and large. Read back from the camera
    # that wrote it, every pixel of the still world is covered by stored content: no two cells of the frame share
    # a key, no cell spreads over the far wall beside it, and a cell whose pixels lie on no one plane is stored at
    # its pixels' depth instead
    from backend.splats import coverage
    model = PatchModel("p", cell=8)
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 1.6], [0, 0, 0, 1]], dtype=torch.float64)  # looks +y
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)])  # camera space
    world = torch.einsum("ij,jhw->ihw", c2w[:3, :3], ray)
    t = torch.full((H, W), float("inf"), dtype=torch.float64)
    n = torch.zeros(3, H, W, dtype=torch.float64)
    for normal, offset in (([0.0, 0.0, 1.0], 0.0), ([0.0, -1.0, 0.0], -12.0), ([-1.0, 0.0, 0.0], -0.6)):
        nn = torch.tensor(normal, dtype=torch.float64)
        along = torch.einsum("i,ihw->hw", nn, world)
        hit = (offset - float(nn @ c2w[:3, 3])) / along
        p = c2w[:3, 3, None, None] + hit * world
        if normal[0] < 0:  # the block: a face at x = 0.6, 1 wide, up to 0.8 high, 1.5 to 2.5 away
            inside = (p[1] > 1.5) & (p[1] < 2.5) & (p[2] < 0.8)
        else:
            inside = torch.ones(H, W, dtype=torch.bool)
        take = inside & (hit > 0) & (hit < t) & (along < 0)
        t = torch.where(take, hit, t)
        n = torch.where(take[None], nn[:, None, None], n)
    rest = c2w[:3, 3, None, None] + t * world
    depth = t.float()  # planar depth: the ray's z is 1
    maps = Maps(depth=depth, ids=torch.zeros(H, W, dtype=torch.long), rest=rest.float(), normal=n.float())
    image = torch.stack([(rest[0] * 3).sin() * 0.5 + 0.5, (rest[1] * 2).cos() * 0.5 + 0.5,
                         (rest[2] * 5).sin() * 0.5 + 0.5]).float()
    mem = SceneMemory(model.channels, 8)
    cells = torch.full((H // 8, W // 8), 5.0)
    assert mem.write(model.encode(image), cells, K, c2w, maps=maps) > 0
    read = mem.read(K, c2w, H // 8, W // 8, maps=maps)
    covered = coverage(read.splats, 8, H, W, None)
    assert bool(torch.isfinite(depth).all())
    assert float(covered.float().mean()) > 0.99, float(covered.float().mean())
