"""The two model interfaces the segment loop drives, and the small values they exchange with it.

A frame model completes one frame at a time from a memory read (encode, complete, render); a segment model
generates a whole segment jointly from the memory read at each of its frames (plan, generate) and names the
frames the memory keeps. The loop branches once, on which of the two a model is. Nothing here imports torch at
run time, so the registry can name and check model classes without loading them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Protocol, Sequence

from ..channels import Maps
from ..protocol import ModelError  # noqa: F401  (models raise it; the registry re-exports it)

if TYPE_CHECKING:
    import torch

    from ..memory import MemoryRead


@dataclass
class Exemplar:
    """A view to copy from: image [3, H, W] in 0..1, K [3, 3] and cam_to_world [4, 4] (OpenCV), maps: its per-pixel
    maps (channels.Maps: depth [H, W], inf where nothing; ids [H, W], None: all static world; parts [H, W] which
    object each pixel sees, None: not known; shade [2, H, W], None: not known; ...), poses: object id -> [4, 4]
    object-to-world at this view, usable [H, W] bool: the pixels that may be copied (None: every pixel with a
    depth)."""
    image: "torch.Tensor"
    K: "torch.Tensor"
    cam_to_world: "torch.Tensor"
    maps: Maps = field(default_factory=Maps)
    poses: Optional[dict] = None
    usable: Optional["torch.Tensor"] = None


class Prefill(Protocol):
    """Pixels the caller knows better than any fill (a moving object's never-seen faces, from its material)."""

    def paint(self, drawn: "torch.Tensor", covered: "torch.Tensor") -> tuple:
        """drawn [3, H, W], covered [H, W] bool -> (drawn, covered, painted [H, W]: the pixels it painted)."""


@dataclass
class FrameNeeds:
    """What the scene says about the frame being completed, on the frame's grid padded to whole cells; None
    where the job does not give it.

    target_depth [h, w]: the scene's per-cell depth (inf = sky); cell_ids [h, w]: per-cell object id (0 = static
    world); maps: the frame's per-pixel maps where the read has splats (channels.Maps: depth [H, W], inf = sky; ids
    [H, W]; parts [H, W] which object each pixel sees, moving or still; shade [2, H, W] the static world's light;
    ...); prefill: pixels to keep and fill the rest from; K [3, 3] and cam_to_world [4, 4]: the frame's camera,
    poses: its moving objects' transforms; exemplars: views to copy from where nothing is known (Exemplar: the
    references, as the memory stores them)."""
    target_depth: Optional["torch.Tensor"] = None
    cell_ids: Optional["torch.Tensor"] = None
    maps: Maps = field(default_factory=Maps)
    prefill: Optional[Prefill] = None
    K: Optional["torch.Tensor"] = None
    cam_to_world: Optional["torch.Tensor"] = None
    poses: Optional[dict] = None
    exemplars: Sequence = ()


@dataclass
class Completion:
    """Everything a frame model's `complete` produced. latent [C, h, w]: the read with its holes completed (known
    cells exactly as read); pixels [3, H, W]: what it painted where no stored cell reaches, when it painted
    pixels (render shows them rather than decoding the latent again); from_material [H, W] bool: the pixels the
    prefill painted (kept out of the memory: painted again on every frame); completed [h, w] bool: the cells it
    completed and asks to store, where that is more than the read's holes (None: the read's holes); exact [H, W]
    bool: pixels it paints the same on every frame by a rule of the scene, shown as painted wherever they are."""
    latent: "torch.Tensor"
    pixels: Optional["torch.Tensor"] = None
    from_material: Optional["torch.Tensor"] = None
    completed: Optional["torch.Tensor"] = None
    exact: Optional["torch.Tensor"] = None


class FrameModel(ABC):
    """Completes one frame at a time: encode pixels into cells, complete a memory read, render cells to pixels.

    `cell` pixels per latent cell along each side, `channels` latent channels per cell, `name` the model folder
    that runs. Constructed by the registry as Class(name, folder=..., device=..., emit=..., **model.json args)."""
    name: str = ""
    cell: int = 8
    channels: int = 0

    @abstractmethod
    def encode(self, image: "torch.Tensor") -> "torch.Tensor":
        """[3, H, W] float in 0..1 (H, W multiples of `cell`) -> [C, H/cell, W/cell]."""

    @abstractmethod
    def complete(self, read: "MemoryRead", needs: FrameNeeds, generator: Optional["torch.Generator"] = None) -> Completion:
        """Fill the holes of a memory read (read.hole True = unknown)."""

    def invent(self, memory, views: Iterable, generator: Optional["torch.Generator"] = None) -> None:
        """Before a segment's frames are drawn: write into `memory` what the model invents for the surfaces the
        segment's views (step.View, in order, an iterable read once) see and the memory lacks, so every frame reads
        the same. By default nothing: each frame completes its own holes."""

    @abstractmethod
    def render(self, latent: "torch.Tensor", read: Optional["MemoryRead"] = None, needs: Optional[FrameNeeds] = None,
               completion: Optional[Completion] = None) -> "torch.Tensor":
        """[C, h, w] -> [3, h*cell, w*cell] in 0..1. With the memory read the frame shows (its splats, or its
        geometry), each stored cell is drawn where it really lands, at pixel precision, each pixel only from
        its own bank (needs.maps.ids); without, the latent grid is decoded as it is."""


@dataclass
class SegmentFrame:
    """One frame of a segment as a segment model gets it: `read`, the memory read at the frame's camera (with its
    splats where the memory keeps them), and `maps`, the frame's per-pixel maps on the grid padded to whole cells
    (channels.Maps; its object id mask `ids`, None without moving objects, keeps each pixel to its own bank when the
    read is drawn)."""
    read: "MemoryRead"
    maps: Maps = field(default_factory=Maps)


@dataclass
class SegmentResult:
    """What a segment model generated for one segment of n frames. frames [n, 3, H, W] in 0..1: the frames at the
    job's size padded to whole cells, in the memory's light (the loop relights and crops them); writes: the
    frames to remember, in order, as (index in the segment, latent [C, H/cell, W/cell]), each written at that
    frame's camera where the memory still has holes then."""
    frames: "torch.Tensor"
    writes: list[tuple[int, "torch.Tensor"]] = field(default_factory=list)


class SegmentModel(ABC):
    """Generates a whole segment jointly (video diffusion). The loop asks `plan` once, before any work; for each
    segment it reads the memory at every frame, hands the reads to `generate`, writes the latents it returns back
    (each at its own frame's camera, read again first, so a frame stores only what earlier writes of the segment
    left unknown), then relights and saves the frames.

    `cell` pixels per latent cell along each side, `channels` latent channels per cell, `name` the model folder
    that runs. Constructed by the registry as Class(name, folder=..., device=..., emit=..., **model.json args)."""
    name: str = ""
    cell: int = 8
    channels: int = 0

    @abstractmethod
    def encode(self, image: "torch.Tensor") -> "torch.Tensor":
        """[3, H, W] in 0..1 -> the latent [C, H/cell, W/cell] the memory is seeded with."""

    @abstractmethod
    def plan(self, width: int, height: int, segment_length: int, frames: int) -> tuple:
        """Before any work, for a width x height job of `frames` frames: (segment length to use, notices for
        hello); raises ModelError when the job cannot run here."""

    @abstractmethod
    def generate(self, frames: Sequence[SegmentFrame], prompt: str = "", negative_prompt: str = "",
                 generator: Optional["torch.Generator"] = None,
                 step: Optional[Callable[[int, int], None]] = None) -> SegmentResult:
        """One segment, jointly, from the memory read at each of its frames (in order); step(i, steps) before each
        denoising step (it may raise to cancel)."""
