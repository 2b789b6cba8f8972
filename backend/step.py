"""One frame of a frame model, as the segment loop, the bench and training all run it.

`frame_step` reads the memory at a view, lets the model complete the read, writes what is new back, and draws the
frame from what the memory then holds: coming back to a pose later draws the same thing. `seed` stores the
reference. Nothing here knows about jobs or files: a `View` carries what the scene says about one camera.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

from .channels import Maps
from .fill import push_pull
from .inputs import pad_to_cells
from .memory import Memory, MemoryRead, cell_depth, cell_edges
from .models.base import FrameModel, FrameNeeds


@dataclass
class View:
    """One camera and what the scene says there, on the frame's grid padded to whole cells (h x w cells,
    H x W pixels). K [3, 3], cam_to_world [4, 4] float64 (OpenCV); poses: object id -> [4, 4] object-to-world;
    maps: the camera's per-pixel maps (channels.Maps, padded; depth with inf where nothing is hit, None without
    scene geometry); far: where sky goes in the memory; cells [h, w] per-cell depth with sky at `far` (None
    without scene geometry); cell_ids [h, w] per-cell object ids (None without moving objects); edges [h, w] cells
    on an outline (kept out of the memory); target_depth [h, w] the per-cell depth with sky as inf; prefill: a
    models.base.Prefill; plane_distance: where new content sits without geometry; exemplars: views a model may copy
    from (the references as the memory stores them)."""
    K: torch.Tensor
    cam_to_world: torch.Tensor
    edges: torch.Tensor
    poses: dict
    maps: Maps = field(default_factory=Maps)
    far: float = float("inf")
    cells: Optional[torch.Tensor] = None
    cell_ids: Optional[torch.Tensor] = None
    target_depth: Optional[torch.Tensor] = None
    prefill: Optional[object] = None
    plane_distance: float = 5.0
    exemplars: tuple = ()

    @property
    def stored_maps(self) -> Maps:
        """The maps as the memory stores what a pixel shows: the scene's depth with sky at `far`."""
        d = self.maps.depth
        return self.maps if d is None else dataclasses.replace(
            self.maps, depth=torch.where(torch.isfinite(d), d, torch.full_like(d, self.far)))

    def read(self, memory: Memory, splats: bool = True) -> MemoryRead:
        h, w = self.edges.shape
        return memory.read(self.K, self.cam_to_world, h, w, poses=self.poses, ids=self.cell_ids, splats=splats,
                           maps=self.maps)

    def write(self, memory: Memory, latent: torch.Tensor, read: MemoryRead, mask: Optional[torch.Tensor] = None) -> int:
        """Store `latent` [C, h, w] at this view (where `mask`), at the scene's depth or, without geometry, at
        the depth the read suggests."""
        return memory.write(latent, self.depth_for(read), self.K, self.cam_to_world, mask=mask, ids=self.cell_ids,
                            poses=self.poses, maps=self.stored_maps)

    def depth_for(self, read: MemoryRead) -> torch.Tensor:
        """[h, w] where new content goes in depth: the scene's, or without it the memory's depth around it."""
        if self.cells is not None:
            return self.cells
        known = torch.isfinite(read.depth)
        if not known.any():
            return torch.full_like(read.depth, float(self.plane_distance))
        return push_pull(torch.log(read.depth.clamp_min(1e-6))[None], ~known)[0].exp()


def padded(maps: Maps, cell: int) -> Maps:
    """Every map padded to whole cells (channels.Maps of [H, W] or [n, H, W] tensors; ids and parts stay long)."""
    def pad(c, x):
        if x.dtype == torch.long:
            return pad_to_cells(x.float(), cell).long()
        return pad_to_cells(x, cell)
    return maps.map(pad)


