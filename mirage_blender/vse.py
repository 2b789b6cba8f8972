"""Putting finished segments into the Video Sequence Editor."""
import os

import bpy

TAG = "mirage_output"


def strips_of(scene) -> tuple[object, list]:
    """All strips of the scene: `strips` from Blender 4.4, `sequences` before (removed in 5.0)."""
    ed = scene.sequence_editor
    if ed is None:
        return None, []
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    all_ = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    return coll, list(all_)


def span(strip) -> tuple[int, int]:
    """(first frame shown, frame after the last) of a strip: `left_handle`/`right_handle` from Blender 5.1,
    where `frame_final_start`/`frame_final_end` are deprecated (removal planned for 6.0); those before."""
    if hasattr(strip, "left_handle"):
        return strip.left_handle, strip.right_handle
    return strip.frame_final_start, strip.frame_final_end


def free_channel(scene, start: int, end: int, replacing=()) -> int:
    """Lowest channel with nothing between start and end, so strips never cover the user's; strips made from the
    output folders in `replacing` do not count (they are about to be replaced)."""
    _, strips = strips_of(scene)
    used = {s.channel for s in strips if span(s)[0] <= end and span(s)[1] > start and s.get(TAG) not in replacing}
    channel = 1
    while channel in used:
        channel += 1
    return channel


def remove_previous(scene, output_dir: str) -> None:
    """Drop strips an earlier run made from this same output folder: its files are being rewritten."""
    coll, strips = strips_of(scene)
    for s in strips:
        if s.get(TAG) == output_dir:
            coll.remove(s)


def add_segment(scene, name: str, output_dir: str, files: list[str], first_frame: int, channel: int):
    """One image strip per segment, starting on the segment's first scene frame."""
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
    coll, _ = strips_of(scene)
    paths = [os.path.join(output_dir, f) for f in files]
    strip = coll.new_image(name=name, filepath=paths[0], channel=channel, frame_start=first_frame)
    for p in paths[1:]:
        strip.elements.append(os.path.basename(p))
    strip[TAG] = output_dir
    if bpy.data.filepath:
        # a saved project keeps working when its folder moves: "//" paths like the rest of Blender
        try:
            rel = bpy.path.relpath(strip.directory)
            strip.directory = rel if rel.endswith(("/", "\\")) else rel + os.sep
        except ValueError:  # another drive on Windows: no relative path exists
            pass
    return strip
