"""The scene as plain data: its triangles, and which of them a camera sees at each pixel."""
from dataclasses import dataclass

import numpy as np


@dataclass
class Triangles:
    """All render-visible triangles of a frame, in world space.

    world: [N, 3, 3] float64 corners; ids: [N] uint16 moving-object id (0 = the static world);
    surface: [N] int32 index of the object's baked texture (-1 = none); uvs: [N, 3, 2] float64 corner
    UVs (zero where surface is -1); parts: [N] uint16 the index of the object a triangle belongs to, any
    object, moving or still (0 = not numbered); rest: [N, 3, 3] float64 the corners' surface addresses, in the
    space of the memory bank that holds the triangle (world space for the still world, the object's rest space
    before any deformation for a moving object; None: not asked for); turn: [N] int8, +1 where the rest corners
    wind the same way as the world corners, -1 where the object's transform mirrors them."""
    world: np.ndarray
    ids: np.ndarray
    surface: np.ndarray
    uvs: np.ndarray
    parts: np.ndarray = None
    rest: np.ndarray = None
    turn: np.ndarray = None

    def __len__(self) -> int:
        return len(self.world)


@dataclass
class Hits:
    """The pixels of an [H, W] image that see a triangle: rows [M] and cols [M] (int64), tri [M] the
    triangle's index into the frame's Triangles, points [M, 3] their world positions."""
    rows: np.ndarray
    cols: np.ndarray
    tri: np.ndarray
    points: np.ndarray
