"""Bake to Materials: the memory of the finished run in the scene's output folder baked into every mesh's own
textures, each with a new material, in one undo step.

The add-on does what needs the scene (gather/surfaces.py, core/texels.py: each object's texels and where on its
surface each lies, in its memory bank's space) and writes a bake request into the run's folder
(backend/bakefile.py); the backend process draws the memory there (torch decodes it) and writes a colour and a mask
PNG per object; the add-on then loads them as images (packed into the .blend, or saved in the output folder), adds a
UV map made by Smart UV Project where an object had none, and gives each object a new material (its slots linked to
the object, so the user's materials and meshes keep theirs). Nothing in the scene changes before that last step: a
bake that is cancelled or fails leaves the scene as it was.

Like Generate (session.py), one Bake serves the modal operator (tick, driven by a timer) and `blender -b`
(run_blocking); the operator reads its state (status, progress, error, ended, notices).
"""
import json
import os
import shutil
import time
from collections.abc import Iterator

import bpy
import numpy as np

from . import shots
from .backend import bakefile, protocol, runstate
from .core import texels as tx
from .core.errors import InputError, sentence
from .gather import frames as frame_export, geometry, motion, surfaces
from .runner import Backend, backend_python
from .session import CANCEL_GRACE, DEFAULT_STALL_TIMEOUT, _size

FOOTPRINT_FRAMES = 8  # frames the automatic texel density looks at
CHANGED_PIXELS = 0.005  # a share of pixels whose depth differs from the run's beyond which the scene changed
BAKED = "baked"  # the folder in the run's folder the textures are saved in


