"""Reading a job's inputs: the reference image and each camera's per-pixel maps (channels.Maps: depth, object id
masks, light, surface colour, ...), each checked, with a one-line JobError naming the file when something is
wrong."""
import dataclasses
import os
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import protocol
from .channels import Channel, Maps
from .protocol import JobError

SKY_FACTOR = 20.0  # sky and other misses are placed this many times the farthest surface away


def far_distance(depth: torch.Tensor) -> float:
    """Where sky goes for a memory seeded with `depth` [H, W] (inf = nothing there): far beyond every surface,
    so it still enters the memory and moves like sky."""
    finite = depth[torch.isfinite(depth)]
    return float(finite.max()) * SKY_FACTOR if finite.numel() else 1000.0


def load_image(path: str, width: int, height: int) -> torch.Tensor:
    """Reference image -> [3, H, W] float in 0..1, resized to the render size."""
    try:
        if os.path.getsize(path) == 0:
            raise JobError(f"the reference image is empty (0 bytes): {path}")
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise JobError(f"the reference image does not exist: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise JobError(f"the reference image cannot be read ({type(e).__name__}): {path}") from None
    problem = protocol.aspect_problem(rgb.width, rgb.height, width, height)
    if problem:
        raise JobError(problem)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.LANCZOS)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def load_array(path: str, width: int, height: int, what: str) -> np.ndarray:
    """A per-pixel .npy input ([H, W], never pickled), or a one-line JobError naming it."""
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise JobError(f"{what} is missing: {path}") from None
    except (ValueError, OSError) as e:
        raise JobError(f"{what} cannot be read ({e}): {path}") from None
    if a.shape != (height, width):
        raise JobError(f"{what} is {a.shape[1] if a.ndim == 2 else '?'}x{a.shape[0]}, expected {width}x{height}")
    return a


def load_depth(path: str, width: int, height: int, what: str) -> torch.Tensor:
    """[H, W] float32 planar depth (inf = nothing there), checked."""
    d = load_array(path, width, height, what).astype(np.float32)
    problem = protocol.depth_problem(d)
    if problem:
        raise JobError(f"{what} {problem}: {path}")
    return torch.from_numpy(d)


def pad_to_cells(t: torch.Tensor, cell: int) -> torch.Tensor:
    """Pad the right/bottom edge (replicate) so the size divides into cells; K is unchanged by this."""
    H, W = t.shape[-2:]
    ph, pw = (-H) % cell, (-W) % cell
    if not ph and not pw:
        return t
    x = t[None] if t.dim() == 3 else t[None, None]
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x[0] if t.dim() == 3 else x[0, 0]


