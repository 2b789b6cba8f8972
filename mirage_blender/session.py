"""One Generate: export the scene into a job folder, run the backend, land its segments in the VSE.

The same Session serves the modal operator (driven by a timer, UI stays live) and the synchronous
path of `blender -b` (timers never fire there), so both behave identically.
"""
import contextlib
import json
import os
import shutil
import tempfile
import time

import bpy
import numpy as np

from . import albedo, export, vse
from .backend import protocol
from .runner import Backend, BackendError, backend_python


class SessionError(RuntimeError):
    """One line for the user."""


# A frame takes seconds on a CPU; minutes of silence mean the backend hangs (stopped, deadlocked, swapping)
DEFAULT_STALL_TIMEOUT = 300


def output_folder(scene, settings):
    path = settings.output_dir.strip() or "//mirage/"
    if path.startswith("//") and not bpy.data.filepath:
        # an unsaved file has no folder for "//": keep the run beside Blender's temp files
        return os.path.join(tempfile.gettempdir(), "mirage", bpy.path.clean_name(scene.name)), True
    return os.path.normpath(bpy.path.abspath(path)), False


@contextlib.contextmanager
def _user_image(path, what):
    """A user's image file as a temporary Image datablock, removed again whatever happens."""
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:
        raise SessionError(f"{what} cannot be read: {path}") from None
    try:
        yield img
    finally:
        bpy.data.images.remove(img)


def _load_depth_map(path, width, height):
    """A user's depth map as [H, W] float32, top row first (Blender stores pixels bottom-up)."""
    with _user_image(path, "The depth map") as img:
        w, h = img.size
        if (w, h) != (width, height):
            raise SessionError(f"The depth map is {w}x{h}, the render is {width}x{height}")
        img.colorspace_settings.is_data = True
        px = np.empty(w * h * img.channels, dtype=np.float32)
        img.pixels.foreach_get(px)
        depth = px.reshape(h, w, img.channels)[::-1, :, 0].copy()
    problem = protocol.depth_problem(depth)
    if problem:
        raise SessionError(f"The depth map {problem}: {path}")
    return depth


def _sentence(e):
    """The backend's and protocol's lines start lower-case; the add-on shows sentences."""
    text = str(e)
    return text[:1].upper() + text[1:]


def _check_readable(path, what):
    """A path the user picked must be a file we can open (the backend checks its copy the same way)."""
    try:
        protocol.input_file(path, what)
    except protocol.JobError as e:
        raise SessionError(_sentence(e)) from None


def _check_reference(path, width, height):
    """Catch an unreadable or mis-shaped reference here, naming the user's file, not the job's copy."""
    with _user_image(path, "The reference image") as img:
        w, h = img.size
    if w == 0 or h == 0:
        raise SessionError(f"The reference image cannot be read: {path}")
    if abs(w / h - width / height) > 0.01 * width / height:
        raise SessionError(f"The reference image is {w}x{h}, which does not have the render's aspect ratio "
                           f"({width}x{height}); crop it or change the render size")