class Bake:
    """One bake of the scene's finished run (the shot named `shot`, or the last shot of the set: chained shots
    leave the whole set's memory there) in `mode` (LOOK or ALBEDO), `resolution` texels per side (0: about what the
    flythrough saw), packed into the .blend with `pack`."""

    def __init__(self, context, python_pref: str = "", mode: str = "LOOK", resolution: int = 0, pack: bool = True,
                 shot: str = "", stall_timeout: float = DEFAULT_STALL_TIMEOUT):
        self.scene = context.scene
        self.python_pref, self.mode, self.resolution, self.pack = python_pref, mode, resolution, pack
        self.shot_name = shot
        self.stall_timeout = stall_timeout
        self.error = None
        self.finished = False
        self.cancelled = False
        self.notices = []
        self.progress = 0.0
        self.status = "Preparing the bake"
        self.backend = None
        self.cancel_requested_at = None
        self.last_message = time.monotonic()
        self.folder = None  # the run's job folder
        self.surfaces = []  # the objects in the request, in its order
        self.applied = []  # (object name, material) made by apply
        self._steps = None
        self.ready = False  # the request is written

    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None or self.cancelled

    # -- what the bake starts from ---------------------------------------------------------------
    def _run_folder(self):
        """(the shot, its job) whose finished run is baked; InputError (one line) where there is none, or where the
        run or the scene changed since."""
        scene = self.scene
        plan = shots.plan(scene, scene.mirage)
        shot = plan.find(self.shot_name, scene) if self.shot_name else plan.shots[-1]
        run = runstate.run_state(shot.folder, check_memory=True)
        where = f"{shot.title} ({shot.folder})"
        if run is None or not run.started:
            raise InputError(f"Nothing to bake: there is no finished run of {where}; press Generate Flythrough first")
        if not run.finished:
            raise InputError(f"The run of {where} is not finished ({run.done} of {len(run.frames)} frames): "
                             f"Generate again to finish it, then bake")
        if not run.memory_ok:
            raise InputError(f"The memory saved for {where} is not the one its run left (it was stopped while "
                             f"saving): Generate again, then bake")
        job = runstate.read_json(os.path.join(shot.folder, "job.json"))
        if run.frames != shot.frames:
            raise InputError(f"The run of {where} is of frames {run.frames[0]}-{run.frames[-1]}, the shot is now "
                             f"{shot.frames[0]}-{shot.frames[-1]}: Generate again, then bake")
        if plan.mode != "CHAINED" and len(plan.shots) > 1:
            self.notices.append(f"Shots are Parallel: the bake shows what {shot.title} saw and invented only")
        if self.mode == "ALBEDO":
            # the backend divides by the light at each texel (bakefile: `shade`); what the add-on must give it, the
            # still world's light on texels and a calibration to a base colour under the scene's view transform, is
            # not there yet, and a base colour without it would only look right by chance
            raise InputError("Albedo is not available yet (the light on each texel is not worked out in this "
                             "version): bake Look, an emission that shows the flythrough's colours in any engine")
        return plan, shot, job

    def _check_unchanged(self, shot, job) -> None:
        """InputError where the scene no longer is what the run saw: the cameras, or the depth on the shot's first
        and last frames (moved, added or removed geometry)."""
        size = (job["width"], job["height"])
        entries = {f["frame"]: f for f in job["frames"]}
        frames = sorted({shot.frames[0], shot.frames[-1]})
        cameras = [shot.camera] * len(frames) if shot.name else None
        for fr in frame_export.iter_frames(self.scene, frames, size, cameras=cameras):
            entry = entries[fr.frame]
            if not (np.allclose(fr.K, entry["K"], rtol=1e-5, atol=1e-6)
                    and np.allclose(fr.cam_to_world, entry["cam_to_world"], rtol=1e-5, atol=1e-5)):
                raise InputError(f"The camera changed since the last Generate (frame {fr.frame}): Generate again, "
                                 f"then bake")
            then = np.load(os.path.join(shot.folder, entry["depth"])).astype(np.float64)
            now = fr.maps.depth.astype(np.float64)
            both = np.isfinite(then) & np.isfinite(now)
            same = (np.isinf(then) & np.isinf(now))
            same[both] = np.abs(then[both] - now[both]) <= 1e-3 * np.abs(then[both])
            if (~same).mean() > CHANGED_PIXELS:
                raise InputError(f"The scene changed since the last Generate ({100 * (~same).mean():.0f}% of frame "
                                 f"{fr.frame} shows other geometry): Generate again, then bake")

    def _footprints(self, shot, job) -> tuple[dict, float]:
        """({object name: scene units one pixel of the flythrough covered on it (the median over frames spread over
        the shot)}, the same over every object): the texel density "about what the flythrough saw"."""
        parts = geometry.part_numbers(self.scene)
        frames = job["frames"]
        picks = sorted({round(i * (len(frames) - 1) / max(FOOTPRINT_FRAMES - 1, 1)) for i in range(FOOTPRINT_FRAMES)})
        samples, every = {}, []
        for i in picks:
            f = frames[i]
            depth = np.load(os.path.join(shot.folder, f["depth"])).astype(np.float64)
            size = depth / float(f["K"][0][0])
            every.append(size[np.isfinite(size)][::7])
            if f.get("parts"):
                part = np.load(os.path.join(shot.folder, f["parts"]))
                for name, n in parts.items():
                    mine = (part == n) & np.isfinite(size)
                    if mine.any():
                        samples.setdefault(name, []).append(size[mine])
        every = np.concatenate(every) if every else np.zeros(0)
        overall = float(np.median(every)) if every.size else 0.0
        return {name: float(np.median(np.concatenate(s))) for name, s in samples.items()}, overall

    # -- the request ------------------------------------------------------------------------------
    def steps(self) -> Iterator[str]:
        """The bake's preparation, one status line a step: the checks, then one object per step (its texels,
        points and normals written into the request), then the request itself."""
        self.python = backend_python(self.python_pref)
        plan, shot, job = self._run_folder()
        self.folder = shot.folder
        self._check_unchanged(shot, job)
        yield "Checked the run and the scene"
        ids = {o["name"]: o["id"] for o in job.get("objects") or []}
        deforming = {ob.name for ob in motion.shape_changes(self.scene, plan.frames)[0] if ob.type == "MESH"}
        footprint, overall = self._footprints(shot, job)
        work = os.path.join(self.folder, bakefile.FOLDER)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        objects = surfaces.bake_objects(self.scene)
        for ob in geometry.surface_objects(self.scene):
            if ob.type != "MESH":
                self.notices.append(f"'{ob.name}' is not a mesh (convert it to one to bake it): it is not baked")
        entries = []
        scene = self.scene
        frame_before, subframe_before = scene.frame_current, scene.frame_subframe
        try:
            scene.frame_set(shot.frames[0])  # where the still world stood during the shot
            for k, ob in enumerate(objects):
                surface, why = surfaces.read(ob, ids.get(ob.name, 0), ob.name in deforming)
                self.progress = 0.2 * (k + 1) / len(objects)
                if surface is None:
                    self.notices.append(f"'{ob.name}' {why}: it is not baked")
                    yield f"Reading {ob.name}"
                    continue
                seen = tx.texture_size(surface.world_area, surface.uv_area, footprint.get(ob.name, overall))
                size = self.resolution or seen
                read = tx.read_size(size, seen)  # the memory holds nothing finer: a finer texture is upsampled
                texels = tx.rasterise(surface.uvs, read, read)
                if not len(texels):
                    self.notices.append(f"'{ob.name}' has a UV map that covers no texel: it is not baked")
                    yield f"Reading {ob.name}"
                    continue
                i = len(entries)
                names = {k: f"{i:03d}_{k}.npy" for k in ("texels", "points", "normals")}
                np.save(os.path.join(work, names["texels"]), texels.index)
                np.save(os.path.join(work, names["points"]),
                        tx.surface_points(surface.corners, texels).astype(np.float32))
                np.save(os.path.join(work, names["normals"]), surface.normals[texels.tri].astype(np.float32))
                entries.append({"name": ob.name, "bank": surface.bank, "width": read, "height": read,
                                "size": [size, size], "sides": 1 if surface.closed else 2, **names})
                self.surfaces.append(surface)
                yield f"Reading {ob.name}: {len(texels)} texels of {read}x{read}"
        finally:
            if scene.frame_current != frame_before or scene.frame_subframe != subframe_before:
                scene.frame_set(frame_before, subframe=subframe_before)
        if not entries:
            raise InputError("Nothing to bake: the scene has no mesh with faces a texture can cover")
        request = {"version": bakefile.BAKE_VERSION, "mode": self.mode, "objects": entries}
        try:
            bakefile.validate_request(request, work)
        except protocol.JobError as e:
            raise InputError(sentence(str(e))) from None
        with open(os.path.join(work, bakefile.REQUEST), "w", encoding="utf-8") as f:
            json.dump(request, f)
        self.ready = True
        yield "Starting the backend"

    # -- driving it -------------------------------------------------------------------------------
    def start(self) -> None:
        work = os.path.join(self.folder, bakefile.FOLDER)
        self.backend = Backend(self.python, "", os.path.join(self.folder, "bake.log"), command=["bake", work])
        self.last_message = time.monotonic()
        self.status = "Starting the backend"

    def tick(self, budget: float = 0.05) -> None:
        """One timer tick of the UI: preparation steps for about `budget` seconds, or the backend's messages so
        far; the result applied once the backend is done. Never waits on the backend."""
        if self.ended:
            return
        if self.backend is None:
            if self._steps is None:
                self._steps = self.steps()
            deadline = time.monotonic() + budget
            for status in self._steps:
                self.status = status
                if self.ready or time.monotonic() >= deadline:
                    break
            if self.ready and self.backend is None and self.cancel_requested_at is None:
                self._steps = None
                self.start()
            return
        for msg in self.backend.poll():
            self.handle(msg)
            if self.ended:
                break
        self.supervise()

    def run_blocking(self) -> None:
        """The path for `blender -b` and scripts: prepare, start the backend, wait on it, apply."""
        try:
            for status in self.steps():
                self.status = status
            self.start()
            while not self.ended:
                for msg in self.backend.wait(timeout=min(1.0, self.stall_timeout or 1.0)):
                    self.handle(msg)
                self.supervise()
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            self.close()

    def supervise(self) -> None:
        if self.backend is None or self.ended:
            return
        if self.stall_timeout and time.monotonic() - self.last_message > self.stall_timeout \
                and self.backend.proc.poll() is None:
            self.backend.kill()
            self.error = (f"The backend stopped responding for {self.stall_timeout:g} s and was stopped (details in "
                          f"{os.path.join(self.folder, 'bake.log')}); the scene is as it was")
        elif self.cancel_requested_at is not None and time.monotonic() - self.cancel_requested_at > CANCEL_GRACE:
            self.backend.kill()

    def cancel(self) -> None:
        self.cancel_requested_at = time.monotonic()
        if self.backend is None:
            if self._steps is not None:
                self._steps.close()
                self._steps = None
            self.cancelled = True
        else:
            self.backend.cancel()

    def fail(self, message: str) -> None:
        self.error = message

    def close(self) -> None:
        """Stop whatever still runs; the request's files go (the textures stay where they were saved)."""
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if self.backend is not None:
            self.backend.cancel()
            try:
                self.backend.proc.wait(timeout=10)
            except Exception:
                self.backend.kill()
            self.backend.proc.wait()
            self.backend.close()
        if self.folder is not None:
            shutil.rmtree(os.path.join(self.folder, bakefile.FOLDER), ignore_errors=True)

    # -- messages from the backend ----------------------------------------------------------------
    def handle(self, msg: dict) -> None:
        kind = msg["type"]
        self.last_message = time.monotonic()
        if kind == "hello":
            if msg.get("protocol") != protocol.PROTOCOL_VERSION:
                self.error = (f"The backend speaks protocol {msg.get('protocol')}, this add-on speaks "
                              f"{protocol.PROTOCOL_VERSION}: install the add-on and backend of the same release")
                self.backend.kill()
                return
            self.notices.extend(msg.get("notices") or [])
            self.status = f"Baking on {str(msg.get('device', '?')).upper()} with {msg.get('model')}"
        elif kind == "progress":
            self.progress = 0.2 + 0.75 * msg["done"] / max(msg["total"], 1)
            self.status = (f"Baking {msg['object']} ({msg['objects_done'] + 1}/{msg['objects']}), "
                           f"about {msg['eta_s']:.0f} s left")
        elif kind == "download":
            total = msg.get("total_bytes") or 0
            self.status = f"Downloading {msg.get('name') or msg.get('model')}" + (
                f": {_size(msg.get('done_bytes', 0), total)} of {_size(total, total)}" if total else "")
        elif kind == "error":
            self.error = sentence(msg.get("message") or "the backend failed") + "; the scene is as it was"
        elif kind == "done":
            if msg.get("cancelled"):
                self.cancelled = True
                return
            try:
                self.apply()
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                self.error = f"Cannot apply the bake: {e}"
                return
            self.finished = True
            self.progress = 1.0
            stats = msg.get("stats") or {}
            filled = 1 - stats.get("seen", 0) / max(stats.get("texels", 1), 1)
            self.status = (f"Baked {len(self.applied)} object(s) in {stats.get('seconds', 0):.1f} s "
                           f"({100 * filled:.0f}% of their texels unseen, filled from the nearest seen texel)")
        elif kind == "_exit" and not self.ended:
            if self.cancel_requested_at is not None:
                self.cancelled = True
            else:
                self.error = (f"The backend stopped unexpectedly (exit code {msg['code']}): "
                              f"{self.backend.last_error_line()}; the scene is as it was")

    # -- the result into the scene ----------------------------------------------------------------
    def apply(self) -> None:
        """The backend's textures into the scene: per object its images, its new UV map where it had none, a new
        material on every slot (linked to the object). The one step that changes the scene."""
        work = os.path.join(self.folder, bakefile.FOLDER)
        with open(os.path.join(work, bakefile.RESULT, "result.json"), encoding="utf-8") as f:
            result = json.load(f)
        saved = os.path.join(self.folder, BAKED)
        os.makedirs(saved, exist_ok=True)
        kind = "Look" if self.mode == "LOOK" else "Albedo"
        for surface, r in zip(self.surfaces, result["objects"]):
            ob = bpy.data.objects.get(surface.name)
            if ob is None or ob.type != "MESH":
                self.notices.append(f"'{surface.name}' is gone: it is not baked")
                continue
            if not r["seen"]:
                self.notices.append(f"No frame saw '{surface.name}': it keeps its material")
                continue
            if surface.new_uvs is not None:
                if len(ob.data.loops) != len(surface.new_uvs):
                    self.notices.append(f"'{surface.name}' changed while it was baked: it is not baked")
                    continue
                surfaces.add_uv_map(ob, surface)
            stem = bpy.path.clean_name(surface.name)
            colour = _image(os.path.join(work, r["colour"]), os.path.join(saved, f"{stem}_{kind.lower()}.png"),
                            f"{surface.name} Mirage {kind}", self.pack)
            mask = _image(os.path.join(work, r["mask"]), os.path.join(saved, f"{stem}_unseen.png"),
                          f"{surface.name} Mirage Unseen", self.pack, data=True)
            mat = _material(f"{surface.name} Mirage {kind}", surface.uv_map, colour, mask, self.mode)
            if not ob.material_slots:
                ob.data.materials.append(None)  # one slot, empty: the object's own material goes in it
            for slot in ob.material_slots:
                slot.link = "OBJECT"  # the object's own slot: the mesh keeps the user's materials
                slot.material = mat
            self.applied.append((surface.name, mat.name))


