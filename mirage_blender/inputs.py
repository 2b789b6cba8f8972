"""The files and folders the user chose, checked before any work: one clear line when one cannot be used."""
import contextlib
import os
import tempfile

import bpy
import numpy as np

from .backend import protocol
from .core.errors import InputError, sentence


def output_folder(scene, settings) -> tuple[str, bool]:
    """The run's folder, always absolute (the one place a relative Output is resolved), and whether it is the
    fallback for an unsaved file. "//mirage/" is the .blend's folder; a relative path without "//" ("mirage/")
    is too, or Blender's working folder when the file is not saved yet."""
    path = os.path.expanduser(settings.output_dir.strip() or "//mirage/")
    if path.startswith("//"):
        if not bpy.data.filepath:
            # an unsaved file has no folder for "//": keep the run beside Blender's temp files
            return os.path.join(tempfile.gettempdir(), "mirage", bpy.path.clean_name(scene.name)), True
        path = bpy.path.abspath(path)
    elif not os.path.isabs(path):
        base = os.path.dirname(bpy.path.abspath(bpy.data.filepath)) if bpy.data.filepath else os.getcwd()
        path = os.path.join(base, path)
    return os.path.normpath(os.path.abspath(path)), False


def make_output_folder(out: str) -> None:
    """Create the output folder with its inputs/depth and prove it can be written."""
    try:
        os.makedirs(os.path.join(out, "inputs", "depth"), exist_ok=True)
        probe = os.path.join(out, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise InputError(f"Cannot write to the output folder {out}: {e.strerror or e}") from None


def reference_image(settings, width: int, height: int) -> str:
    """The absolute path of the reference image, checked: set, readable, not empty, the render's aspect."""
    if not settings.reference_image:
        raise InputError("No reference image is set: choose one in Mirage Flythrough > Reference")
    return image_file(settings.reference_image, width, height, "The reference image")


def image_file(path: str, width: int, height: int, what: str) -> str:
    """The absolute path of a reference image the user chose (`what` names it: "Reference 2"), checked:
    readable, not empty, the render's aspect."""
    ref = bpy.path.abspath(path)
    check_readable(ref, what[:1].lower() + what[1:])
    if os.path.getsize(ref) == 0:
        raise InputError(f"{what} is empty (0 bytes): {ref}")
    # checked here as well as in the backend, to name the user's file, not the job's copy
    with _user_image(ref, what) as img:
        w, h = img.size
    if w == 0 or h == 0:
        raise InputError(f"{what} cannot be read: {ref}")
    problem = protocol.aspect_problem(w, h, width, height, what[:1].lower() + what[1:])
    if problem:
        raise InputError(sentence(problem))
    return ref


def depth_map(settings, width: int, height: int) -> np.ndarray | None:
    """The reference's depth map [H, W] float32 (top row first) when Depth is Depth Map, else None."""
    if settings.depth_source != "IMAGE":
        return None
    if not settings.depth_image:
        raise InputError("Depth is set to Depth Map, but no depth map is chosen")
    return depth_file(settings.depth_image, width, height, "The depth map")


def depth_file(path: str, width: int, height: int, what: str) -> np.ndarray:
    """A depth map the user chose (`what` names it) as [H, W] float32, top row first, checked."""
    if not path:
        raise InputError(f"Depth is set to Depth Map, but {what[:1].lower() + what[1:]} is not chosen")
    path = bpy.path.abspath(path)
    check_readable(path, what[:1].lower() + what[1:])
    with _user_image(path, what) as img:
        w, h = img.size
        if (w, h) != (width, height):
            raise InputError(f"{what} is {w}x{h}, the render is {width}x{height}")
        img.colorspace_settings.is_data = True
        px = np.empty(w * h * img.channels, dtype=np.float32)
        img.pixels.foreach_get(px)
        depth = px.reshape(h, w, img.channels)[::-1, :, 0].copy()  # Blender stores pixels bottom-up
    problem = protocol.depth_problem(depth)
    if problem:
        raise InputError(f"{what} {problem}: {path}")
    return depth


def check_readable(path: str, what: str) -> None:
    """A path the user picked must be a file we can open (the backend checks its copy the same way)."""
    try:
        protocol.input_file(path, what)
    except protocol.JobError as e:
        raise InputError(sentence(str(e))) from None


@contextlib.contextmanager
def _user_image(path, what):
    """A user's image file as a temporary Image datablock, removed again whatever happens."""
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:
        raise InputError(f"{what} cannot be read: {path}") from None
    try:
        yield img
    finally:
        bpy.data.images.remove(img)
