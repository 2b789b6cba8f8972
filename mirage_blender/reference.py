"""Where the reference comes from: an image file, an Image datablock already in Blender (packed or not), or a frame
of the scene rendered with the scene's own engine. All but a file are written into the output folder first (once
for every shot a Generate makes), and the user's render settings are put back after a render."""
import os
import shutil

import bpy
import numpy as np

from . import inputs
from .core.errors import InputError

SOURCES = [("FILE", "File", "An image file on disk (concept art, photo or render)"),
           ("IMAGE", "Image", "An image already loaded in Blender (packed or not)"),
           ("RENDER", "Render Frame", "Render a frame of the scene with its own engine and use that")]
# formats the backend reads as they are; anything else (EXR, HDR, ...) is written out as PNG
READABLE = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "TARGA": ".tga"}


def frame(settings, first: int) -> int:
    """The scene frame the reference shows: the rendered one, else `first` (the first shot's first frame)."""
    return settings.reference_frame if settings.reference_source == "RENDER" else first


def is_set(settings) -> bool:
    """Whether the Reference setting gives a reference at all (a File needs its path; an Image or a render is
    checked in ``check``)."""
    return settings.reference_source != "FILE" or bool(settings.reference_image)


def check(scene, settings, width: int, height: int, frames: list[int]) -> str | None:
    """Before any work: a file's checked path; for an Image or a render, None once what can be checked without
    writing anything is (``write`` then makes the file)."""
    src = settings.reference_source
    if src == "FILE":
        return inputs.reference_image(settings, width, height)
    if src == "IMAGE":
        img = settings.reference_datablock
        if img is None:
            raise InputError("No reference image is chosen: pick an Image in Mirage Flythrough > Reference")
        w, h = img.size
        if w == 0 or h == 0:
            raise InputError(f"The image '{img.name}' has no pixels (is its file missing?): "
                             f"{bpy.path.abspath(img.filepath) or 'no file'}")
        return None
    n = settings.reference_frame
    if n not in frames:
        raise InputError(f"Render Frame {n} is outside the frame range ({frames[0]} to {frames[-1]})")
    return None


def status(scene, settings) -> str | None:
    """What the status line says while ``write`` works, where that takes a while (a render), else None."""
    if settings.reference_source == "RENDER":
        return f"Rendering frame {settings.reference_frame} with {_engine_name(scene)} for the reference"
    return None


def write(scene, settings, out: str, width: int, height: int, notices: list[str]) -> str:
    """The reference of an Image or a render written into `out` (the set's folder) and checked like a file;
    returns its path."""
    if settings.reference_source == "IMAGE":
        path = _image_file(settings.reference_datablock, out)
    else:
        n = settings.reference_frame
        path = os.path.join(out, f"reference_render_{n:06d}.png")
        render_frame(scene, n, path)
        notices.append(f"The reference is frame {n} rendered with {_engine_name(scene)}: {path}")
    return inputs.image_file(path, width, height, "The reference image")


def _engine_name(scene) -> str:
    engine = scene.render.engine
    for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items:
        if item.identifier == engine:
            return item.name
    return engine.title()


def _image_file(img, out: str) -> str:
    """An Image datablock as a file in `out`: a packed file's own bytes, an unchanged file-backed image's file,
    else its pixels as PNG."""
    ext = READABLE.get(img.file_format)
    name = bpy.path.clean_name(img.name)
    if img.packed_file is not None and ext:
        path = os.path.join(out, f"reference_image_{name}{ext}")
        with open(path, "wb") as f:
            f.write(img.packed_file.data)
        return path
    src = bpy.path.abspath(img.filepath, library=img.library) if img.filepath else ""
    if src and ext and os.path.isfile(src) and not img.is_dirty and img.source == "FILE":
        path = os.path.join(out, f"reference_image_{name}{os.path.splitext(src)[1].lower() or ext}")
        shutil.copyfile(src, path)
        return path
    path = os.path.join(out, f"reference_image_{name}.png")
    w, h = img.size
    ch = img.channels
    px = np.empty(w * h * ch, dtype=np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(h * w, ch)
    rgba = np.ones((h * w, 4), dtype=np.float32)
    rgba[:, :min(ch, 4)] = px[:, :4]
    if ch < 3:  # grey (and alpha): the grey into every colour channel
        rgba[:, 1] = rgba[:, 2] = px[:, 0]
        rgba[:, 3] = px[:, 1] if ch == 2 else 1.0
    # a new image of the same kind (float images are linear; PNG saving converts them), the user's untouched
    copy = bpy.data.images.new("mirage_reference", w, h, alpha=True, float_buffer=img.is_float)
    try:
        if img.is_float:
            copy.colorspace_settings.name = img.colorspace_settings.name
        copy.pixels.foreach_set(rgba.ravel())
        copy.filepath_raw = path
        copy.file_format = "PNG"
        copy.save()
    except RuntimeError as e:
        raise InputError(f"The image '{img.name}' cannot be written as the reference: {e}") from None
    finally:
        bpy.data.images.remove(copy)
    return path


def render_frame(scene, n: int, path: str) -> None:
    """Render frame n with the scene's engine into `path` (PNG); the scene's current frame, output path and
    format and its Sequencer setting are put back afterwards, also on failure."""
    r = scene.render
    fmt = r.image_settings
    saved = {"filepath": r.filepath, "use_sequencer": r.use_sequencer}
    saved_fmt = {k: getattr(fmt, k) for k in ("media_type", "file_format", "color_mode", "color_depth")
                 if hasattr(fmt, k)}
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    try:
        scene.frame_set(n)
        if hasattr(fmt, "media_type"):  # Blender 5.0: image or video is chosen first
            fmt.media_type = "IMAGE"
        fmt.file_format = "PNG"
        fmt.color_mode = "RGB"
        fmt.color_depth = "8"
        r.use_sequencer = False  # the scene itself, not strips of an earlier run in its Sequencer
        r.filepath = path
        bpy.ops.render.render(write_still=True, scene=scene.name)
    except RuntimeError as e:
        raise InputError(f"Rendering frame {n} for the reference failed: {str(e).strip().splitlines()[-1]}") from None
    finally:
        for k, v in saved_fmt.items():  # media_type first: it resets the format
            setattr(fmt, k, v)
        for k, v in saved.items():
            setattr(r, k, v)
        if scene.frame_current != frame_before or scene.frame_subframe != subframe_before:
            scene.frame_set(frame_before, subframe=subframe_before)
    if not os.path.isfile(path):
        raise InputError(f"Rendering frame {n} for the reference wrote no image: {path}")
