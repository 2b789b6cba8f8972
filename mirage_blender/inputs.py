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
    ref = bpy.path.abspath(settings.reference_image) if settings.reference_image else ""
    if not ref:
        raise InputError("No reference image is set: choose one in Mirage Flythrough > Reference")
    return checked_reference(ref, width, height)


def checked_reference(ref: str, width: int, height: int) -> str:
    """An image file as the reference: readable, not empty, the render's aspect. Returns its path."""
    check_readable(ref, "the reference image")
    if os.path.getsize(ref) == 0:
        raise InputError(f"The reference image is empty (0 bytes): {ref}")
    # checked here as well as in the backend, to name the user's file, not the job's copy
    with _user_image(ref, "The reference image") as img:
        w, h = img.size
    if w == 0 or h == 0:
        raise InputError(f"The reference image cannot be read: {ref}")
    problem = protocol.aspect_problem(w, h, width, height)
    if problem:
        raise InputError(sentence(problem))
    return ref


def depth_map(settings, width: int, height: int) -> np.ndarray | None:
    """The reference's depth map [H, W] float32 (top row first) when Depth is Depth Map, else None."""
    if settings.depth_source != "IMAGE":
        return None
    path = bpy.path.abspath(settings.depth_image) if settings.depth_image else ""
    if not path:
        raise InputError("Depth is set to Depth Map, but no depth map is chosen")
    check_readable(path, "the depth map")
    with _user_image(path, "The depth map") as img:
        w, h = img.size
        if (w, h) != (width, height):
            raise InputError(f"The depth map is {w}x{h}, the render is {width}x{height}")
        img.colorspace_settings.is_data = True
        px = np.empty(w * h * img.channels, dtype=np.float32)
        img.pixels.foreach_get(px)
        depth = px.reshape(h, w, img.channels)[::-1, :, 0].copy()  # Blender stores pixels bottom-up
    problem = protocol.depth_problem(depth)
    if problem:
        raise InputError(f"The depth map {problem}: {path}")
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
