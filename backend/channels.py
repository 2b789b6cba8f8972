"""The per-pixel maps of one camera: one value, one name per channel, from the add-on's export to the models.

`Maps` is the only thing that carries per-pixel channels across the seams: the add-on's export fills it with
numpy arrays ([H, W] or [H, W, n]), a job frame names each channel's file by the same key (protocol.Frame.maps
holds the paths), the backend loads them into torch tensors ([H, W] or [n, H, W]) and hands the same value on to
the step, the memory and the models. A new channel is one row of CHANNELS and one field of Maps.

Stdlib only: both sides import it.
"""
from dataclasses import dataclass, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Channel:
    """One per-pixel channel: its name (the field of Maps and the key of a job frame), how many values a pixel
    has (1: [H, W]), the numpy dtype the add-on stores it as, what the backend accepts (`kind`: "float", "int"
    or "uint8"), whether values must be finite and non-negative, and how messages name it ("shading map")."""
    name: str
    values: int
    stored: str
    kind: str
    what: str
    non_negative: bool = False
    finite: bool = False


CHANNELS = (
    # planar camera depth in scene units, inf where nothing is hit (checked by protocol.depth_problem)
    Channel("depth", 1, "float32", "float", "depth"),
    # the moving object each pixel shows (1, 2, ... as the job lists them; 0: the still world or nothing)
    Channel("ids", 1, "uint16", "int", "object id mask", non_negative=True),
    # which object each pixel shows, moving or still (numbered by name for the whole set; 0: nothing)
    Channel("parts", 1, "uint16", "int", "object map", non_negative=True),
    # how moving objects change the light there: a ratio of linear light
    Channel("light", 1, "float16", "float", "light map", non_negative=True, finite=True),
    # moving objects' surface colour baked from their materials (display values; 0 where none)
    Channel("albedo", 3, "uint8", "uint8", "surface colour map"),
    # the still world's direct lamp light with its shadows, and the light from all around
    Channel("shade", 2, "float16", "float", "shading map", non_negative=True, finite=True),
    # the surface address: where on its object the pixel lies, in the space of the memory bank that holds the
    # object (the world for the still world, the object's rest space before any deformation for a moving one);
    # NaN where nothing is hit
    Channel("rest", 3, "float32", "float", "surface address map"),
    # the surface's unit normal in the same space, turned to face the camera; 0 where nothing is hit
    Channel("normal", 3, "float16", "float", "surface normal map", finite=True),
)
BY_NAME = {c.name: c for c in CHANNELS}


@dataclass
class Maps:
    """One camera's per-pixel maps, each None where the job has none. The same type in every room: numpy arrays
    in the add-on, file paths in a job (protocol.Frame.maps), torch tensors in the backend (padded to whole cells
    once a step has them). Fields: CHANNELS, in order."""
    depth: Any = None
    ids: Any = None
    parts: Any = None
    light: Any = None
    albedo: Any = None
    shade: Any = None
    rest: Any = None
    normal: Any = None

    def items(self) -> list:
        """[(Channel, value)] of the channels present, in CHANNELS order."""
        return [(BY_NAME[f.name], getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def names(self) -> tuple:
        """The names of the channels present."""
        return tuple(c.name for c, _ in self.items())

    def map(self, fn: Callable[[Channel, Any], Any]) -> "Maps":
        """A new Maps with fn(channel, value) for every channel present."""
        return Maps(**{c.name: fn(c, v) for c, v in self.items()})


