"""A scene's shots and references as the add-on reads them: the shots from its timeline markers (core/shots.py),
each with its own job folder `<output>/<marker name>/`, the references that seed the set's memory, and what each
shot's folder says of its run. One scene is one set: its shots share what the memory knows and what it invented.
"""
import os
import shutil
from dataclasses import dataclass, field
from typing import Optional

from . import inputs, reference
from .backend import protocol, runstate
from .core import shots as core
from .core.errors import InputError

ONE_SHOT_LABEL = "Mirage"  # what strips and messages call a scene's one shot (no camera markers)
DONE, PARTIAL, NOT_STARTED = "done", "partial", "not started"


@dataclass(frozen=True)
class Shot:
    """One shot: its marker's name ("" for a scene without camera markers), frames, camera object, job folder
    and place in timeline order (0 first)."""
    name: str
    frames: tuple
    camera: object
    folder: str
    index: int

    @property
    def label(self) -> str:
        """What its strips are named after."""
        return self.name or ONE_SHOT_LABEL

    @property
    def title(self) -> str:
        """How a message names it."""
        return f"shot '{self.name}'" if self.name else "the flythrough"


@dataclass(frozen=True)
class Reference:
    """A reference image as the settings give it (a path, maybe "//"-relative; "" for the first reference when it
    is an Image or a rendered frame, written by the job builder), the camera it was painted from, the scene frame
    it shows, its depth map (depth source Depth Map) and how messages name it. `object`: the name of the object
    it shows alone (Object Properties > Mirage > References), None for a reference of the set."""
    image: str
    camera: object
    frame: int
    depth_image: str
    label: str
    primary: bool
    object: Optional[str] = None


@dataclass(frozen=True)
class SetPlan:
    """The scene's shots in timeline order, its references (the first reference first, the objects' own last), how
    the shots share the set's memory (core.shots.CHAINED or PARALLEL), the output folder (`fallback`: the temporary
    folder of an unsaved file) and notices for the user. `written`: the first reference's file once an Image or a
    render has been written for it, so every shot of one Generate uses the same file (a render is made once)."""
    shots: tuple
    references: tuple
    mode: str
    root: str
    fallback: bool
    notices: tuple
    written: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def frames(self) -> list:
        """Every frame of every shot, in order: moving objects are found over all of them, so every shot gives an
        object the same memory bank."""
        return sorted({f for s in self.shots for f in s.frames})

    @property
    def has_markers(self) -> bool:
        return bool(self.shots[0].name)

    def find(self, name: str, scene) -> Shot:
        """The shot called `name`; InputError saying why there is none."""
        picked = core.select([core.ShotRange(s.name, s.frames[0], s.frames[-1], "") for s in self.shots], name,
                             markers(scene), scene.frame_start, scene.frame_end)
        return next(s for s in self.shots if s.name == picked.name)

    def number(self, n: int) -> Shot:
        """The n-th shot in timeline order (1 is the first); InputError when there is none."""
        if not 1 <= n <= len(self.shots):
            raise InputError(f"There is no shot {n}: the scene has {len(self.shots)} shot(s)")
        return self.shots[n - 1]


def markers(scene) -> list:
    """The scene's timeline markers as core.shots.Marker values."""
    out = []
    for m in scene.timeline_markers:
        cam = m.camera
        out.append(core.Marker(m.name, int(m.frame), cam.name if cam is not None else None,
                               is_camera=cam is None or cam.type == "CAMERA",
                               renders=cam is None or not cam.hide_render))
    return out


