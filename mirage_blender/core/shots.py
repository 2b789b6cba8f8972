"""A scene's shots from its timeline markers, on plain values.

Blender's own multi-camera practice: a marker bound to a camera switches the render to that camera from its
frame on. Each such marker starts a shot that lasts until the next one or the end of the frame range; frames
before the first marker are seen through the first marker's camera, as Blender renders them, so they belong to
the first shot. Markers whose camera is hidden from the render are skipped, as Blender skips them. Without
camera markers the whole range, with the scene camera, is one shot.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import InputError

# characters no folder name may hold on Windows, macOS or Linux
BAD_CHARACTERS = set('/\\:*?"<>|')
# folders a job folder already has; a shot of that name would share them
RESERVED = {"frames", "state", "inputs"}
CHAINED, PARALLEL = "CHAINED", "PARALLEL"


@dataclass(frozen=True)
class Marker:
    """A timeline marker: its name, frame, the name of the object bound to it (None: none) and whether that
    object is a camera Blender renders through."""
    name: str
    frame: int
    camera: Optional[str] = None
    is_camera: bool = True
    renders: bool = True


@dataclass(frozen=True)
class ShotRange:
    """One shot: its marker's name ("" for a scene without camera markers), its first and last frame
    (inclusive) and the name of its camera."""
    name: str
    start: int
    end: int
    camera: str

    @property
    def frames(self) -> range:
        return range(self.start, self.end + 1)


def folder_name_problem(name: str) -> Optional[str]:
    """Why a marker's name cannot name a shot's folder (the end of a sentence), or None."""
    if not name.strip():
        return "is empty"
    if name != name.strip() or name.endswith("."):
        return "starts or ends with a space, or ends with a dot"
    bad = sorted({c for c in name if c in BAD_CHARACTERS or ord(c) < 32})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"holds {shown}, which a folder name cannot"
    if name.lower() in RESERVED:
        return "is a folder every job folder has"
    return None


def shot_ranges(markers: Sequence[Marker], frame_start: int, frame_end: int,
                scene_camera: Optional[str]) -> tuple[list[ShotRange], list[str]]:
    """The scene's shots in timeline order, and notices for the user. InputError (one line) for two camera
    markers on one frame, a marker bound to something that is not a camera, or marker names that cannot name
    the shots' folders."""
    if frame_end < frame_start:
        raise InputError("The frame range is empty (End is before Start)")
    notices = []
    bound = []
    for m in markers:
        if m.camera is None:
            continue
        if not m.is_camera:
            raise InputError(f"Marker '{m.name}' is bound to '{m.camera}', which is not a camera: bind a camera "
                             f"to it (select the camera, then Marker > Bind Camera to Markers)")
        if not m.renders:
            notices.append(f"Marker '{m.name}' is bound to '{m.camera}', which is hidden from the render: "
                           f"Blender skips it, and so does Mirage")
            continue
        bound.append(m)
    if not bound:
        if markers and not any(m.camera for m in markers):
            notices.append("The scene's markers are not bound to cameras: the whole frame range is one shot "
                           "with the scene camera (bind a camera to a marker to start a shot there)")
        return [ShotRange("", frame_start, frame_end, scene_camera or "")], notices
    bound.sort(key=lambda m: m.frame)
    for a, b in zip(bound, bound[1:]):
        if a.frame == b.frame:
            raise InputError(f"Markers '{a.name}' and '{b.name}' are both on frame {a.frame}: move one of them "
                             f"(each camera marker starts its own shot)")
    # the marker in effect on a frame is the last one at or before it, else the first one: each marker owns the
    # frames from its own (the range's start, for the first) to the next marker's
    owners = []  # (marker, first frame, last frame)
    for i, m in enumerate(bound):
        first = frame_start if i == 0 else max(m.frame, frame_start)
        last = min(bound[i + 1].frame - 1, frame_end) if i + 1 < len(bound) else frame_end
        if first <= last:
            owners.append((m, first, last))
    starting = [m for m, _, _ in owners]
    for m in bound:
        if not any(m is s for s in starting):
            notices.append(f"Marker '{m.name}' (frame {m.frame}) starts no shot: a later marker takes over before "
                           f"the frame range {frame_start}-{frame_end} begins, or it lies after the range")
    for m in starting:
        problem = folder_name_problem(m.name)
        if problem:
            raise InputError(f"Marker '{m.name}' cannot name a shot's folder: its name {problem}; rename the marker")
        if sum(1 for other in bound if other.name.lower() == m.name.lower()) > 1:
            raise InputError(f"Two camera markers are named '{m.name}' (or differ only in case): rename one, each "
                             f"shot's folder is named after its marker")
    return [ShotRange(m.name, a, b, m.camera) for m, a, b in owners], notices


def select(ranges: Sequence[ShotRange], name: str, markers: Sequence[Marker], frame_start: int,
           frame_end: int) -> ShotRange:
    """The shot called `name`, or InputError saying why there is none (one line)."""
    for r in ranges:
        if r.name and r.name == name:
            return r
    for m in markers:
        if m.name == name and m.camera is None:
            raise InputError(f"Marker '{name}' is not bound to a camera, so it starts no shot: bind a camera to it "
                             f"(select the camera, then Marker > Bind Camera to Markers)")
        if m.name == name:
            raise InputError(f"Shot '{name}' has no frames in the frame range {frame_start}-{frame_end} "
                             f"(its marker is on frame {m.frame})")
    names = [r.name for r in ranges if r.name]
    if not names:
        raise InputError(f"There is no shot named '{name}': the scene has no camera markers, so its only shot is "
                         f"the whole frame range (generate without naming a shot)")
    raise InputError(f"There is no shot named '{name}': the shots are {', '.join(repr(n) for n in names)}")


def shot_of_frame(ranges: Sequence[ShotRange], frame: int) -> Optional[ShotRange]:
    """The shot that holds `frame`, or None."""
    for r in ranges:
        if r.start <= frame <= r.end:
            return r
    return None
