"""The segment loop: it only orchestrates. Inputs come from `inputs`, light and material colours from `relight`,
one frame is `step.frame_step` (frame models) or one segment is the model's `generate` (segment models), files
and resume state are `state`'s.

Everything here is deterministic for a given job and seed, so a run that was stopped can resume from its last
saved segment and end with the same frames as a run that never stopped.
"""
import dataclasses
import os
import time
from typing import Callable, Optional, Sequence

import torch

from . import models, protocol
from .inputs import Inputs, far_distance, pad_to_cells
from .memory import Memory, SceneMemory
from .models.base import Exemplar, FrameModel, SegmentFrame, SegmentModel
from .protocol import JobError
from .relight import Lighting
from .state import Fingerprint, RunFolder, peak_rss, start_digest
from .step import View, frame_step, make_view, padded, seed


class Cancelled(Exception):
    pass


FOLLOW_POLL = 0.05  # seconds between looks for a streamed job's next frames


def resolve_device(requested: str) -> tuple:
    """(torch device name, notice or None) for the job's Device setting."""
    if requested == "CPU":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", None
    if requested == "CUDA":
        raise JobError("Device is CUDA, but this backend's torch sees no CUDA device: set Device to Auto or CPU, "
                       "or set Backend Python to an interpreter whose torch has CUDA")
    return "cpu", "no CUDA device found, running on the CPU"


