"""A bake request: the textures the backend draws from a finished run's memory, one per object (stdlib only: the
add-on writes the request, the backend reads it with the same rules).

The request lives in its job folder, `<job folder>/bake/request.json` (the run whose memory it reads is the folder's
own: job.json and state/memory*.safetensors beside it):

    {"version": 1, "mode": "LOOK", "objects": [
        {"name": "Floor", "bank": 0, "width": 512, "height": 512, "size": [1024, 1024], "sides": 1,
         "texels": "000_texels.npy", "points": "000_points.npy", "normals": "000_normals.npy"}, ...]}

`bank` is the object's memory bank (0: the still world, else its id in the job's `objects`); `width` x `height`
the grid the memory is read on; `texels` [M] int64 the texels of that grid on its UV map (row * width + column, row
0 at the top), `points` [M, 3] float32 their surface addresses in the bank's space, `normals` [M, 3] float32 the
surface's outward unit normal there; with mode ALBEDO also `shade` [M, 2] float32, the still world's direct and
all-around light at each texel (core/light.py's shading map). `size` (optional, default the grid's): the texture's
texels per side, a finer texture being the read upsampled; `sides` (optional, default 2): 2 where the surface may
have been seen from behind (an open mesh: a plane, a flag), so a texel nothing holds in front is read from behind
too, 1 for a closed mesh. The backend writes, per object i, `result/<i>_colour.png` (the texture, sRGB, row 0 at
the top) and
`result/<i>_mask.png` (white where no frame saw the surface and the colour was filled from the nearest known
texel), then `result/result.json`.
"""
import json
import os
from dataclasses import dataclass
from typing import Optional

from .protocol import JobError, _inside

BAKE_VERSION = 1
FOLDER = "bake"           # in the job folder
REQUEST = "request.json"  # in FOLDER
RESULT = "result"         # in FOLDER: the backend's output
MODES = ("LOOK", "ALBEDO")
MAX_SIDE = 8192           # texels per side of one texture at most


@dataclass(frozen=True)
class BakeObject:
    """One object's texture: its name, memory bank, size and its files (absolute paths)."""
    name: str
    bank: int
    width: int
    height: int
    texels: str
    points: str
    normals: str
    shade: Optional[str] = None
    size: Optional[tuple] = None  # (width, height) of the texture, where finer than the grid read
    sides: int = 2


@dataclass(frozen=True)
class BakeRequest:
    """A checked request: its folder, the job folder whose run it bakes, the mode and the objects."""
    folder: str
    run: str
    mode: str
    objects: tuple


def result_files(i: int) -> tuple:
    """The colour and mask files of the request's i-th object, relative to the bake folder."""
    return f"{RESULT}/{i:03d}_colour.png", f"{RESULT}/{i:03d}_mask.png"


def validate_request(data, folder: str) -> BakeRequest:
    """The request `data` (parsed JSON) of the bake folder `folder`, checked: JobError (one line) otherwise."""
    if not isinstance(data, dict):
        raise JobError("the bake request must be a JSON object")
    if data.get("version") != BAKE_VERSION:
        raise JobError(f"bake request version {data.get('version')} is not supported (this backend reads "
                       f"{BAKE_VERSION})")
    mode = data.get("mode")
    if mode not in MODES:
        raise JobError(f"the bake mode must be one of {', '.join(MODES)}, got {mode!r}")
    objects = data.get("objects")
    if not isinstance(objects, list) or not objects:
        raise JobError("the bake request lists no object")
    out, names = [], set()
    for i, o in enumerate(objects):
        what = f"bake object {i}"
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not o["name"]:
            raise JobError(f"{what} needs a 'name'")
        if o["name"] in names:
            raise JobError(f"bake object '{o['name']}' is listed twice")
        names.add(o["name"])
        bank, width, height = o.get("bank"), o.get("width"), o.get("height")
        if isinstance(bank, bool) or not isinstance(bank, int) or bank < 0:
            raise JobError(f"the bank of bake object '{o['name']}' must be an integer >= 0")
        for v in (width, height):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIDE:
                raise JobError(f"the texture of bake object '{o['name']}' must be 1 to {MAX_SIDE} texels per side")
        files = {k: _inside(folder, o.get(k), f"{k} of bake object '{o['name']}'") for k in ("texels", "points",
                                                                                             "normals")}
        shade = None
        if mode == "ALBEDO":
            shade = _inside(folder, o.get("shade"), f"shade of bake object '{o['name']}'")
        size = o.get("size", [width, height])
        if (not isinstance(size, list) or len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                                                for v in size)
                or not (width <= size[0] <= MAX_SIDE and height <= size[1] <= MAX_SIDE)):
            raise JobError(f"the size of bake object '{o['name']}' must be [width, height], at least its grid's and "
                           f"at most {MAX_SIDE}")
        sides = o.get("sides", 2)
        if sides not in (1, 2) or isinstance(sides, bool):
            raise JobError(f"the sides of bake object '{o['name']}' must be 1 or 2")
        out.append(BakeObject(o["name"], bank, width, height, shade=shade, size=tuple(size), sides=sides, **files))
    return BakeRequest(os.path.abspath(folder), os.path.dirname(os.path.abspath(folder)), mode, tuple(out))


def load_request(path: str) -> BakeRequest:
    """The request at `path` (a bake folder's request.json), checked."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise JobError(f"bake request not found: {path}") from None
    except (OSError, ValueError) as e:
        raise JobError(f"the bake request {path} cannot be read: {e}") from None
    return validate_request(data, os.path.dirname(os.path.abspath(path)))