class Inputs:
    """A job's per-frame inputs, loaded when asked (the maps of the camera last asked for are kept). A camera is a
    frame number or a protocol.Frame (a reference's own camera)."""

    def __init__(self, job: protocol.Job, device: str = "cpu", emit: Optional[Callable] = None):
        self.job = job
        self.device, self.emit = device, emit
        self._estimated = {}  # MONOCULAR: each reference's depth, estimated once
        self._depth_model = None
        self.W, self.H = job.width, job.height
        self.frames = {f.frame: f for f in job.frames}
        self.known_ids = {0} | {o.id for o in job.objects}
        self._maps = (None, None)

    def frame(self, n) -> protocol.Frame:
        """The Frame of a camera: frame number n of the job, or n itself."""
        return n if isinstance(n, protocol.Frame) else self.frames[n]

    def add(self, frames) -> None:
        """More frames of a streamed job (protocol.Frame, checked), as they arrive."""
        self.frames.update((f.frame, f) for f in frames)

    def view(self, ref: protocol.Reference) -> protocol.Frame:
        """The camera a reference was painted from: its own, or that of the job's frame it names."""
        return ref.view if ref.view is not None else self.frames[ref.frame]

    def reference_image(self, ref: Optional[protocol.Reference] = None) -> torch.Tensor:
        """[3, H, W] the user's reference image (the job's first by default) at the render size."""
        return load_image((ref or self.job.reference).image, self.W, self.H)

    def reference_depth(self, ref: Optional[protocol.Reference] = None) -> torch.Tensor:
        """[H, W] depth of a reference (the job's first by default) by the job's depth source (a plane at
        plane_distance for PLANE)."""
        src, ref = self.job.depth_source, ref or self.job.reference
        if src == "SCENE":
            return self.maps(self.view(ref)).depth
        if src == "IMAGE":
            return load_depth(ref.depth, self.W, self.H, "the reference depth map")
        if src == "MONOCULAR":
            return self.estimated_depth(ref)
        return torch.full((self.H, self.W), float(self.plane_distance()))

    def estimated_depth(self, ref: protocol.Reference) -> torch.Tensor:
        """[H, W] a reference's depth from its image itself, in scene units (backend/depth.py); the depth model is
        loaded once for every reference of the job."""
        if id(ref) not in self._estimated:
            from . import depth
            scene = None if ref.scene_depth is None else \
                load_depth(ref.scene_depth, self.W, self.H, "the scene's depth at the reference's camera")
            distance = self.job.monocular_distance if self.job.monocular_distance is not None else 5.0
            if self._depth_model is None:
                self._depth_model = depth.load(self.device, self.emit)
            disparity = self._depth_model.disparity(self.reference_image(ref))
            self._estimated[id(ref)] = depth.to_depth(disparity, scene, distance)[0]
        return self._estimated[id(ref)]

    def plane_distance(self) -> float:
        return self.job.plane_distance if self.job.plane_distance is not None else 5.0

    def camera(self, n) -> tuple:
        """(K [3, 3], cam_to_world [4, 4]) float64 of camera n."""
        f = self.frame(n)
        return torch.tensor(f.K, dtype=torch.float64), torch.tensor(f.cam_to_world, dtype=torch.float64)

    def _name(self, n) -> str:
        """How messages name camera n: a frame of the job, or a reference's own camera."""
        if not isinstance(n, protocol.Frame):
            return f"frame {n}"
        return f"frame {n.frame}" if self.frames.get(n.frame) is n else f"the camera of the reference of frame {n.frame}"

    def poses(self, n) -> dict:
        """Object id -> object-to-world matrix at camera n (moving objects only)."""
        objs = self.frame(n).objects or {}
        return {int(k): torch.tensor(m, dtype=torch.float64) for k, m in objs.items()}

    def maps(self, n) -> Maps:
        """Every per-pixel map of camera n, loaded and checked (channels.Maps of tensors at the job's size: [H, W]
        or [values, H, W]; ids, parts long; albedo 0..1), None where the job has none (depth without the Scene
        depth source). The last camera's are kept: the read, the light and the material colours of one frame all
        need them."""
        key = n if not isinstance(n, protocol.Frame) else ("view", id(n))
        if self._maps[0] != key:
            paths = self.frame(n).maps
            if self.job.depth_source != "SCENE":
                paths = dataclasses.replace(paths, depth=None)
            if not self.job.objects:
                paths = dataclasses.replace(paths, ids=None)
            self._maps = (key, paths.map(lambda c, path: self._load(c, path, n)))
        return self._maps[1]

    def _load(self, c: Channel, path: str, n) -> torch.Tensor:
        """One channel's file as a tensor, checked, or a one-line JobError naming the map, the camera and the file."""
        what = f"the {c.what} of {self._name(n)}"
        if c.name == "depth":
            return load_depth(path, self.W, self.H, what)
        if c.values == 1:
            a = load_array(path, self.W, self.H, what)
        else:
            kind = {"float": "floats", "int": "integers", "uint8": "uint8"}[c.kind]
            a = self._channels(path, what, c.values, kind, _KINDS[c.kind])
        if c.kind == "int" and (not _KINDS["int"](a.dtype) or (c.non_negative and (a < 0).any())):
            raise JobError(f"{what} must hold {'non-negative ' if c.non_negative else ''}integers, not {a.dtype}: {path}")
        if c.kind == "float":
            if not _KINDS["float"](a.dtype):
                raise JobError(f"{what} must hold floats, not {a.dtype}: {path}")
            a = a.astype(np.float32)
            if (c.finite and not np.all(np.isfinite(a))) or (c.non_negative and (a < 0).any()):
                raise JobError(f"{what} holds NaN, infinite or negative values: {path}")
        if c.name == "ids":
            unknown = set(np.unique(a).tolist()) - self.known_ids
            if unknown:
                raise JobError(f"{what} holds ids the job does not list: {sorted(unknown)}")
        t = torch.from_numpy(a.astype(np.int64) if c.kind == "int" else a)
        if c.kind == "uint8":
            t = t.float() / 255.0
        return t if c.values == 1 else t.permute(2, 0, 1).contiguous()

    def _channels(self, path, what, channels, kind, dtype_ok) -> np.ndarray:
        """An [H, W, channels] array from `path` whose dtype passes `dtype_ok`, or one line naming `what`."""
        try:
            a = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise JobError(f"{what} cannot be read ({e}): {path}") from None
        if a.shape != (self.H, self.W, channels) or not dtype_ok(a.dtype):
            raise JobError(f"{what} must be {self.W}x{self.H}x{channels} {kind}, "
                           f"not {'x'.join(map(str, a.shape[1::-1] + a.shape[2:]))} {a.dtype}: {path}")
        return a


# what a loaded channel's dtype must be, by Channel.kind
_KINDS = {"float": lambda d: np.issubdtype(d, np.floating), "int": lambda d: np.issubdtype(d, np.integer),
          "uint8": lambda d: d == np.uint8}