def _image(source: str, path: str, name: str, pack: bool, data: bool = False):
    """The PNG `source` saved as `path` and loaded as an image named `name` (packed into the .blend with `pack`;
    `data`: not a colour, a mask)."""
    shutil.copyfile(source, path)
    img = bpy.data.images.load(path, check_existing=False)
    img.name = name
    if bpy.data.filepath:
        try:
            img.filepath = bpy.path.relpath(path)
        except ValueError:  # another drive (Windows): keep it absolute
            pass
    if data:
        img.colorspace_settings.name = "Non-Color"
    if pack:
        img.pack()
    return img


def _material(name: str, uv_map: str, colour, mask, mode: str):
    """A new material showing `colour` over the UV map `uv_map`: an emission (LOOK) or the base colour of a
    Principled BSDF (ALBEDO); the mask of unseen texels beside it, unconnected, for the user to look at."""
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (400, 0)
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = uv_map
    uv.location = (-600, 0)
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = colour
    tex.extension = "EXTEND"
    tex.location = (-350, 0)
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    if mode == "LOOK":
        shader = nodes.new("ShaderNodeEmission")
        shader.inputs["Strength"].default_value = 1.0
        links.new(tex.outputs["Color"], shader.inputs["Color"])
        links.new(shader.outputs["Emission"], out.inputs["Surface"])
        try:  # an unlit look lights nothing else: Cycles need not sample it as a lamp
            mat.cycles.emission_sampling = "NONE"
        except (AttributeError, TypeError):
            pass
    else:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        links.new(tex.outputs["Color"], shader.inputs["Base Color"])
        links.new(shader.outputs["BSDF"], out.inputs["Surface"])
    shader.location = (100, 0)
    unseen = nodes.new("ShaderNodeTexImage")
    unseen.image = mask
    unseen.label = "Unseen texels (filled from the nearest seen one)"
    unseen.location = (-350, -300)
    links.new(uv.outputs["UV"], unseen.inputs["Vector"])
    nodes.active = tex
    return mat
