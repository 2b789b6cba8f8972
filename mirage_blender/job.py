"""Settings + scene -> a job folder: the reference, the per-frame inputs and job.json
(docs/job-format.md), checked with the backend's own rules before the backend starts.

Building is a generator of steps (one material bake or one frame each) so the modal operator keeps the
UI responsive. Each frame's files are written as soon as it is exported and job.json last; a streamed
export would start the backend once the first segment's frames are on disk (see ``_export_frames``).
"""
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import inputs, models, reference
from .backend import files, protocol
from .core.errors import InputError, sentence
from .core.frame import FrameExport
from .gather import camera, frames as frame_export, materials, motion

# the per-frame maps written into inputs/<name>/<frame>.npy, with the type each is stored as
MAPS = (("depth", np.float32), ("ids", np.uint16), ("light", np.float16), ("albedo", np.uint8))


@dataclass(frozen=True)
class Step:
    """One step done: what the status line says now, and the share of the whole run done (or None)."""
    status: str
    progress: float = None


class JobBuilder:
    """One job folder from a scene and its Mirage settings. After ``steps()`` has run out: ``out`` (the
    folder), ``job_path`` (its job.json) and ``tracked`` (the moving objects' names, ids 1, 2, ...).
    Notices for the user go into ``notices`` as they arise."""

    def __init__(self, scene, settings, notices: list[str]):
        self.scene = scene
        self.settings = settings
        self.notices = notices
        self.out = None
        self.job_path = None
        self.tracked = []

    def steps(self) -> Iterator[Step]:
        """Check the settings and files (InputError or ExportError, one line), then one Step per material
        bake and per frame; job.json is written after the last."""
        scene, s = self.scene, self.settings
        camera.intrinsics(scene, scene.camera)  # no camera, or not perspective: refuse before any work
        width, height, frames = self._frame_range()
        ref = reference.check(scene, s, width, height, frames)  # None: an Image or a render, written below
        if s.segment_length > len(frames):
            raise InputError(f"Segment Length ({s.segment_length}) is longer than the frame range ({len(frames)} frames)")
        depth_map = inputs.depth_map(s, width, height)
        out, fallback = inputs.output_folder(scene, s)
        if fallback:
            self.notices.append(f"The file is not saved yet: output goes to {out}")
        inputs.make_output_folder(out)
        self.out = out
        if ref is None:
            if (status := reference.status(scene, s)) is not None:
                yield Step(status)
            ref = reference.write(scene, s, out, width, height, self.notices)
        job = self._job(ref, depth_map, width, height)
        objects = self._moving_objects(frames) if s.depth_source == "SCENE" else []
        self.tracked = [ob.name for ob in objects]
        if objects:
            job["objects"] = [{"id": i, "name": ob.name} for i, ob in enumerate(objects, 1)]
            for folder in ("ids", "light", "albedo"):
                os.makedirs(os.path.join(out, "inputs", folder), exist_ok=True)
        textures = yield from self._bake(objects)
        depth_size = (width, height) if s.depth_source == "SCENE" else None
        yield from self._export_frames(job, frames, depth_size, objects, textures)
        self._write(job)

    def _frame_range(self):
        scene = self.scene
        if scene.frame_end < scene.frame_start:
            raise InputError("The frame range is empty (End is before Start)")
        width, height = camera.render_size(scene)
        frames = list(range(scene.frame_start, scene.frame_end + 1))
        try:  # before any export: a frame too large for memory must not be rasterised first
            protocol.check_resolution(width, height, len(frames))
        except protocol.JobError as e:
            raise InputError(sentence(str(e))) from None
        return width, height, frames

    def _job(self, ref, depth_map, width, height):
        """The job without its frames; copies the reference (and saves its depth map) into inputs/."""
        s, out = self.settings, self.out
        ref_name = "inputs/reference" + os.path.splitext(ref)[1].lower()
        shutil.copyfile(ref, os.path.join(out, ref_name))
        job = {"version": protocol.JOB_VERSION, "model": s.model, "device": s.device, "seed": s.seed,
               "segment_length": s.segment_length, "width": width, "height": height,
               "reference": {"image": ref_name, "frame": reference.frame(self.scene, s)},
               "depth_source": s.depth_source, "plane_distance": s.plane_distance, "frames": []}
        if models.needs(s.model)["prompt"]:
            job.update(prompt=s.prompt, negative_prompt=s.negative_prompt)
        if depth_map is not None:
            np.save(os.path.join(out, "inputs", "reference_depth.npy"), depth_map)
            job["reference"]["depth"] = "inputs/reference_depth.npy"
        if s.depth_source == "MONOCULAR":
            self._monocular(job, width, height)
        return job

    def _monocular(self, job, width, height):
        """Depth from the image: the backend estimates it; the scene's geometry on the reference frame, where
        there is some, sets its scale, else the distance the user gave for the image's centre."""
        job["monocular_distance"] = self.settings.monocular_distance
        ref, = frame_export.iter_frames(self.scene, [job["reference"]["frame"]], (width, height))
        if ref.depth is not None and np.isfinite(ref.depth).any():
            np.save(os.path.join(self.out, "inputs", "reference_scene_depth.npy"), ref.depth.astype(np.float32))
            job["reference"]["scene_depth"] = "inputs/reference_scene_depth.npy"

    def _moving_objects(self, frames):
        """Moving objects get their own memory; they need the scene's geometry for their masks."""
        objects = motion.moving_objects(self.scene, frames)
        # an object that changes shape still gets a memory of its own, so the world behind it stays clean;
        # what it keeps is its shape when first seen, which the user should know
        deforming = motion.deforming_objects(self.scene, frames)
        for ob in deforming:
            self.notices.append(f"'{ob.name}' changes shape during the shot (armature, shape keys or modifiers): "
                                f"Mirage moves it as a rigid object, so it keeps the look it had when first seen")
        return sorted({ob.name: ob for ob in objects + deforming}.values(), key=lambda ob: ob.name)

    def _bake(self, objects):
        """A moving object's faces no image shows take their pattern from its material: baked once, one
        object per step. Returns {object name: texture}."""
        textures = {}
        for ob in materials.worth_baking(objects):
            tex = materials.bake(self.scene, ob)
            if tex is not None:
                textures[ob.name] = tex
            elif (why := materials.why_not(ob)) is not None:
                self.notices.append(f"'{ob.name}' {why}: faces of it no image shows are filled "
                                    f"from its own pixels, not from its material")
            yield Step(f"Baking the material of {ob.name}")
        return textures

    def _export_frames(self, job, frames, depth_size, objects, textures):
        """One frame per step, its files written at once. The seam for a streamed export: job.json could
        be written after the first segment's frames and the backend started then."""
        what = f"depth and the light of {len(objects)} moving object(s)" if objects else "depth"
        exported = frame_export.iter_frames(self.scene, frames, depth_size, objects, textures=textures or None)
        for i, fr in enumerate(exported):
            job["frames"].append(self._write_frame(fr))
            yield Step(f"Exporting cameras and {what}: frame {fr.frame}", 0.1 * (i + 1) / len(frames))

    def _write_frame(self, fr: FrameExport) -> dict:
        """The frame's maps into inputs/, and its entry in job.json."""
        entry = {"frame": fr.frame, "K": fr.K.tolist(), "cam_to_world": fr.cam_to_world.tolist()}
        if fr.objects is not None:
            entry["objects"] = {str(oid): m.tolist() for oid, m in fr.objects.items()}
        for key, dtype in MAPS:
            data = getattr(fr, key)
            if data is not None:
                rel = f"inputs/{key}/{fr.frame:06d}.npy"
                np.save(os.path.join(self.out, rel), data.astype(dtype))
                entry[key] = rel
        return entry

    def _write(self, job):
        # the add-on checks the job with the same rules as the backend, so errors show before it starts
        self.job_path = os.path.join(self.out, "job.json")
        try:
            protocol.validate_job(job, self.out)
        except protocol.JobError as e:
            raise InputError(sentence(str(e))) from None
        files.write_json(job, self.job_path)