def make_view(K: torch.Tensor, cam_to_world: torch.Tensor, size: tuple, cell: int, far: float,
              maps: Optional[Maps] = None, poses: Optional[dict] = None, plane_distance: float = 5.0) -> View:
    """The View of a camera (K [3, 3], cam_to_world [4, 4] float64) for a frame of `size` (H, W) pixels, from its
    maps (channels.Maps at that size: the scene's depth, inf = nothing there, None without geometry; object ids,
    None without moving objects; ...); sky goes to `far`."""
    H, W = size
    maps = padded(maps or Maps(), cell)
    v = View(K, cam_to_world, torch.zeros(-(-H // cell), -(-W // cell), dtype=torch.bool), poses or {}, maps=maps,
             far=far, plane_distance=plane_distance)
    if maps.depth is not None:
        pd = maps.depth
        d = cell_depth(pd, cell, maps.ids)
        d, v.cell_ids = d if maps.ids is not None else (d, None)
        v.edges = cell_edges(pd, cell, maps.ids)
        v.cells = torch.where(torch.isfinite(d), d, torch.full_like(d, far))
        v.target_depth = torch.where(v.cells >= far, torch.full_like(d, float("inf")), v.cells)
    return v


def material_cells(painted: torch.Tensor, cell: int) -> torch.Tensor:
    """[H, W] pixels painted from materials -> [h, w] cells mostly painted so. They stay out of the memory:
    painted again on every frame they come out as sharp as that frame sees them (stored, a face first painted at
    a grazing angle stays blurred when it turns to the camera), and the same, since materials do not change."""
    H, W = painted.shape
    return painted.float().reshape(H // cell, cell, W // cell, cell).mean((1, 3)) >= 0.5


def seed(model, memory: Memory, image: torch.Tensor, view: View, pixels: Optional[torch.Tensor] = None) -> int:
    """Store the reference: `image` [3, H, W] (padded, light taken out) encoded whole, outline cells too (as two
    layers, each side at its own depth): it is what the user gave, and reading the memory back at its camera
    must give it back exactly. `pixels` [H, W] bool (padded): only these pixels are stored (a reference of one
    object gives that object alone); None: all."""
    if pixels is not None:
        pixels = pixels.to(torch.bool)
        # the other pixels' colours stay out of the stored cells too (a model that blends a cell's pixels, or
        # fills beside it, would show them): they take the nearest of these pixels' colours
        image = push_pull(image, ~pixels.to(image.device))
    latent = model.encode(image)
    maps, mask = view.stored_maps, None
    if pixels is not None:
        c = model.cell
        share = pixels.float().reshape(pixels.shape[0] // c, c, pixels.shape[1] // c, c).mean((1, 3))
        if maps.depth is None:  # whole cells only: those mostly on the pixels
            mask = share >= 0.5
        else:
            # a cell with any of the pixels stores those alone: the others belong to no bank (id -1) and lie
            # nowhere, so no stored cell owns them or is placed by them
            mask = share > 0
            ids = torch.zeros_like(pixels, dtype=torch.long) if maps.ids is None else maps.ids.long()
            maps = dataclasses.replace(maps, ids=torch.where(pixels, ids, torch.full_like(ids, -1)),
                                       depth=torch.where(pixels, maps.depth, torch.full_like(maps.depth, float("inf"))))
    return memory.write(latent, view.cells, view.K, view.cam_to_world, mask=mask, ids=view.cell_ids, poses=view.poses,
                        maps=maps)


def frame_step(model: FrameModel, memory: Memory, view: View,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One frame of a frame model (models.base.FrameModel) at `view`: returns the image [3, H, W] it shows."""
    read = view.read(memory)
    drawn = read.splats is not None  # pixel-level needs only where the model can draw the read at pixel level
    needs = FrameNeeds(target_depth=view.target_depth, cell_ids=view.cell_ids, maps=view.maps if drawn else Maps(),
                       prefill=view.prefill if drawn else None,
                       K=view.K, cam_to_world=view.cam_to_world, poses=view.poses, exemplars=view.exemplars)
    done = model.complete(read, needs, generator)
    full, shown = done.latent, read
    new = read.hole if done.completed is None else done.completed.to(read.hole.device)
    if new.any():
        # generated frames leave outline cells out of the memory: what a fill painted across an outline is not
        # worth keeping (stored as layers it measured more flicker)
        keep = new & ~view.edges
        if done.from_material is not None:
            keep &= ~material_cells(done.from_material, model.cell).to(keep.device)
        stored = view.write(memory, full, read, mask=keep)
        if drawn and stored:
            # the frame shows what the memory now holds, drawn as any later read of it will be: coming back to
            # this pose gives this frame again (with nothing stored, the read is what the memory holds)
            shown = view.read(memory)
            full = torch.where(shown.hole[None], full, shown.latent.to(full.dtype))
    return model.render(full, shown, needs, done)
