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

from . import inputs, models, reference, shots
from .backend import files, protocol
from .core.errors import InputError, sentence
from .core.frame import FrameExport
from .gather import camera, frames as frame_export, geometry, materials, motion

@dataclass(frozen=True)
class Step:
    """One step done: what the status line says now, the share of the whole run done (or None), and whether
    the job folder can be run from now on (`ready`: job.json is there, the frames follow as they are exported)."""
    status: str
    progress: float = None
    ready: bool = False


class JobBuilder:
    """One job folder from a scene and its Mirage settings: one shot of the scene's set (shots.SetPlan; by
    default the scene's first shot, the whole frame range without camera markers). After ``steps()`` has run
    out: ``out`` (the folder), ``job_path`` (its job.json) and ``tracked`` (the moving objects' names, ids 1,
    2, ...). Notices for the user go into ``notices`` as they arise."""

    def __init__(self, scene, settings, notices: list[str], shot: "shots.Shot" = None, plan: "shots.SetPlan" = None):
        self.scene = scene
        self.settings = settings
        self.notices = notices
        self.shot = shot
        self.plan = plan
        self.out = None
        self.job_path = None
        self.tracked = []
        self._part_numbers = None
        self.deforming = []
        self._stream = None
        self._checker = None

    def steps(self) -> Iterator[Step]:
        """Check the settings and files (InputError or ExportError, one line), then one Step per material
        bake and per reference painted from a camera of its own, one that says the job can start (a streamed
        job.json: its frames follow one by one, each appended to inputs/frames.jsonl once its files are
        written), and one per frame; the whole job.json is written after the last."""
        scene, s = self.scene, self.settings
        if self.plan is None:
            self.plan = shots.plan(scene, s)
            self.notices.extend(self.plan.notices)
        if self.shot is None:
            self.shot = self.plan.shots[0]
        shot = self.shot
        camera.intrinsics(scene, shot.camera)  # no camera, or not a perspective one: refuse before any work
        width, height, frames = self._frame_range()
        images = self._reference_images(width, height)
        segment_length = s.segment_length
        if segment_length > len(frames):
            if not shot.name:
                raise InputError(f"Segment Length ({s.segment_length}) is longer than the frame range "
                                 f"({len(frames)} frames)")
            segment_length = len(frames)  # a short shot is one segment
        refs = self._reference_depths(images, width, height)
        out = shot.folder
        if self.plan.fallback:
            self.notices.append(f"The file is not saved yet: output goes to {self.plan.root}")
        inputs.make_output_folder(out)
        self.out = out
        refs = yield from self._write_reference(refs, width, height)
        start = shots.start_memory(self.plan, shot)
        job = self._job(refs, width, height, segment_length)
        memory = shots.copy_start_memory(start, out)
        if memory is not None:
            job["start"] = {"memory": memory, "shot": self.plan.shots[shot.index - 1].name}
        objects = self._moving_objects(self.plan.frames) if s.depth_source == "SCENE" else []
        self.tracked = [ob.name for ob in objects]
        if objects:
            job["objects"] = [{"id": i, "name": ob.name} for i, ob in enumerate(objects, 1)]
            for folder in ("ids", "light", "albedo"):
                os.makedirs(os.path.join(out, "inputs", folder), exist_ok=True)
        textures = yield from self._bake(objects)
        depth_size = (width, height) if s.depth_source == "SCENE" else None
        # the deforming objects' evaluated meshes carry their rest positions while the export runs
        with geometry.rest_positions(self.deforming):
            yield from self._export_references(job, refs, depth_size, objects, textures)
            if s.depth_source == "MONOCULAR":
                self._monocular(job, refs, width, height)
            self._start(job, len(frames))
            yield Step("Starting the backend", ready=True)
            yield from self._export_frames(job, frames, depth_size, objects, textures)
        self._write(job)

    def _frame_range(self):
        scene = self.scene
        if scene.frame_end < scene.frame_start:
            raise InputError("The frame range is empty (End is before Start)")
        width, height = camera.render_size(scene)
        frames = list(self.shot.frames)
        try:  # before any export: a frame too large for memory must not be rasterised first
            protocol.check_resolution(width, height, len(frames))
        except protocol.JobError as e:
            raise InputError(sentence(str(e))) from None
        return width, height, frames

    def _reference_images(self, width, height):
        """Every reference of the set with its image checked: (shots.Reference or None, image path; None for an
        Image or a render, written once the output folder exists). The first comes from the Reference setting;
        a set needs at least one of its own (the objects' references show only their objects)."""
        refs = list(self.plan.references)
        if not any(ref.object is None for ref in refs):
            refs.insert(0, None)
        self._check_objects({ref.object for ref in refs if ref is not None and ref.object is not None})
        out = []
        for ref in refs:
            if ref is None or ref.primary:
                out.append((ref, reference.check(self.scene, self.settings, width, height, self.plan.frames)))
                continue
            camera.intrinsics(self.scene, ref.camera)
            out.append((ref, inputs.image_file(ref.image, width, height, ref.label)))
        return out

    def _check_objects(self, names):
        """Objects with references of their own: those paint the object's pixels alone, which only the scene's
        geometry tells apart, so they need the Scene depth and an object that renders."""
        if not names:
            return
        if self.settings.depth_source != "SCENE":
            raise InputError(f"'{min(names)}' has references of its own, which need Depth set to Scene (they paint "
                             f"only its pixels, which come from the scene's geometry)")
        if self._part_numbers is None:
            self._part_numbers = geometry.part_numbers(self.scene)
        for name in sorted(names):
            ob = self.scene.objects.get(name)
            if ob is not None and ob.type not in geometry.SURFACE_TYPES:
                raise InputError(f"'{name}' has references of its own but no surfaces to show them (it is "
                                 f"{'an' if ob.type[0] in 'AEIOU' else 'a'} {ob.type.lower()} object): remove "
                                 f"its references")
            if name not in self._part_numbers:
                raise InputError(f"'{name}' has references of its own but does not render (it is hidden in renders "
                                 f"or its collection is): show it in renders, or remove its references")

    def _reference_depths(self, images, width, height):
        """(reference, image path, its depth map [H, W] or None: depth source Depth Map only), checked."""
        s, out = self.settings, []
        for ref, image in images:
            if ref is None or ref.primary:
                depth = inputs.depth_map(s, width, height)
            elif s.depth_source == "IMAGE":
                depth = inputs.depth_file(ref.depth_image, width, height, f"{ref.label}'s depth map")
            else:
                depth = None
            out.append((ref, image, depth))
        return out

    def _write_reference(self, refs, width, height):
        """The first reference from an Image or a rendered frame, written into the set's folder (a render is its
        own step); once for every shot of this Generate."""
        out = []
        for ref, image, depth in refs:
            if image is None:
                if "reference" not in self.plan.written:
                    if (status := reference.status(self.scene, self.settings)) is not None:
                        yield Step(status)
                    self.plan.written["reference"] = reference.write(self.scene, self.settings, self.plan.root,
                                                                     width, height, self.notices)
                image = self.plan.written["reference"]
            out.append((ref, image, depth))
        return out

    def _job(self, refs, width, height, segment_length):
        """The job without its frames and reference cameras; copies the first reference (and saves its depth
        map) into inputs/ where it shows a frame of this shot through its camera."""
        s, out = self.settings, self.out
        job = {"version": protocol.JOB_VERSION, "model": s.model, "device": s.device, "seed": s.seed,
               "segment_length": segment_length, "width": width, "height": height,
               "depth_source": s.depth_source, "plane_distance": s.plane_distance, "frames": []}
        if self._classic(refs[0][0]):
            ref, image, depth_map = refs[0]
            ref_name = "inputs/reference" + os.path.splitext(image)[1].lower()
            shutil.copyfile(image, os.path.join(out, ref_name))
            job["reference"] = {"image": ref_name, "frame": self.shot.frames[0] if ref is None else ref.frame}
            if depth_map is not None:
                np.save(os.path.join(out, "inputs", "reference_depth.npy"), depth_map)
                job["reference"]["depth"] = "inputs/reference_depth.npy"
        if models.needs(s.model)["prompt"]:
            job.update(prompt=s.prompt, negative_prompt=s.negative_prompt)
        return job

    def _classic(self, ref) -> bool:
        """Whether a reference shows a frame of this shot through its camera (the first reference, in the first
        shot, or in the shot of its rendered frame): the job names it by that frame instead of giving it a camera
        of its own."""
        return ref is None or (ref.primary and ref.frame in self.shot.frames)

    def _monocular(self, job, refs, width, height):
        """Depth from the image: the backend estimates each reference's depth; the scene's geometry through the
        reference's camera, where there is some, sets its scale, else the distance the user gave for the image's
        centre."""
        job["monocular_distance"] = self.settings.monocular_distance
        if "reference" in job:
            rel = self._scene_depth(job["reference"]["frame"], self.shot.camera, width, height,
                                    "inputs/reference_scene_depth.npy")
            if rel is not None:
                job["reference"]["scene_depth"] = rel
        views = [r for r in refs if not self._classic(r[0])]
        for (ref, _, _), entry in zip(views, job.get("references", [])):
            rel = self._scene_depth(ref.frame, ref.camera, width, height,
                                    os.path.splitext(entry["image"])[0] + "_scene_depth.npy")
            if rel is not None:
                entry["scene_depth"] = rel

    def _scene_depth(self, frame, cam, width, height, rel):
        """The scene's depth through `cam` on `frame`, saved as `rel` when it shows any geometry (else None)."""
        fr, = frame_export.iter_frames(self.scene, [frame], (width, height), cameras=[cam])
        if fr.maps.depth is None or not np.isfinite(fr.maps.depth).any():
            return None
        np.save(os.path.join(self.out, rel), fr.maps.depth.astype(np.float32))
        return rel

    def _export_references(self, job, refs, depth_size, objects, textures):
        """The references painted from cameras of their own (or from a frame of another shot): each one's camera
        and maps exported like a frame's, its image (and depth map) copied, one step each."""
        views = [(i, r) for i, r in enumerate(refs) if not self._classic(r[0])]
        if not views:
            return
        os.makedirs(os.path.join(self.out, "inputs", "references"), exist_ok=True)
        exported = frame_export.iter_frames(self.scene, [r[0].frame for _, r in views], depth_size, objects,
                                            textures=textures or None, cameras=[r[0].camera for _, r in views],
                                            parts=self._parts(depth_size), shading=self._shading(),
                                            deforming=self._deforming())
        entries = []
        for (i, (ref, image, depth_map)), fr in zip(views, exported):
            name = f"{i + 1:02d}"
            entry = {"image": f"inputs/references/{name}{os.path.splitext(image)[1].lower()}",
                     **self._write_frame(fr, name)}
            shutil.copyfile(image, os.path.join(self.out, entry["image"]))
            if depth_map is not None:
                entry["depth"] = f"inputs/references/{name}_user_depth.npy"
                np.save(os.path.join(self.out, entry["depth"]), depth_map)
            if ref.object is not None:
                # the backend stores the pixels of the object map that carry the object's number in `parts`
                entry["object"] = ref.object
                job["parts"] = dict(self._parts(depth_size))
                if fr.maps.parts is not None and not (fr.maps.parts == job["parts"][ref.object]).any():
                    self.notices.append(f"{ref.label} does not show '{ref.object}' (camera '{ref.camera.name}', "
                                        f"frame {ref.frame}): it adds nothing")
            entries.append(entry)
            yield Step(f"Exporting {ref.label[:1].lower() + ref.label[1:] if ref.primary else ref.label}: "
                       f"its camera and maps")
        job["references"] = entries

    def _moving_objects(self, frames):
        """Moving objects get their own memory; they need the scene's geometry for their masks. An object that
        changes shape gets one too, addressed before its deformation (self.deforming) so its memory follows its
        surface; one whose topology changes has no such address, which the user should know."""
        objects = motion.moving_objects(self.scene, frames)
        deforming, remeshed = motion.shape_changes(self.scene, frames)
        self.deforming = [ob for ob in deforming if ob.type == "MESH"]
        for ob in remeshed:
            self.notices.append(f"'{ob.name}' changes its topology from frame to frame (particles, fluid or "
                                f"remeshing): no surface address can follow it, so Mirage follows it as a rigid "
                                f"object; the world behind it stays clean, but its own look may smear")
        return sorted({ob.name: ob for ob in objects + deforming + remeshed}.values(), key=lambda ob: ob.name)

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
        cameras = [self.shot.camera] * len(frames) if self.shot.name else None
        exported = frame_export.iter_frames(self.scene, frames, depth_size, objects, textures=textures or None,
                                            cameras=cameras, parts=self._parts(depth_size),
                                            shading=self._shading(), deforming=self._deforming())
        for i, fr in enumerate(exported):
            entry = self._write_frame(fr)
            self._check(lambda: self._checked(entry, len(job["frames"])))
            with open(self._stream, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")  # one write: the backend takes whole lines only
            job["frames"].append(entry)
            yield Step(f"Exporting cameras and {what}: frame {fr.frame}", 0.1 * (i + 1) / len(frames))

    def _parts(self, depth_size):
        """Object name -> number, for the map of which object each pixel sees (it guides what a model invents
        where nothing was seen); None without the scene's geometry. The same numbers for every frame and
        reference of the set, so that shots agree."""
        if depth_size is None:
            return None
        if self._part_numbers is None:
            self._part_numbers = geometry.part_numbers(self.scene)
        return self._part_numbers

    def _deforming(self) -> frozenset:
        """The names of the objects addressed before their deformation."""
        return frozenset(ob.name for ob in self.deforming)

    def _shading(self) -> bool:
        """Whether the model uses the still world's light (its model.json's needs): costly to export at size."""
        return bool(models.needs(self.settings.model)["shading"])

    def _checked(self, entry, i):
        item = self._checker.frame(entry, i)
        self._checker.same_maps([item])
        self._checker.files(item)

    def _write_frame(self, fr: FrameExport, reference: str = None) -> dict:
        """The frame's maps into inputs/ (a reference's camera: into inputs/references/, named `reference`),
        and its entry in job.json."""
        entry = {"frame": fr.frame, "K": fr.K.tolist(), "cam_to_world": fr.cam_to_world.tolist()}
        if fr.objects is not None:
            entry["objects"] = {str(oid): m.tolist() for oid, m in fr.objects.items()}
        for c, data in fr.maps.items():
            rel = (f"inputs/{c.name}/{fr.frame:06d}.npy" if reference is None
                   else f"inputs/references/{reference}_{c.name}.npy")
            os.makedirs(os.path.dirname(os.path.join(self.out, rel)), exist_ok=True)
            np.save(os.path.join(self.out, rel), data.astype(c.stored))
            entry[c.name] = rel
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