def plan(scene, settings) -> SetPlan:
    """The scene's set: its shots, references (the set's, then each object's own, objects by name) and folders.
    InputError (one line) for markers that cannot make shots or a reference without an image or camera."""
    found = markers(scene)
    ranges, notices = core.shot_ranges(found, scene.frame_start, scene.frame_end,
                                       scene.camera.name if scene.camera is not None else None)
    root, fallback = inputs.output_folder(scene, settings)
    cameras = {m.name: m.camera for m in scene.timeline_markers if m.camera is not None}
    shots = tuple(Shot(r.name, tuple(r.frames), cameras[r.name] if r.name else scene.camera,
                       os.path.join(root, r.name) if r.name else root, i) for i, r in enumerate(ranges))
    refs = []
    if reference.is_set(settings):
        # a rendered frame shows its own shot, through that shot's camera, as Blender renders it
        n = reference.frame(settings, shots[0].frames[0])
        owner = next((s for s in shots if n in s.frames), shots[0])
        image = settings.reference_image if settings.reference_source == "FILE" else ""
        refs.append(Reference(image, owner.camera, n, settings.depth_image, "The reference image", True))
    items = [(f"Reference {i}", item, None) for i, item in enumerate(settings.references, 2)]
    for ob in sorted((ob for ob in scene.objects if len(getattr(ob, "mirage_references", ()))), key=lambda o: o.name):
        items += [(f"'{ob.name}' reference {i}", item, ob.name) for i, item in enumerate(ob.mirage_references, 1)]
    for label, item, name in items:
        if not item.image:
            raise InputError(f"{label} has no image: choose one, or remove the reference")
        if item.camera is None:
            raise InputError(f"{label} has no camera: choose the camera it was painted from")
        refs.append(Reference(item.image, item.camera, int(item.frame), item.depth_image, label, False, name))
        if core.shot_of_frame(ranges, item.frame) is None:
            notices.append(f"{label} (frame {item.frame}) is outside every shot: it seeds the set's memory only")
    return SetPlan(shots, tuple(refs), settings.shot_mode, root, fallback, tuple(notices))


def state(shot: Shot) -> str:
    """DONE, PARTIAL or NOT_STARTED, as the shot's folder says (a run of other frames counts as partial)."""
    run = runstate.run_state(shot.folder)
    if run is None or not run.started:
        return NOT_STARTED
    return DONE if run.finished and run.frames == shot.frames else PARTIAL


def start_memory(set_plan: SetPlan, shot: Shot) -> Optional[list]:
    """The saved memory a shot starts from (the files of the shot before it, chained shots), or None: it starts
    from the set's references. InputError when the shot before it has not finished."""
    if set_plan.mode != core.CHAINED or shot.index == 0:
        return None
    before = set_plan.shots[shot.index - 1]
    run = runstate.run_state(before.folder, check_memory=True)
    if run is None or not run.finished or run.frames != before.frames:
        raise InputError(f"Shot '{shot.name}' starts from what shot '{before.name}' leaves (chained shots), and "
                         f"'{before.name}' is not finished: generate '{before.name}' first, or set Shots to Parallel")
    if not run.memory_ok:
        raise InputError(f"The memory shot '{before.name}' saved does not match its progress (it was stopped while "
                         f"saving): generate '{before.name}' again")
    return runstate.memory_files(os.path.join(before.folder, runstate.STATE_DIR, runstate.MEMORY))


def copy_start_memory(files: Optional[list], folder: str) -> Optional[str]:
    """Copy the memory a shot starts from into its job folder (inputs/start/, emptied first, so the folder stays
    self-contained); returns the job's path of its static bank, or None without one."""
    start = os.path.join(folder, "inputs", "start")
    shutil.rmtree(start, ignore_errors=True)
    if not files:
        return None
    os.makedirs(start)
    for f in files:
        shutil.copyfile(f, os.path.join(start, os.path.basename(f)))
    return "inputs/start/" + runstate.MEMORY


def finished_segments(folder: str) -> list:
    """The finished segments of the run in a job folder, as the report lists them: (first frame, frame files
    relative to the folder) each, in order; [] without a run."""
    run = runstate.run_state(folder)
    report = runstate.read_json(os.path.join(folder, "run.json")) or {}
    if run is None or not run.started:
        return []
    out = []
    for seg in report.get("per_segment") or []:
        first, last = seg["frames"]
        frames = [n for n in run.frames if first <= n <= last]
        out.append((first, [os.path.join("frames", protocol.frame_filename(n)) for n in frames]))
    return out
