"""The wire between the Blender add-on and the backend: message framing and the job format.

Stdlib only. The add-on imports this module from inside Blender (which has no torch) and the
backend imports it from its own interpreter, so both sides validate the same job the same way.
"""
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Optional

from .channels import CHANNELS, Maps

PROTOCOL_VERSION = 1
JOB_VERSION = 1

# backend -> add-on, one JSON object per line on stdout
MESSAGES = ("hello", "progress", "segment_done", "error", "done", "download")
# add-on -> backend, one JSON object per line on stdin
COMMANDS = ("cancel",)

DEPTH_SOURCES = ("SCENE", "IMAGE", "PLANE", "MONOCULAR")
DEVICES = ("AUTO", "CUDA", "CPU")

# Largest frame the backend accepts; beyond it the latent memory no longer fits a laptop.
MAX_PIXELS = 4096 * 4096
# Backend memory: torch and the process, one frame's working set per pixel, and growth per pixel and frame with
# what each read sees; calibrated on measured peak RSS (docs/benchmarks.md, "Backend memory").
BASE_BYTES = 256 * 2**20
BYTES_PER_PIXEL = 400
BYTES_PER_PIXEL_FRAME = 16
# A streamed job's frames after those job.json lists, one JSON object per line (JobStream).
STREAM_FILE = "inputs/frames.jsonl"
# Files and folders the backend writes in a job folder; none may be a link that leads out of it.
OUTPUT_PATHS = ("frames", "state", "state/memory.safetensors", "state/progress.json", "run.json")


MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class JobError(ValueError):
    """A job that cannot run. The message is one line meant for the user."""


class ModelError(RuntimeError):
    """A model that cannot be used; one line for the user."""


def aspect_problem(image_w, image_h, width, height, what="the reference image"):
    """The sentence that refuses an image whose aspect ratio is not the render's (1 % slack), or None."""
    if abs(image_w / image_h - width / height) > 0.01 * width / height:
        return (f"{what} is {image_w}x{image_h}, which does not have the render's aspect ratio "
                f"({width}x{height}); crop it or change the render size")
    return None


def encode(msg_type, **fields):
    if msg_type not in MESSAGES + COMMANDS:
        raise ValueError(f"unknown message type {msg_type!r}")
    return json.dumps({"type": msg_type, **fields}, separators=(",", ":")) + "\n"


def decode(line):
    """Parse one line; returns None for lines that are not protocol messages (stray prints)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("type") not in MESSAGES + COMMANDS:
        return None
    return msg


# The job format: field -> (type, required). docs/job-format.md describes each field.
JOB_FIELDS = {
    "version": (int, True),
    "model": (str, True),
    "device": (str, False),
    "seed": (int, False),
    "segment_length": (int, True),
    "width": (int, True),
    "height": (int, True),
    "reference": (dict, False),       # required unless `references` gives the references
    "references": (list, False),      # reference images painted from cameras of their own (several shots of a set)
    "parts": (dict, False),           # object name -> its number in the object maps, for references of one object
    "start": (dict, False),           # the memory a shot starts from (the shot before it, chained shots)
    "depth_source": (str, True),
    "plane_distance": ((int, float), False),
    "monocular_distance": ((int, float), False),  # MONOCULAR without geometry: how far the image's centre is
    "frames": (list, True),
    "objects": (list, False),
    "frame_count": (int, False),      # a streamed job: how many frames it has, the rest arriving in STREAM_FILE
    "prompt": (str, False),           # text guidance for diffusion models (Wan); others ignore it
    "negative_prompt": (str, False),
}


def _inside(base, rel, what):
    """Resolve a job-relative path and refuse anything that leaves the job's folder."""
    if not isinstance(rel, str) or not rel:
        raise JobError(f"{what} must be a non-empty relative path")
    if os.path.isabs(rel) or rel.startswith(("\\", "/")):
        raise JobError(f"{what} must be relative to the job folder, got an absolute path: {rel}")
    full = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([os.path.abspath(base), os.path.abspath(full)]) != os.path.abspath(base):
        raise JobError(f"{what} leaves the job folder: {rel}")
    return full


def estimate_bytes(width, height, frames):
    """Roughly how much memory the backend needs for a job of this size (see BYTES_PER_PIXEL)."""
    pixels = width * height
    return BASE_BYTES + pixels * (BYTES_PER_PIXEL + BYTES_PER_PIXEL_FRAME * max(frames, 1))