class Run:
    """One job through one model: `Run(job, model, out_dir, emit, ...)` with its parts given, or
    `Run.load(job, out_dir, emit, ...)` to pick the device and load the job's model by name.

    job: protocol.Job; model: a models.base.FrameModel or SegmentModel; emit(type, **fields): protocol messages;
    cancelled(): True to stop between frames; memory: the Memory class (new(channels, cell, device=...) and
    .load(path, device=..., object_ids=...)), SceneMemory in the product."""

    def __init__(self, job: protocol.Job, model: "FrameModel | SegmentModel", out_dir: str, emit: Callable,
                 cancelled: Callable[[], bool] = lambda: False, memory: type = SceneMemory, device: str = "cpu",
                 notices: Sequence[str] = (), device_note: Optional[str] = None,
                 stream: Optional[protocol.JobStream] = None, follow: bool = False):
        self.job, self.model, self.emit, self.cancelled = job, model, emit, cancelled
        self.stream, self.follow = stream, follow
        self.memory_cls, self.device = memory, device
        self.inputs = Inputs(job, device=device, emit=emit)
        self.cell = model.cell
        self.lighting = Lighting(self.inputs, self.cell)
        self.W, self.H = job.width, job.height
        self.h, self.w = -(-self.H // self.cell), -(-self.W // self.cell)
        self.order = job.frame_numbers()
        self.warnings = list(notices)
        seg_len = job.segment_length
        self.segmented = isinstance(model, SegmentModel)  # the one place the loop asks which interface it drives
        if self.segmented:  # its own segment rule and resource check, before any work
            seg_len, notes = model.plan(self.W, self.H, seg_len, job.total)
            self.warnings += notes
        self.device_note = device_note
        # segments by position: a streamed job's frame numbers arrive with its frames (frames_of)
        self.segments = protocol.segments(list(range(job.total)), seg_len)
        self.folder = RunFolder(out_dir)
        self.far = None
        self.resumed = 0
        self._exemplars = None

    @classmethod
    def load(cls, job: protocol.Job, out_dir: str, emit: Callable, cancelled: Callable[[], bool] = lambda: False,
             warnings: Sequence[str] = (), memory: type = SceneMemory, stream: Optional[protocol.JobStream] = None,
             follow: bool = False) -> "Run":
        device, note = resolve_device(job.device)
        model = models.load(job.model, device, emit=emit)
        return cls(job, model, out_dir, emit, cancelled, memory=memory, device=device, notices=warnings,
                   device_note=note, stream=stream, follow=follow)

    # -- a streamed job's frames ------------------------------------------------------------------
    def arrive(self, count: int) -> None:
        """Until the job has its first `count` frames: a streamed job's frames come as the add-on exports them
        (with `follow`; without, what is not there yet never will be)."""
        while len(self.order) < count:
            more = self.stream.more() if self.stream is not None else []
            if more:
                self.job = dataclasses.replace(self.job, frames=self.job.frames + tuple(more))
                self.inputs.add(more)
                self.order += [f.frame for f in more]
            elif self.follow and self.stream is not None:
                if self.cancelled():
                    raise Cancelled()
                time.sleep(FOLLOW_POLL)
            else:
                raise JobError(f"the job lists {len(self.order)} of its {self.job.total} frames (its export did not "
                               f"finish): generate again from Blender")

    def frames_of(self, i: int) -> list:
        """The frame numbers of segment i, once they have arrived."""
        self.arrive(self.segments[i][-1] + 1)
        return [self.order[p] for p in self.segments[i]]

    def reference_arrived(self) -> None:
        while self.job.reference.view is None and self.job.reference.frame not in self.inputs.frames:
            self.arrive(len(self.order) + 1)

    # -- what one frame needs -------------------------------------------------------------------
    def generator(self, n: int) -> torch.Generator:
        """Noise for the work that starts at frame n, from (seed, n) alone: a resumed run draws exactly what
        a run that never stopped would have drawn there."""
        return torch.Generator().manual_seed((int(self.job.seed or 0) * 1_000_003 + n) % 2 ** 63)

    def view(self, n, depth: Optional[torch.Tensor] = None, prefill: bool = False) -> View:
        """The View of camera n (a frame number, or a reference's own camera, a protocol.Frame): the scene's depth
        (or `depth`, for the seed) on the padded grid, with its object ids and poses; with `prefill` also the
        material colours of its moving objects."""
        K, c2w = self.inputs.camera(n)
        maps = self.inputs.maps(n)
        if depth is not None:
            maps = dataclasses.replace(maps, depth=depth)
        v = make_view(K, c2w, (self.H, self.W), self.cell, self.far, maps, self.inputs.poses(n),
                      self.inputs.plane_distance())
        if prefill and maps.depth is not None:
            v.prefill = self.lighting.prefill(n, v.maps)
        if prefill:
            v.exemplars = self.exemplars()
        return v

    def exemplars(self):
        """The views a frame model may copy unseen content from: every reference as the memory stores it (light
        taken out), with its depth, camera, object ids, poses and which object each pixel sees. Built once."""
        if self._exemplars is None:
            out = []
            for ref in self.job.references:
                cam = self.inputs.view(ref)
                image = self.lighting.relit(pad_to_cells(self.inputs.reference_image(ref), self.cell), cam, inverse=True)
                maps = dataclasses.replace(self.inputs.maps(cam), depth=self.inputs.reference_depth(ref))
                K, c2w = self.inputs.camera(cam)
                maps = padded(maps, self.cell)
                # a reference of one object lends that object's pixels alone
                usable = None if ref.object is None else maps.parts == self.job.parts[ref.object]
                out.append(Exemplar(image, K, c2w, maps, self.inputs.poses(cam), usable=usable))
            self._exemplars = tuple(out)
        return self._exemplars

    def far_distance(self) -> float:
        """Where sky goes: beyond every surface any reference shows (the same for every shot of a set)."""
        return max(far_distance(self.inputs.reference_depth(ref)) for ref in self.job.references)

    def seed_memory(self) -> Memory:
        """A new memory holding every reference, each with its light taken out (the memory keeps the scene as lit
        without its moving objects' shading and shadows): the set's memory. The references of one object come
        first and store that object's pixels alone: where a reference of the set shows the object too, the
        object's own look wins (the memory keeps the oldest write)."""
        self.far = self.far_distance()
        memory = self.memory_cls(self.model.channels, self.cell, device=self.device)
        refs = self.job.references
        for ref in [r for r in refs if r.object is not None] + [r for r in refs if r.object is None]:
            cam = self.inputs.view(ref)
            depth = self.inputs.reference_depth(ref)
            unlit = self.lighting.relit(pad_to_cells(self.inputs.reference_image(ref), self.cell), cam, inverse=True)
            view = self.view(cam, depth)
            pixels = None if ref.object is None else view.maps.parts == self.job.parts[ref.object]
            seed(self.model, memory, unlit.to(self.device), view, pixels=pixels)
        return memory

    def start_memory(self) -> Memory:
        """The memory the shot before this one left (chained shots), checked against this model."""
        start = self.job.start
        self.far = self.far_distance()
        try:
            memory = self.memory_cls.load(start.memory, device=self.device, object_ids=sorted(self.inputs.known_ids - {0}))
        except (OSError, ValueError, KeyError) as e:
            raise JobError(f"the memory this shot starts from cannot be read ({e}): {start.memory}") from None
        if (memory.channels, memory.cell) != (self.model.channels, self.cell):
            shot = f" (shot '{start.shot}')" if start.shot else ""
            raise JobError(f"the memory this shot starts from{shot} was made by another model ({memory.channels} "
                           f"channels, {memory.cell}-pixel cells; {self.model.name} has {self.model.channels} and "
                           f"{self.cell}): generate the earlier shots again with this model")
        return memory

    def reference_shown(self, n: int) -> Optional[protocol.Reference]:
        """The reference painted from exactly frame n's camera, if any: that frame is the user's own image."""
        frame = self.inputs.frame(n)
        for ref in self.job.references:
            if ref.object is not None:  # an object's own reference shows that object alone
                continue
            view = ref.view
            if (view is None and ref.frame == n) or (view is not None and view.frame == n and view.K == frame.K
                                                     and view.cam_to_world == frame.cam_to_world):
                return ref
        return None

    def save_frame(self, image: torch.Tensor, n: int) -> None:
        """A finished frame [3, h*cell, w*cell]: cropped, lit as frame n, saved; the user's own image on a frame
        a reference was painted from (not the model's rendition of it)."""
        image = self.lighting.relit(image[:, :self.H, :self.W], n)
        ref = self.reference_shown(n)
        if ref is not None:
            image = self.inputs.reference_image(ref)
        self.folder.save_frame(image, n)

    # -- one segment ------------------------------------------------------------------------------
    def per_frame(self, memory, seg):
        """Frame models: first what the model invents for the whole segment (written into the memory once, before
        any frame is drawn), then one frame at a time. Yields each frame once saved."""
        # the views one at a time (a frame's maps are large at production sizes)
        self.model.invent(memory, (self.view(n, prefill=True) for n in seg), self.generator(seg[0]))
        for n in seg:
            if self.cancelled():
                raise Cancelled()
            self.save_frame(frame_step(self.model, memory, self.view(n, prefill=True), self.generator(n)), n)
            yield n

    def segment(self, memory, i, seg, finished):
        """Segment models (video diffusion): the memory read at every frame of the segment, the segment generated
        jointly, the frames the model names for the memory written back, each at its own camera, before anything
        is saved. Yields each frame once saved; between denoising steps it checks for a cancel and reports
        progress with `step` and `steps`."""
        if self.cancelled():
            raise Cancelled()
        t0, total = time.perf_counter(), self.job.total
        views = [self.view(n) for n in seg]
        frames = [SegmentFrame(v.read(memory), v.maps) for v in views]

        def step(s, steps):
            if self.cancelled():
                raise Cancelled()
            spent = time.perf_counter() - t0
            eta = spent / (s / steps) * (total - finished) / len(seg) - spent if s else 0.0
            self.emit("progress", segment=i, segments=len(self.segments), frame=seg[0], done=finished, total=total,
                      eta_s=round(max(eta, 0.0), 2), step=s, steps=steps)

        out = self.model.generate(frames, prompt=self.job.prompt or "", negative_prompt=self.job.negative_prompt or "",
                                  generator=self.generator(seg[0]), step=step)
        for j, latent in out.writes:
            # read again: an earlier write of this segment may already hold some of this frame's new cells
            read = views[j].read(memory, splats=False)
            if read.hole.any():
                views[j].write(memory, latent, read, mask=read.hole & ~views[j].edges)
        for n, image in zip(seg, out.frames):
            self.save_frame(image, n)
            yield n

    # -- the loop ---------------------------------------------------------------------------------
    def start_changed(self) -> None:
        """A notice when an earlier run here started from another memory than this one does (the shot before was
        generated again): the fingerprint then differs too, and the shot starts afresh."""
        earlier = self.folder.saved_state()
        if earlier and earlier.get("segments_done") and earlier.get("start") != start_digest(self.job):
            shot = f"shot '{self.job.start.shot}'" if self.job.start and self.job.start.shot else "an earlier shot"
            self.warnings.append(f"the memory this shot starts from changed since its last run ({shot} was "
                                 f"generated again, or the shots' order or mode changed): it starts afresh")

    def resume_point(self, fingerprint: Fingerprint):
        """(segments done, their memory, their stats) of an earlier run of this same job, or (0, None, [])."""
        prog = self.folder.progress()
        if prog is None:
            return 0, None, []
        done, before, far, stats = prog
        if not 0 < done <= len(self.segments):
            return 0, None, []
        segments = [self.frames_of(i) for i in range(done)]
        if fingerprint.after([[self.inputs.frames[n] for n in seg] for seg in segments]) != before \
                or not self.folder.has_frames(segments):
            return 0, None, []
        try:
            memory = self.memory_cls.load(self.folder.memory_path, device=self.device,
                                          object_ids=sorted(self.inputs.known_ids - {0}))
        except (OSError, ValueError, KeyError):
            return 0, None, []
        self.far = far
        return done, memory, stats

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.folder.close()

    def _run(self) -> dict:
        t_start = time.perf_counter()
        start = start_digest(self.job)
        self.folder.create()
        self.start_changed()  # before hello, which carries its notice
        notices = self.warnings + ([self.device_note] if self.device_note else [])
        self.emit("hello", protocol=protocol.PROTOCOL_VERSION, device=self.device, model=self.job.model,
                  runs=self.model.name, notices=notices, segments=len(self.segments), frames=self.job.total)
        self.reference_arrived()  # a streamed job's fingerprint starts with the reference's camera and files
        # by the model that really runs: a resumed "builtin" job must not mix two different default models
        fingerprint = Fingerprint(dataclasses.replace(self.job, model=self.model.name),
                                  self.inputs.view(self.job.reference))
        done, memory, stats = self.resume_point(fingerprint)
        self.resumed = done
        if memory is None:
            memory = self.start_memory() if self.job.start is not None else self.seed_memory()
        else:
            for i in range(done):
                seg = self.frames_of(i)
                self.emit("segment_done", segment=i, frames=[seg[0], seg[-1]], resumed=True,
                          files=self.folder.frame_files(seg))
        total, finished = self.job.total, sum(len(s) for s in self.segments[:done])
        gen_time, gen_frames = 0.0, 0
        done_frames = [self.frames_of(i) for i in range(done)]
        for i in range(done, len(self.segments)):
            seg = self.frames_of(i)
            t0 = time.perf_counter()
            memory.begin_segment()
            for n in (self.segment(memory, i, seg, finished) if self.segmented else self.per_frame(memory, seg)):
                finished += 1
                elapsed = gen_time + time.perf_counter() - t0
                rate = elapsed / (gen_frames + seg.index(n) + 1)
                self.emit("progress", segment=i, segments=len(self.segments), frame=n, done=finished,
                          total=total, eta_s=round(rate * (total - finished), 2))
            self.folder.flush()  # the segment's frames are on disk before anything says they are
            seconds = time.perf_counter() - t0
            gen_time, gen_frames = gen_time + seconds, gen_frames + len(seg)
            stats.append({"segment": i, "frames": [seg[0], seg[-1]], "seconds": round(seconds, 4),
                          "seconds_per_frame": round(seconds / len(seg), 4),
                          "memory_bytes": memory.nbytes(), "memory_cells": len(memory), "peak_rss_bytes": peak_rss()})
            done_frames.append(seg)
            chain = fingerprint.after([[self.inputs.frames[n] for n in s] for s in done_frames])
            memory.save(self.folder.memory_path)
            self.folder.save_progress(chain, i + 1, self.far, stats, start)
            self.write_report(stats, chain, time.perf_counter() - t_start)
            self.emit("segment_done", segment=i, frames=[seg[0], seg[-1]], seconds=round(seconds, 4),
                      memory_bytes=memory.nbytes(), files=self.folder.frame_files(seg))
        chain = fingerprint.after([[self.inputs.frames[n] for n in s] for s in done_frames])
        report = self.write_report(stats, chain, time.perf_counter() - t_start)
        self.emit("done", stats={k: report[k] for k in ("frames", "segments", "seconds", "memory_bytes", "resumed_segments")})
        return report

    def write_report(self, stats, fingerprint, seconds):
        report = {
            "fingerprint": fingerprint, "model": self.job.model, "runs": self.model.name, "device": self.device,
            "width": self.W, "height": self.H, "latent": [self.model.channels, self.h, self.w],
            "frames": sum(len(seg) for seg in self.segments[:len(stats)]),
            "segments": len(stats), "seconds": round(seconds, 4),
            "memory_bytes": stats[-1]["memory_bytes"] if stats else 0,
            "resumed_segments": self.resumed,
            "peak_rss_bytes": peak_rss(),
            "per_segment": stats,
        }
        self.folder.write_report(report)
        return report


def run_job(job_path: str, emit: Callable, cancelled: Callable[[], bool] = lambda: False,
            follow: bool = False) -> dict:
    """Load, check and run a job.json with the model it names. A streamed job (protocol: frame_count) takes its
    later frames from the job folder's stream; with `follow`, as they arrive (the add-on still exports them)."""
    job, warnings = protocol.load_job(job_path)
    stream = protocol.JobStream(job_path) if len(job.frames) < job.total else None
    return Run.load(job, os.path.dirname(os.path.abspath(job_path)), emit, cancelled, warnings, stream=stream,
                    follow=follow).run()
