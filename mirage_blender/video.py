"""A shot's flythrough as one video: flythrough.mp4 in its job folder (<output>/ without camera markers,
<output>/<marker>/ for each shot of a set; H.264, the scene's frame rate) encoded with Blender's own FFmpeg from
the generated frames. The encode runs in a scene of its own, made and removed here, so the user's
scene, its render settings and its Sequencer are never touched."""
import os

import bpy

from .core.errors import InputError
from .vse import strips_of

NAME = "flythrough.mp4"


def encode(scene, out: str, frames: list[int], width: int, height: int) -> str:
    """frames/NNNNNN.png of `frames` (scene frame numbers, in order) -> <out>/flythrough.mp4 at `scene`'s frame
    rate; returns its path. Written under a temporary name and renamed, so a failed encode leaves no
    half-written video."""
    from .backend.protocol import frame_filename
    folder = os.path.join(out, "frames")
    files = [frame_filename(n) for n in frames]
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise InputError(f"Cannot write {NAME}: {len(missing)} frame(s) are missing in {folder}, first {missing[0]}")
    final = os.path.join(out, NAME)
    part = os.path.join(out, "flythrough.part.mp4")
    if os.path.exists(part):
        os.remove(part)
    tmp = bpy.data.scenes.new("Mirage Video")
    try:
        _settings(tmp, scene, width, height, len(files), part)
        tmp.sequence_editor_create()
        coll, _ = strips_of(tmp)
        strip = coll.new_image(name="Mirage", filepath=os.path.join(folder, files[0]), channel=1, frame_start=1)
        for f in files[1:]:
            strip.elements.append(f)
        if hasattr(strip, "colorspace_settings"):
            strip.colorspace_settings.name = "sRGB"
        try:
            bpy.ops.render.render(animation=True, scene=tmp.name)
        except RuntimeError as e:
            raise InputError(f"Cannot write {NAME}: {str(e).strip().splitlines()[-1]}") from None
    finally:
        bpy.data.scenes.remove(tmp)
    if not os.path.isfile(part) or os.path.getsize(part) == 0:
        raise InputError(f"Cannot write {NAME}: Blender's FFmpeg wrote nothing to {part}")
    os.replace(part, final)
    return final


def _settings(tmp, scene, width, height, count, path):
    """H.264 in MP4 at the user's frame rate, the frames' pixels as they are (Standard view, no look)."""
    r = tmp.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.pixel_aspect_x, r.pixel_aspect_y = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
    r.fps, r.fps_base = scene.render.fps, scene.render.fps_base
    tmp.frame_start, tmp.frame_end = 1, count
    r.use_sequencer = True
    r.use_compositing = False
    fmt = r.image_settings
    if hasattr(fmt, "media_type"):  # Blender 5.0: image or video is chosen first
        fmt.media_type = "VIDEO"
    fmt.file_format = "FFMPEG"
    r.ffmpeg.format = "MPEG4"
    r.ffmpeg.codec = "H264"
    r.ffmpeg.constant_rate_factor = "HIGH"
    r.ffmpeg.audio_codec = "NONE"
    r.filepath = path
    r.use_file_extension = False  # the name is the name: no frame range appended
    tmp.view_settings.view_transform = "Standard"
    tmp.view_settings.look = "None"
    tmp.view_settings.exposure = 0.0
    tmp.view_settings.gamma = 1.0
    tmp.display_settings.display_device = "sRGB"
    if hasattr(tmp, "sequencer_colorspace_settings"):
        tmp.sequencer_colorspace_settings.name = "sRGB"