class Session:
    def __init__(self, context, python_pref="", stall_timeout=DEFAULT_STALL_TIMEOUT):
        self.scene = context.scene
        self.settings = self.scene.mirage
        self.python_pref = python_pref
        self.stall_timeout = stall_timeout  # seconds without a message from a live backend; 0 = never
        self.last_message = time.monotonic()
        self.backend = None
        self.cancel_requested_at = None
        self.error = None
        self.finished = False
        self.cancelled = False
        self.notices = []
        self.tracked = []  # names of the moving objects, each with its own memory
        self.progress = 0.0
        self.status = "Preparing"
        self.channel = None
        self.segments_in_vse = 0
        self.started = time.monotonic()

    # -- preparing the job folder ------------------------------------------------------------
    def prepare(self):
        """Generator: yields between frames so the modal operator can keep the UI responsive."""
        scene, s = self.scene, self.settings
        python = backend_python(self.python_pref)
        export.camera_intrinsics(scene, scene.camera)  # no camera, or not perspective: refuse before any work
        if scene.frame_end < scene.frame_start:
            raise SessionError("The frame range is empty (End is before Start)")
        width, height = export.render_size(scene)
        frames = list(range(scene.frame_start, scene.frame_end + 1))
        try:  # before any export: a frame too large for memory must not be rasterised first
            protocol.check_resolution(width, height, len(frames))
        except protocol.JobError as e:
            raise SessionError(_sentence(e)) from None
        ref = bpy.path.abspath(s.reference_image) if s.reference_image else ""
        if not ref:
            raise SessionError("No reference image is set: choose one in Mirage Flythrough > Reference")
        _check_readable(ref, "the reference image")
        if os.path.getsize(ref) == 0:
            raise SessionError(f"The reference image is empty (0 bytes): {ref}")
        _check_reference(ref, width, height)
        if s.segment_length > len(frames):
            raise SessionError(f"Segment Length ({s.segment_length}) is longer than the frame range ({len(frames)} frames)")
        depth_map = None
        if s.depth_source == "IMAGE":
            path = bpy.path.abspath(s.depth_image) if s.depth_image else ""
            if not path:
                raise SessionError("Depth is set to Depth Map, but no depth map is chosen")
            _check_readable(path, "the depth map")
            depth_map = _load_depth_map(path, width, height)

        out, fallback = output_folder(scene, s)
        if fallback:
            self.notices.append(f"The file is not saved yet: output goes to {out}")
        try:
            os.makedirs(os.path.join(out, "inputs", "depth"), exist_ok=True)
            probe = os.path.join(out, ".write_test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            raise SessionError(f"Cannot write to the output folder {out}: {e.strerror or e}") from None
        self.out = out
        self.python = python

        ref_name = "inputs/reference" + os.path.splitext(ref)[1].lower()
        shutil.copyfile(ref, os.path.join(out, ref_name))
        job = {"version": protocol.JOB_VERSION, "model": s.model, "device": s.device, "seed": s.seed,
               "segment_length": s.segment_length, "width": width, "height": height,
               "reference": {"image": ref_name, "frame": scene.frame_start},
               "depth_source": s.depth_source, "plane_distance": s.plane_distance, "frames": []}
        if s.model.startswith("wan-"):  # text guidance for the diffusion models only
            job.update(prompt=s.prompt, negative_prompt=s.negative_prompt)
        if depth_map is not None:
            np.save(os.path.join(out, "inputs", "reference_depth.npy"), depth_map)
            job["reference"]["depth"] = "inputs/reference_depth.npy"

        depth_size = (width, height) if s.depth_source == "SCENE" else None
        # moving objects get their own memory; they need the scene's geometry for their masks
        objects = export.moving_objects(scene, frames) if depth_size is not None else []
        if depth_size is not None:
            # an object that changes shape still gets a memory of its own, so the world behind it stays clean;
            # what it keeps is its shape when first seen, which the user should know
            deforming = export.deforming_objects(scene, frames)
            for ob in deforming:
                self.notices.append(f"'{ob.name}' changes shape during the shot (armature, shape keys or modifiers): "
                                    f"Mirage moves it as a rigid object, so it keeps the look it had when first seen")
            objects = sorted({ob.name: ob for ob in objects + deforming}.values(), key=lambda ob: ob.name)
        self.tracked = [ob.name for ob in objects]
        if objects:
            job["objects"] = [{"id": i, "name": ob.name} for i, ob in enumerate(objects, 1)]
            os.makedirs(os.path.join(out, "inputs", "ids"), exist_ok=True)
            os.makedirs(os.path.join(out, "inputs", "light"), exist_ok=True)
        # a moving object's faces no image shows take their pattern from its material: baked once, one per step
        textures = {}
        if objects:
            os.makedirs(os.path.join(out, "inputs", "albedo"), exist_ok=True)
            for ob in albedo.worth_baking(objects):
                self.status = f"Baking the material of {ob.name}"
                tex = albedo.bake(scene, ob)
                if tex is not None:
                    textures[ob.name] = tex
                elif (why := albedo.why_not(ob)) is not None:
                    self.notices.append(f"'{ob.name}' {why}: faces of it no image shows are filled "
                                        f"from its own pixels, not from its material")
                yield
        for i, item in enumerate(export.iter_frames(scene, frames, depth_size, objects, textures=textures or None)):
            for key, folder, dtype in (("depth", "depth", np.float32), ("ids", "ids", np.uint16),
                                       ("light", "light", np.float16), ("albedo", "albedo", np.uint8)):
                if key in item:
                    rel = f"inputs/{folder}/{item['frame']:06d}.npy"
                    np.save(os.path.join(out, rel), item[key].astype(dtype))
                    item[key] = rel
            job["frames"].append(item)
            self.progress = 0.1 * (i + 1) / len(frames)
            what = f"depth and the light of {len(objects)} moving object(s)" if objects else "depth"
            self.status = f"Exporting cameras and {what}: frame {item['frame']}"
            yield

        # the add-on checks the job with the same rules as the backend, so errors show before it starts
        self.job_path = os.path.join(out, "job.json")
        try:
            protocol.validate_job(job, out)
        except protocol.JobError as e:
            raise SessionError(_sentence(e)) from None
        with open(self.job_path + ".part", "w", encoding="utf-8") as f:
            json.dump(job, f, indent=1)
        os.replace(self.job_path + ".part", self.job_path)
        self.frames = frames

    def start(self):
        self.backend = Backend(self.python, self.job_path, os.path.join(self.out, "backend.log"))
        self.status = "Starting the backend"
        self.last_message = time.monotonic()

    def check_stall(self):
        """Called on every tick: a backend that is alive but silent for too long is stopped."""
        if self.backend is None or self.ended or not self.stall_timeout:
            return
        if time.monotonic() - self.last_message > self.stall_timeout and self.backend.proc.poll() is None:
            self.backend.kill()
            self.error = (f"The backend stopped responding for {self.stall_timeout:g} s and was stopped; "
                          f"finished segments are kept (details in {os.path.join(self.out, 'backend.log')})")

    # -- messages from the backend -----------------------------------------------------------
    @property
    def ended(self):
        return self.finished or self.error is not None or self.cancelled

    def handle(self, msg):
        kind = msg["type"]
        self.last_message = time.monotonic()
        if kind == "hello" and msg.get("protocol") != protocol.PROTOCOL_VERSION:
            self.error = (f"The backend speaks protocol {msg.get('protocol')}, this add-on speaks "
                          f"{protocol.PROTOCOL_VERSION}: install the add-on and backend of the same release")
            if self.backend is not None:
                self.backend.kill()
        elif kind == "hello":
            self.notices.extend(msg.get("notices") or [])
            self.status = f"Generating on {msg.get('device', '?').upper()} with {msg.get('model')}"
        elif kind == "progress":
            self.progress = 0.1 + 0.9 * msg["done"] / max(msg["total"], 1)
            self.status = (f"Segment {msg['segment'] + 1}/{msg['segments']}, frame {msg['frame']} "
                           f"({msg['done']}/{msg['total']}), about {msg['eta_s']:.0f} s left")
            if "step" in msg:  # segment-level models report their denoising steps
                self.status = (f"Segment {msg['segment'] + 1}/{msg['segments']}: step {msg['step'] + 1}/{msg['steps']} "
                               f"({msg['done']}/{msg['total']} frames), about {msg['eta_s']:.0f} s left")
        elif kind == "download":
            total = msg.get("total_bytes") or 0
            self.status = (f"Downloading {msg.get('name') or msg.get('model')}: {msg.get('done_bytes', 0) / 1e9:.1f} of "
                           f"{total / 1e9:.1f} GB" if total else f"Downloading {msg.get('name') or msg.get('model')}")
        elif kind == "segment_done":
            self.insert(msg)
        elif kind == "error":
            message = msg.get("message") or "the backend failed"
            self.error = message[:1].upper() + message[1:]
        elif kind == "done":
            if msg.get("cancelled"):
                self.cancelled = True
            else:
                self.finished = True
                self.progress = 1.0
                stats = msg.get("stats", {})
                self.status = (f"Done: {stats.get('frames')} frames in {stats.get('seconds', 0):.1f} s, "
                               f"memory {stats.get('memory_bytes', 0) / 2**20:.2f} MiB")
                if self.tracked:  # say which objects kept their own memory, so a missing one can be marked Moving
                    names = ", ".join(self.tracked[:3]) + (f" and {len(self.tracked) - 3} more" if len(self.tracked) > 3 else "")
                    self.status += f", moving: {names}"
        elif kind == "_exit" and not self.ended:
            if self.cancel_requested_at is not None:
                self.cancelled = True  # stopped (or killed when it did not stop in time) because the user asked
            else:
                self.error = (f"The backend stopped unexpectedly (exit code {msg['code']}): "
                              f"{self.backend.last_error_line()}")

    def insert(self, msg):
        scene = self.scene
        if self.channel is None:
            vse.remove_previous(scene, self.out)
            self.channel = vse.free_channel(scene, scene.frame_start, scene.frame_end)
        vse.add_segment(scene, f"Mirage {msg['segment'] + 1:03d}", self.out, msg["files"],
                        msg["frames"][0], self.channel)
        self.segments_in_vse += 1

    def cancel(self):
        self.cancel_requested_at = time.monotonic()
        if self.backend is None:
            self.cancelled = True
        else:
            self.backend.cancel()

    def run_blocking(self, stall_timeout=None):
        """The path for `blender -b` and scripts: no timers, just wait on the backend's messages."""
        if stall_timeout is not None:
            self.stall_timeout = stall_timeout
        for _ in self.prepare():
            pass
        self.start()
        try:
            while not self.ended:
                for msg in self.backend.wait(timeout=min(1.0, self.stall_timeout or 1.0)):
                    self.handle(msg)
                self.check_stall()
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            self.close()

    def close(self):
        if self.backend is not None:
            self.backend.cancel()
            try:
                self.backend.proc.wait(timeout=10)
            except Exception:
                self.backend.kill()
            self.backend.proc.wait()
