"""Settings + scene -> a job folder: the reference, the per-frame inputs and job.json
(docs/job-format.md), checked with the backend's own rules before the backend starts.

Building is a generator of steps (one material bake or one frame each) so the modal operator keeps the
UI responsive. The export is streamed: job.json is written before the first frame with the number of frames to
come, the backend starts then, and each frame's entry is appended to inputs/frames.jsonl once its files are on
disk, so generation overlaps the export; the whole job.json is written after the last frame.
"""
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import inputs, models
from .backend import files, protocol
from .core.errors import InputError, sentence
from .core.frame import FrameExport
from .gather import camera, frames as frame_export, geometry, materials, motion

# the per-frame maps written into inputs/<name>/<frame>.npy, with the type each is stored as
MAPS = (("depth", np.float32), ("ids", np.uint16), ("light", np.float16), ("albedo", np.uint8),
        ("parts", np.uint16))


@dataclass(frozen=True)
class Step:
    """One step done: what the status line says now, the share of the whole run done (or None), and whether
    the job folder can be run from now on (`ready`: job.json is there, the frames follow as they are exported)."""
    status: str
    progress: float = None
    ready: bool = False


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
        self._stream = None
        self._checker = None

    def steps(self) -> Iterator[Step]:
        """Check the settings and files (InputError or ExportError, one line), then one Step per material
        bake, one that says the job can start (a streamed job.json: its frames follow one by one, each appended
        to inputs/frames.jsonl once its files are written), and one per frame; the whole job.json is written
        after the last."""
        scene, s = self.scene, self.settings
        camera.intrinsics(scene, scene.camera)  # no camera, or not perspective: refuse before any work
        width, height, frames = self._frame_range()
        ref = inputs.reference_image(s, width, height)
        if s.segment_length > len(frames):
            raise InputError(f"Segment Length ({s.segment_length}) is longer than the frame range ({len(frames)} frames)")
        depth_map = inputs.depth_map(s, width, height)
        out, fallback = inputs.output_folder(scene, s)
        if fallback:
            self.notices.append(f"The file is not saved yet: output goes to {out}")
        inputs.make_output_folder(out)
        self.out = out
        job = self._job(ref, depth_map, width, height)
        objects = self._moving_objects(frames) if s.depth_source == "SCENE" else []
        self.tracked = [ob.name for ob in objects]
        if objects:
            job["objects"] = [{"id": i, "name": ob.name} for i, ob in enumerate(objects, 1)]
            for folder in ("ids", "light", "albedo"):
                os.makedirs(os.path.join(out, "inputs", folder), exist_ok=True)
        textures = yield from self._bake(objects)
        depth_size = (width, height) if s.depth_source == "SCENE" else None
        if depth_size is not None:  # which object each pixel sees guides what is invented where nothing was seen
            os.makedirs(os.path.join(out, "inputs", "parts"), exist_ok=True)
        self._start(job, len(frames))
        yield Step("Starting the backend", ready=True)
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
               "reference": {"image": ref_name, "frame": self.scene.frame_start},
               "depth_source": s.depth_source, "plane_distance": s.plane_distance, "frames": []}
        if models.needs(s.model)["prompt"]:
            job.update(prompt=s.prompt, negative_prompt=s.negative_prompt)
        if depth_map is not None:
            np.save(os.path.join(out, "inputs", "reference_depth.npy"), depth_map)
            job["reference"]["depth"] = "inputs/reference_depth.npy"
        return job

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

    def _start(self, job, count):
        """job.json as a streamed job (no frame listed yet, `frame_count` to come), checked like the backend
        checks it; a stream left by an earlier run goes first, so no backend ever reads its frames."""
        self.job_path = os.path.join(self.out, "job.json")
        self._stream = os.path.join(self.out, protocol.STREAM_FILE)
        if os.path.lexists(self._stream):
            os.remove(self._stream)
        streamed = dict(job, frame_count=count)
        self._check(lambda: protocol.validate_job(streamed, self.out))
        self._checker = protocol.FrameChecker(streamed, self.out)
        files.write_json(streamed, self.job_path)

    def _export_frames(self, job, frames, depth_size, objects, textures):
        """One frame per step: its files written at once, then its entry checked and appended to the stream,
        where the running backend takes it."""
        what = f"depth and the light of {len(objects)} moving object(s)" if objects else "depth"
        exported = frame_export.iter_frames(self.scene, frames, depth_size, objects, textures=textures or None,
                                            parts=geometry.part_numbers(self.scene) if depth_size else None)
        for i, fr in enumerate(exported):
            entry = self._write_frame(fr)
            self._check(lambda: self._checked(entry, len(job["frames"])))
            with open(self._stream, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")  # one write: the backend takes whole lines only
            job["frames"].append(entry)
            yield Step(f"Exporting cameras and {what}: frame {fr.frame}", 0.1 * (i + 1) / len(frames))

    def _checked(self, entry, i):
        item = self._checker.frame(entry, i)
        self._checker.same_maps([item])
        self._checker.files(item)

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
        """The whole job.json, every frame listed: a folder that runs on its own (a farm, a later resume)."""
        self._check(lambda: protocol.validate_job(job, self.out))
        files.write_json(job, self.job_path)

    @staticmethod
    def _check(check):
        # the add-on checks the job with the same rules as the backend, so errors show in one line here
        try:
            check()
        except protocol.JobError as e:
            raise InputError(sentence(str(e))) from None