def physical_memory():
    """Bytes of RAM on this machine, or None where the platform does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_resolution(width, height, frames=1):
    """Refuse a frame size the backend cannot handle; the add-on calls this before exporting anything."""
    if width < 16 or height < 16:
        raise JobError(f"resolution {width}x{height} is too small (at least 16x16): "
                       f"raise the resolution or its percentage")
    need = estimate_bytes(width, height, frames)
    if width * height > MAX_PIXELS:
        raise JobError(f"resolution {width}x{height} is too large: it needs about {need / 2**30:.1f} GiB of memory "
                       f"and the limit is {MAX_PIXELS} pixels (4096x4096); lower the resolution or its percentage")
    ram = physical_memory()
    if ram is not None and need > ram:
        raise JobError(f"resolution {width}x{height} with {frames} frames needs about {need / 2**30:.1f} GiB of "
                       f"memory, this machine has {ram / 2**30:.1f} GiB; lower the resolution or render fewer frames")


def check_output_links(job_dir):
    """Every path the backend writes stays inside the job folder: refuse a link that leads out of it."""
    base = os.path.realpath(job_dir)
    for rel in OUTPUT_PATHS:
        full = os.path.join(job_dir, rel)
        real = os.path.realpath(full)
        if os.path.commonpath([base, real]) != base:
            raise JobError(f"{rel} in the job folder is a link to {real}, outside the folder; "
                           f"remove the link or choose another output folder")


def _matrix(value, rows, cols, what):
    if (not isinstance(value, list) or len(value) != rows
            or any(not isinstance(r, list) or len(r) != cols for r in value)):
        raise JobError(f"{what} must be a {rows}x{cols} matrix")
    for r in value:
        for x in r:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise JobError(f"{what} holds a value that is not a finite number")
    return value


def _det3(m):
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


@dataclass(frozen=True)
class TrackedObject:
    """A moving object with its own memory bank: its id in the id masks (>= 1) and its name."""
    id: int
    name: str = ""


@dataclass(frozen=True)
class Frame:
    """One frame of a job: its number, camera (OpenCV K 3x3 in pixels, cam_to_world 4x4, +Z forward, +Y down),
    `maps`: the absolute paths of its per-pixel inputs (channels.Maps; None where the job has none) and
    `objects`: object id -> 4x4 object-to-world on this frame."""
    frame: int
    K: list
    cam_to_world: list
    maps: Maps = field(default_factory=Maps)
    objects: Optional[dict] = None


@dataclass(frozen=True)
class Reference:
    """A reference image (absolute path), the scene frame it shows, its depth map (depth source IMAGE), and the
    camera it was painted from with that camera's maps (`view`, a Frame numbered `frame`), or None: the camera
    and maps of the job's frame `frame`. For MONOCULAR, the scene's depth through its camera where the scene has
    geometry there (`scene_depth`: sets the estimate's scale). `object`: the name of the one object it shows (a
    key of the job's `parts`): it gives only that object's pixels, or None: a reference of the whole set."""
    image: str
    frame: int
    depth: Optional[str] = None
    view: Optional[Frame] = None
    scene_depth: Optional[str] = None
    object: Optional[str] = None


@dataclass(frozen=True)
class StartMemory:
    """The memory a shot starts from instead of one seeded with its references: the saved memory (absolute path
    of its static bank; moving objects' banks lie beside it) and the shot that left it."""
    memory: str
    shot: str = ""


@dataclass(frozen=True)
class Job:
    """A validated job (validate_job): paths absolute, optional fields None where the job leaves them out."""
    version: int
    model: str
    segment_length: int
    width: int
    height: int
    reference: Reference  # the first of `references` that is a reference of the whole set
    depth_source: str
    frames: tuple
    device: str = "AUTO"
    seed: Optional[int] = None
    plane_distance: Optional[float] = None
    monocular_distance: Optional[float] = None
    objects: tuple = ()
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    references: tuple = ()  # every reference, `reference` first
    start: Optional[StartMemory] = None
    frame_count: Optional[int] = None
    parts: Optional[dict] = None  # object name -> its number in the object maps (references of one object)

    def __post_init__(self):
        if not self.references:  # a job made by hand with its one reference
            object.__setattr__(self, "references", (self.reference,))

    @classmethod
    def from_dict(cls, d):
        """A Job from a resolved job dict (what validate_job checked; paths absolute)."""
        frames = tuple(_frame(f) for f in d["frames"])
        refs = []
        if d.get("reference") is not None:
            ref = d["reference"]
            refs.append(Reference(ref["image"], ref["frame"], ref.get("depth"), scene_depth=ref.get("scene_depth")))
        for r in d.get("references") or ():
            scene_depth = d["depth_source"] == "SCENE"
            view = _frame({k: v for k, v in r.items() if k != "depth" or scene_depth})
            refs.append(Reference(r["image"], r["frame"], None if scene_depth else r.get("depth"), view,
                                  r.get("scene_depth"), r.get("object")))
        start = d.get("start")
        first = next((r for r in refs if r.object is None), refs[0])
        return cls(version=d["version"], model=d["model"], segment_length=d["segment_length"], width=d["width"],
                   height=d["height"], reference=first,
                   depth_source=d["depth_source"], frames=frames, device=d.get("device", "AUTO"), seed=d.get("seed"),
                   plane_distance=d.get("plane_distance"), monocular_distance=d.get("monocular_distance"),
                   objects=tuple(TrackedObject(o["id"], o.get("name", "")) for o in d.get("objects") or ()),
                   prompt=d.get("prompt"), negative_prompt=d.get("negative_prompt"), references=tuple(refs),
                   start=None if start is None else StartMemory(start["memory"], start.get("shot", "")),
                   frame_count=d.get("frame_count"), parts=d.get("parts"))

    def to_dict(self):
        """The job as a dict of the job format (fields left out where None; paths as resolved)."""
        out = {k: v for k, v in asdict(self).items()
               if v is not None and k not in ("frames", "objects", "reference", "references", "start")}
        out["frames"] = [_frame_dict(f) for f in self.frames]
        views = []
        for r in self.references:
            if r.view is None:
                out["reference"] = {k: v for k, v in asdict(r).items() if v is not None and k != "view"}
                continue
            item = {"image": r.image, **_frame_dict(r.view)}
            if r.depth is not None:
                item["depth"] = r.depth
            if r.scene_depth is not None:
                item["scene_depth"] = r.scene_depth
            if r.object is not None:
                item["object"] = r.object
            views.append(item)
        if views:
            out["references"] = views
        if self.objects:
            out["objects"] = [asdict(o) for o in self.objects]
        if self.start is not None:
            out["start"] = asdict(self.start)
        return out

    def frame_numbers(self):
        return [f.frame for f in self.frames]

    @property
    def total(self) -> int:
        """How many frames the job has: all listed, or a streamed job's frame_count."""
        return len(self.frames) if self.frame_count is None else self.frame_count


def _frame(f):
    """A Frame from a resolved frame entry (a job's frame or a reference's camera): each channel's file under
    the channel's own name."""
    return Frame(frame=f["frame"], K=f["K"], cam_to_world=f["cam_to_world"],
                 maps=Maps(**{c.name: f.get(c.name) for c in CHANNELS}),
                 objects=None if f.get("objects") is None else {int(k): v for k, v in f["objects"].items()})


def _frame_dict(f):
    item = {"frame": f.frame, "K": f.K, "cam_to_world": f.cam_to_world}
    item.update((c.name, path) for c, path in f.maps.items())
    if f.objects is not None:
        item["objects"] = {str(k): v for k, v in f.objects.items()}
    return item


def _a(what):
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


# per-pixel inputs a frame may have, each on every frame (and reference camera) or on none; depth and the object
# id mask follow the job's depth source and moving objects instead
OPTIONAL = tuple(c for c in CHANNELS if c.name not in ("depth", "ids"))


def _camera_entry(fr, job, job_dir, object_ids, label):
    """Check one camera and its per-pixel inputs (a job's frame, or a reference's own camera) and resolve its
    paths; `label` names it in messages ("frame 3")."""
    K = _matrix(fr.get("K"), 3, 3, f"K of {label}")
    c2w = _matrix(fr.get("cam_to_world"), 4, 4, f"cam_to_world of {label}")
    if K[0][0] <= 0 or K[1][1] <= 0:
        raise JobError(f"K of {label} has a non-positive focal length")
    if abs(_det3([row[:3] for row in c2w[:3]])) < 1e-9:
        raise JobError(f"cam_to_world of {label} is singular")
    item = dict(fr)
    if job["depth_source"] == "SCENE":
        item["depth"] = _inside(job_dir, fr.get("depth"), f"depth of {label}")
    if object_ids:
        poses = fr.get("objects")
        if not isinstance(poses, dict) or set(poses) != {str(i) for i in object_ids}:
            raise JobError(f"{label} must give the transform of every moving object ({len(object_ids)})")
        for oid, m in poses.items():
            _matrix(m, 4, 4, f"the transform of object {oid} on {label}")
            if abs(_det3([row[:3] for row in m[:3]])) < 1e-12:
                raise JobError(f"the transform of object {oid} on {label} is singular (zero scale)")
        item["ids"] = _inside(job_dir, fr.get("ids"), f"object id mask of {label}")
    for c in OPTIONAL:
        if item.pop(c.name, None) is not None:
            item[c.name] = _inside(job_dir, fr.get(c.name), f"{c.what} of {label}")
    return item


def _parts(job):
    """The `parts` table: object name -> its number in the object maps (an integer >= 1, one per object)."""
    parts = job.get("parts") or {}
    seen = {}
    for name, n in parts.items():
        if not name or isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise JobError(f"parts must give each object's name its number in the object maps (an integer >= 1), "
                           f"got {name!r}: {n!r}")
        if n in seen:
            raise JobError(f"parts gives '{seen[n]}' and '{name}' the same number ({n})")
        seen[n] = name
    return parts


def _reference_object(r, job, parts, label):
    """A reference's `object` checked: the name of an object of the `parts` table, with the object maps it needs."""
    name = r["object"]
    if not isinstance(name, str) or not name:
        raise JobError(f"{label}.object must be the name of an object")
    if job["depth_source"] != "SCENE":
        raise JobError(f"{label} shows the object '{name}' alone, which needs the Scene depth source (its pixels "
                       f"come from the object map)")
    if name not in parts:
        raise JobError(f"{label}.object '{name}' is not in the job's parts table")
    if r.get("parts") is None:
        raise JobError(f"{label} shows the object '{name}' alone and needs an object map ('parts')")


def _reference_views(job, job_dir, object_ids, frames):
    """The `references` entries, checked and resolved: each an image with its own camera and maps, like a frame's
    (its depth is the scene's with depth source SCENE, the user's depth map with IMAGE), and, for a reference of
    one object, that object's name."""
    out = []
    parts = _parts(job)
    for i, r in enumerate(job.get("references") or ()):
        label = f"references[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("frame"), int) or isinstance(r.get("frame"), bool):
            raise JobError(f"{label} needs an integer 'frame'")
        if r.get("object") is not None:
            _reference_object(r, job, parts, label)
        item = _camera_entry(r, job, job_dir, object_ids, label)
        item["image"] = _inside(job_dir, r.get("image"), f"{label}.image")
        if job["depth_source"] == "IMAGE":
            item["depth"] = _inside(job_dir, r.get("depth"), f"{label}.depth")
        elif job["depth_source"] in ("PLANE", "MONOCULAR"):
            item.pop("depth", None)
        _scene_depth(item, job, job_dir, label)
        for c in OPTIONAL:
            if frames and (c.name in item) != (c.name in frames[0]):
                raise JobError(f"{label} must have {_a(c.what)} exactly when the frames have one")
        out.append(item)
    return out


def _scene_depth(entry, job, job_dir, label):
    """A reference's `scene_depth` (MONOCULAR only, optional) resolved in place; dropped for other depth sources."""
    if job["depth_source"] == "MONOCULAR" and entry.get("scene_depth") is not None:
        entry["scene_depth"] = _inside(job_dir, entry["scene_depth"], f"{label}.scene_depth")
    else:
        entry.pop("scene_depth", None)


def validate_job(job, job_dir):
    """Check a job dict; returns (Job with absolute paths resolved, warnings). Raises JobError. A streamed job
    (`frame_count` more than the frames listed) is checked on what it lists; its other frames are checked as they
    arrive (JobStream)."""
    if not isinstance(job, dict):
        raise JobError("the job must be a JSON object")
    warnings = [f"unknown job field '{k}' ignored" for k in job if k not in JOB_FIELDS]
    for key, (typ, required) in JOB_FIELDS.items():
        if key not in job:
            if required:
                raise JobError(f"the job has no '{key}' field")
            continue
        if isinstance(job[key], bool) or not isinstance(job[key], typ):
            raise JobError(f"job field '{key}' has the wrong type")
    if job["version"] != JOB_VERSION:
        raise JobError(f"job version {job['version']} is not supported (this backend reads version {JOB_VERSION})")
    frames = job["frames"]
    count = job.get("frame_count")
    if count is not None and count < max(len(frames), 1):
        raise JobError(f"frame_count ({count}) must be at least 1 and the number of frames listed ({len(frames)})")
    total = len(frames) if count is None else count
    check_resolution(job["width"], job["height"], total)
    if not MODEL_NAME.fullmatch(job["model"]) or job["model"] in (".", ".."):
        raise JobError(f"model must be the name of a folder in models/, got {job['model']!r}")
    if job.get("device", "AUTO") not in DEVICES:
        raise JobError(f"device must be one of {', '.join(DEVICES)}")
    if job["depth_source"] not in DEPTH_SOURCES:
        raise JobError(f"depth_source must be one of {', '.join(DEPTH_SOURCES)}")
    if not total:
        raise JobError("the job has no frames")
    if not 1 <= job["segment_length"] <= total:
        raise JobError(f"segment_length must be between 1 and the number of frames ({total})")
    out = dict(job)
    if "reference" not in job and not job.get("references"):
        raise JobError("the job has no 'reference' field")
    if "reference" not in job and all(isinstance(r, dict) and r.get("object") is not None for r in job["references"]):
        raise JobError("the job has no reference of the whole set: every one of its references shows one object")
    ref = None
    if "reference" in job:
        ref = dict(job["reference"])
        ref["image"] = _inside(job_dir, ref.get("image"), "reference.image")
        if not isinstance(ref.get("frame"), int):
            raise JobError("reference.frame must be a frame number")
        if job["depth_source"] == "IMAGE":
            ref["depth"] = _inside(job_dir, ref.get("depth"), "reference.depth")
        _scene_depth(ref, job, job_dir, "reference")
        out["reference"] = ref
    for key in ("plane_distance", "monocular_distance"):
        if key in job and not job[key] > 0:
            raise JobError(f"{key} must be a positive distance")
    checker = FrameChecker(job, job_dir)
    resolved = [checker.frame(fr, i) for i, fr in enumerate(frames)]
    checker.same_maps(resolved)
    if len(frames) == total:
        checker.has_reference()
    views = _reference_views(job, job_dir, checker.object_ids, resolved)
    if views:
        out["references"] = views
    start = job.get("start")
    if start is not None:
        if not isinstance(start.get("shot", ""), str):
            raise JobError("start.shot must be the name of a shot")
        out["start"] = {"memory": _inside(job_dir, start.get("memory"), "start.memory"), "shot": start.get("shot", "")}
    out["frames"] = resolved
    if ref is not None:
        input_file(ref["image"], "the reference image")
        if job["depth_source"] == "IMAGE":
            input_file(ref["depth"], "the reference depth map")
        if ref.get("scene_depth"):
            input_file(ref["scene_depth"], "the scene's depth at the reference frame")
    for i, v in enumerate(views):
        input_file(v["image"], f"the image of references[{i}]")
        if "depth" in v:
            input_file(v["depth"], f"the depth of references[{i}]")
        if "scene_depth" in v:
            input_file(v["scene_depth"], f"the scene's depth at references[{i}]")
    for f in out["frames"]:
        checker.files(f)
    if start is not None:
        input_file(out["start"]["memory"], "the memory this shot starts from")
    check_output_links(job_dir)
    return Job.from_dict(out), warnings


class FrameChecker:
    """The rules each frame of a job must follow, for the frames job.json lists (validate_job) and for those a
    streamed job adds later (JobStream): every frame is checked the same way, whenever it arrives."""

    def __init__(self, job: dict, job_dir: str):
        """job: the job dict, its other fields already checked."""
        self.job, self.job_dir = job, job_dir
        self.reference = (job.get("reference") or {}).get("frame")
        self.object_ids = _objects(job)
        self.seen = set()
        self.maps = None  # which OPTIONAL channels the frames carry, fixed by the first frame

    def frame(self, fr, i: int) -> dict:
        """frames[i] checked and its paths resolved (absolute); per-frame depth dropped without the Scene source."""
        if not isinstance(fr, dict) or not isinstance(fr.get("frame"), int) or isinstance(fr.get("frame"), bool):
            raise JobError(f"frames[{i}] needs an integer 'frame'")
        n = fr["frame"]
        if n in self.seen:
            raise JobError(f"frame {n} is listed twice")
        self.seen.add(n)
        item = _camera_entry(fr, self.job, self.job_dir, self.object_ids, f"frame {n}")
        if self.job["depth_source"] != "SCENE":  # per-frame depth is not used without the Scene source
            item.pop("depth", None)
        return item

    def same_maps(self, items: list) -> None:
        """Either every frame has a light map (a surface colour map, an object map, a shading map, ...) or none
        does."""
        for item in items:
            has = tuple(c.name in item for c in OPTIONAL)
            if self.maps is None:
                self.maps = has
            for c, a, b in zip(OPTIONAL, self.maps, has):
                if a != b:
                    raise JobError(f"either every frame has {_a(c.what)} or none does")

    def has_reference(self) -> None:
        """Once every frame is there: the reference is one of them."""
        if self.reference is not None and self.reference not in self.seen:
            raise JobError(f"reference.frame {self.reference} is not one of the job's frames")

    def files(self, item: dict) -> None:
        if "depth" in item:
            input_file(item["depth"], f"the depth of frame {item['frame']}")


class JobStream:
    """The frames a streamed job adds after those job.json lists: the add-on appends one frame object per line
    (the same objects as job.json's `frames`, paths relative to the job folder) to STREAM_FILE as it exports each
    frame, the frame's files written first. Each is checked by the rules job.json's frames follow."""

    def __init__(self, job_path: str):
        with open(job_path, encoding="utf-8") as f:
            raw = json.load(f)
        self.job_dir = os.path.dirname(os.path.abspath(job_path))
        self.path = os.path.join(self.job_dir, STREAM_FILE)
        self.job, _ = validate_job(raw, self.job_dir)
        self.checker = FrameChecker(raw, self.job_dir)
        self.checker.same_maps([self.checker.frame(fr, i) for i, fr in enumerate(raw["frames"])])
        self.count = len(raw["frames"])
        self.offset = 0

    @property
    def complete(self) -> bool:
        return self.count >= self.job.total

    def more(self) -> list:
        """The frames (Frame) whose lines were finished since the last call, checked; [] when none."""
        if self.complete:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for its end
        out = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                fr = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise JobError(f"line {self.count + 1} of {STREAM_FILE} is not a JSON frame object") from None
            item = self.checker.frame(fr, self.count)
            self.checker.same_maps([item])
            self.checker.files(item)
            out.append(_frame(item))
            self.count += 1
            if self.complete:
                self.checker.has_reference()
                break
        self.offset += end
        return out


def input_file(path, what):
    """An input must be a file that can be opened: not missing, not a folder, not forbidden."""
    if os.path.isdir(path):
        raise JobError(f"{what} is a folder, not a file: {path}")
    if not os.path.isfile(path):
        raise JobError(f"{what} does not exist: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise JobError(f"{what} cannot be read ({e.strerror or e}): {path}") from None


def _objects(job):
    """Moving objects: a list of {"id": int >= 1, "name": str}. Returns their ids."""
    ids = []
    for o in job.get("objects") or []:
        if not isinstance(o, dict) or isinstance(o.get("id"), bool) or not isinstance(o.get("id"), int) \
                or o["id"] < 1 or not isinstance(o.get("name", ""), str):
            raise JobError("each moving object needs an integer 'id' >= 1 and a 'name'")
        if o["id"] in ids:
            raise JobError(f"moving object id {o['id']} is listed twice")
        ids.append(o["id"])
    if ids and job["depth_source"] != "SCENE":
        raise JobError("moving objects need the Scene depth source (their masks come from the scene)")
    return ids


def load_job(path):
    """Read and validate job.json (paths in it are relative to its folder): (Job, warnings)."""
    try:
        with open(path, encoding="utf-8") as f:
            job = json.load(f)
    except FileNotFoundError:
        raise JobError(f"job file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JobError(f"job file is not valid JSON ({e.msg if hasattr(e, 'msg') else e}): {path}") from None
    return validate_job(job, os.path.dirname(os.path.abspath(path)))


def depth_problem(depth):
    """What is wrong with a depth map (a numpy array of distances), as the end of a sentence, or None.
    Infinite depth is allowed: nothing there (sky). Duck-typed so this module needs no numpy."""
    if (depth != depth).any():
        return "holds NaN (not a number) depths"
    if (depth < 0).any():
        return "holds negative depths"
    if (depth == 0).all():
        return "is zero everywhere; depth must be the distance in scene units"
    if (depth == 0).any():
        return "holds zero depths"
    return None


def segments(frame_numbers, length):
    """Split the frame list into consecutive segments of at most `length` frames."""
    return [frame_numbers[i:i + length] for i in range(0, len(frame_numbers), length)]


def frame_filename(frame):
    return f"{frame:06d}.png"
