"""The segment loop: read the memory at each camera, let the model complete the frame, write it back.

Everything here is deterministic for a given job and seed, so a run that was stopped can resume
from its last saved segment and end with the same frames as a run that never stopped.
"""
import errno
import hashlib
import json
import math
import os
import time

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import models, protocol
from .memory import LatentMemory, SceneMemory, cell_depth, cell_edges
from .protocol import JobError

STATE_DIR = "state"
GAMMA = 2.2  # display values to linear light, for the light maps


class Cancelled(Exception):
    pass


def resolve_device(requested):
    if requested == "CPU":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", None
    if requested == "CUDA":
        raise JobError("Device is CUDA, but this backend's torch sees no CUDA device: set Device to Auto or CPU, "
                       "or set Backend Python to an interpreter whose torch has CUDA")
    return "cpu", "no CUDA device found, running on the CPU"


def load_image(path, width, height):
    """Reference image -> [3, H, W] float in 0..1, resized to the render size."""
    try:
        if os.path.getsize(path) == 0:
            raise JobError(f"the reference image is empty (0 bytes): {path}")
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise JobError(f"the reference image does not exist: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise JobError(f"the reference image cannot be read ({type(e).__name__}): {path}") from None
    if abs(rgb.width / rgb.height - width / height) > 0.01 * width / height:
        raise JobError(f"the reference image is {rgb.width}x{rgb.height}, which does not have the render's "
                       f"aspect ratio ({width}x{height}); crop it or change the render size")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.LANCZOS)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def load_array(path, width, height, what):
    """A per-pixel .npy input ([H, W], never pickled), or a one-line JobError naming it."""
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise JobError(f"{what} is missing: {path}") from None
    except (ValueError, OSError) as e:
        raise JobError(f"{what} cannot be read ({e}): {path}") from None
    if a.shape != (height, width):
        raise JobError(f"{what} is {a.shape[1] if a.ndim == 2 else '?'}x{a.shape[0]}, expected {width}x{height}")
    return a


def load_depth(path, width, height, what):
    d = load_array(path, width, height, what).astype(np.float32)
    problem = protocol.depth_problem(d)
    if problem:
        raise JobError(f"{what} {problem}: {path}")
    return torch.from_numpy(d)


def _atomic_write(path, write):
    """write(tmp) then rename: a crash or a full disk never leaves a half-written file under `path`."""
    tmp = path + ".part"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if e.errno == errno.ENOSPC:  # PIL and json report it without a file name: name the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        raise


def save_png(image, path):
    """Write atomically: a crash never leaves a half-written PNG under a finished frame's name."""
    arr = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    # level 3: a tenth larger than the default level 6 and less than half its time (about 4 vs 11 ms a frame)
    _atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", compress_level=3))


def write_json(data, path):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    _atomic_write(path, write)


def job_fingerprint(job):
    """Hash of everything that decides the frames: a changed job must not resume an old run."""
    h = hashlib.sha256()
    keep = {k: job[k] for k in ("model", "seed", "segment_length", "width", "height", "depth_source", "plane_distance",
                                "prompt", "negative_prompt") if k in job}
    keep["frames"] = [{"frame": f["frame"], "K": f["K"], "cam_to_world": f["cam_to_world"],
                       "objects": f.get("objects")} for f in job["frames"]]
    keep["objects"] = job.get("objects")
    keep["reference_frame"] = job["reference"]["frame"]
    h.update(json.dumps(keep, sort_keys=True).encode())
    paths = [job["reference"]["image"], job["reference"].get("depth")]
    paths += [p for f in job["frames"] for p in (f.get("depth"), f.get("ids"), f.get("light"), f.get("albedo"))]
    for p in paths:
        if p:
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def pad_to_cells(t, cell):
    """Pad the right/bottom edge (replicate) so the size divides into cells; K is unchanged by this."""
    H, W = t.shape[-2:]
    ph, pw = (-H) % cell, (-W) % cell
    if not ph and not pw:
        return t
    x = t[None] if t.dim() == 3 else t[None, None]
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x[0] if t.dim() == 3 else x[0, 0]


def _affine(x, y):
    """Least-squares [4, 3] map from colours x [N, 3] (plus 1) to colours y [N, 3], with a little ridge: a
    plain material (one colour) gives its mean look."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    reg = 1e-3 * len(x) * torch.eye(4, dtype=x.dtype)
    reg[3, 3] = 0.0
    return torch.linalg.solve(x.T @ x + reg, x.T @ y)


class Run:
    def __init__(self, job, out_dir, emit, cancelled=lambda: False, warnings=(), memory_cls=LatentMemory):
        # memory_cls lets the bench run baselines (other memories with the same API) through this same loop
        self.job, self.out_dir, self.emit, self.cancelled = job, out_dir, emit, cancelled
        self.memory_cls = memory_cls
        self.warnings = list(warnings)
        self.resumed = 0
        self.W, self.H = job["width"], job["height"]
        self.device, self.device_note = resolve_device(job.get("device", "AUTO"))
        self.model = models.load(job["model"], self.device, emit=emit)
        self.cell = self.model.cell
        self.h, self.w = -(-self.H // self.cell), -(-self.W // self.cell)
        self.frames = {f["frame"]: f for f in job["frames"]}
        self.order = [f["frame"] for f in job["frames"]]
        seg_len = job["segment_length"]
        if hasattr(self.model, "plan"):  # segment-level models: their own segment rule and GPU memory check
            seg_len, notes = self.model.plan(self.W, self.H, seg_len, len(self.order))
            self.warnings += notes
        self.segments = protocol.segments(self.order, seg_len)
        self.frames_dir = os.path.join(out_dir, "frames")
        self.state_dir = os.path.join(out_dir, STATE_DIR)
        self.known_ids = {0} | {o["id"] for o in job.get("objects") or []}

    def generator(self, n):
        """Noise for the work that starts at frame n, from (seed, n) alone: a resumed run draws exactly what
        a run that never stopped would have drawn there."""
        return torch.Generator().manual_seed((int(self.job.get("seed", 0)) * 1_000_003 + n) % 2 ** 63)

    def camera(self, n):
        f = self.frames[n]
        return (torch.tensor(f["K"], dtype=torch.float64), torch.tensor(f["cam_to_world"], dtype=torch.float64))

    def scene_depth(self, n):
        f = self.frames[n]
        if self.job["depth_source"] != "SCENE":
            return None
        return load_depth(f["depth"], self.W, self.H, f"the depth of frame {n}")

    def poses(self, n):
        """Object id -> object-to-world matrix on frame n (moving objects only)."""
        objs = self.frames[n].get("objects") or {}
        return {int(k): torch.tensor(m, dtype=torch.float64) for k, m in objs.items()}

    def object_ids(self, n):
        """[H, W] object id of every pixel on frame n (0 = static world), or None without moving objects."""
        f = self.frames[n]
        if not self.job.get("objects"):
            return None
        if getattr(self, "_ids", (None,))[0] == n:
            return self._ids[1]  # the read and the per-pixel composition both need this frame's mask
        ids = load_array(f["ids"], self.W, self.H, f"the object id mask of frame {n}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise JobError(f"the object id mask of frame {n} must hold integers, not {ids.dtype}")
        unknown = set(np.unique(ids).tolist()) - self.known_ids
        if unknown:
            raise JobError(f"the object id mask of frame {n} holds ids the job does not list: {sorted(unknown)}")
        self._ids = (n, torch.from_numpy(ids.astype(np.int64)))
        return self._ids[1]

    def light_as_given(self, n):
        """[H, W] light ratio of frame n as the job gives it, checked, or None."""
        path = self.frames[n].get("light")
        if path is None:
            return None
        g = load_array(path, self.W, self.H, f"the light map of frame {n}").astype(np.float32)
        if not np.all(np.isfinite(g)) or (g < 0).any():
            raise JobError(f"the light map of frame {n} holds NaN, infinite or negative values: {path}")
        return torch.from_numpy(g)

    def light(self, n):
        """[H, W] light ratio of frame n (how moving objects change the light there), or None."""
        g = self.light_as_given(n)
        if g is None:
            return None
        ids = self.object_ids(n)
        if ids is not None:
            # an object's light is relative to a level of the scene's; relative to its own light on the
            # reference instead, its stored look stays close to the reference's (no clipping, same encoding)
            for oid, scale in self.object_light_levels().items():
                g = torch.where(ids == oid, g * scale, g)
            g = self.soften_edges(g, ids)
        return g

    @staticmethod
    def soften_edges(g, ids):
        """On moving objects, each pixel's light averaged with its same-object neighbours (3 x 3). Where two faces
        meet, a drawn pixel may come from the face beside the one the frame puts there; with the two lights
        averaged at the edge it keeps about its own light (sharp, such pixels lost 1.7 dB near the reference)."""
        obj = (ids != 0).float()[None, None]
        total = torch.zeros_like(g)
        count = torch.zeros_like(g)
        pad = torch.nn.functional.pad
        gp = pad(g[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        ip = pad(ids[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
        H, W = g.shape
        for dy in range(3):
            for dx in range(3):
                same = (ip[dy:dy + H, dx:dx + W] == ids.float()).float()
                total += gp[dy:dy + H, dx:dx + W] * same
                count += same
        return torch.where(obj[0, 0] > 0, total / count.clamp_min(1.0), g)

    def object_light_levels(self):
        if getattr(self, "_levels", None) is None:
            self._levels = {}
            ref = self.job["reference"]["frame"]
            g = self.light_as_given(ref).numpy()
            ids = self.object_ids(ref)
            for oid in self.known_ids - {0}:
                vals = g[(ids == oid).numpy()]
                vals = vals[vals > 0]
                self._levels[oid] = 1.0 / float(np.median(vals)) if vals.size else 1.0
        return self._levels

    def relit(self, image, n, inverse=False):
        """Frame n's light applied to (or, inverse, taken out of) an image of the memory's unchanging light.
        The ratio is one of linear light, so in display values it is a power of it (sRGB-like gamma)."""
        g = self.light(n)
        if g is None:
            return image
        H, W = image.shape[-2:]
        g = pad_to_cells(g, self.cell)[:H, :W].clamp(0.02, 50.0) ** (1.0 / GAMMA)
        g = g.to(image.device, image.dtype)
        return (image / g if inverse else image * g).clamp(0.0, 1.0)

    def albedo(self, n):
        """[3, H, W] surface colour (display values 0..1) of frame n's moving objects from their materials, or None."""
        path = self.frames[n].get("albedo")
        if path is None:
            return None
        try:
            a = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise JobError(f"the surface colour map of frame {n} cannot be read ({e}): {path}") from None
        if a.shape != (self.H, self.W, 3) or a.dtype != np.uint8:
            raise JobError(f"the surface colour map of frame {n} must be {self.W}x{self.H}x3 uint8, "
                           f"not {'x'.join(map(str, a.shape[1::-1] + a.shape[2:]))} {a.dtype}: {path}")
        return torch.from_numpy(a).permute(2, 0, 1).float() / 255.0

    def colour_maps(self):
        """Per moving object with a baked material, how the material's colours look in the reference (light
        taken out): an affine map in linear light, fitted on the object's pixels in the reference (its outline
        left out). An object the reference does not show (a car that drives in later) takes the map of all the
        objects it does show, or, with none, the material's own colours."""
        if getattr(self, "_colour_maps", None) is None:
            self._colour_maps = {}
            n = self.job["reference"]["frame"]
            alb = self.albedo(n)
            if alb is None:
                return self._colour_maps
            ref = self.relit(load_image(self.job["reference"]["image"], self.W, self.H), n, inverse=True)
            ids = self.object_ids(n)
            pooled = []
            for oid in sorted(self.known_ids - {0}):
                mine = (ids == oid) & (alb.sum(0) > 0)  # its pixels with a baked material
                # outline pixels mix the object with what is behind it
                inner = mine.clone()
                inner[1:] &= mine[:-1]
                inner[:-1] &= mine[1:]
                inner[:, 1:] &= mine[:, :-1]
                inner[:, :-1] &= mine[:, 1:]
                if inner.sum() < 16:
                    continue
                pooled.append((alb[:, inner].T.double() ** GAMMA, ref[:, inner].T.double() ** GAMMA))
                self._colour_maps[oid] = _affine(*pooled[-1])
            fallback = _affine(torch.cat([x for x, _ in pooled]), torch.cat([y for _, y in pooled])) if pooled \
                else torch.cat([torch.eye(3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)])
            for oid in self.known_ids - {0} - set(self._colour_maps):
                self._colour_maps[oid] = fallback
        return self._colour_maps

    def from_materials(self, n, pixel_ids):
        """A pixel_prefill for frame n: moving objects' pixels that nothing drew take their material's colour
        as the reference shows it (never-seen faces keep their pattern), or None."""
        maps = self.colour_maps() if pixel_ids is not None else {}
        if not maps:
            return None
        alb = pad_to_cells(self.albedo(n), self.cell)
        baked = alb.sum(0) > 0
        lin = torch.cat([alb.double() ** GAMMA, torch.ones(1, *alb.shape[1:], dtype=torch.float64)], 0)

        def prefill(drawn, covered):
            drawn, before = drawn.clone(), covered
            covered = covered.clone()
            for oid, m in maps.items():
                todo = (pixel_ids == oid) & ~covered & baked  # objects without a baked material: the fill's
                if todo.any():
                    colour = (lin[:, todo].T @ m).clamp(0.0, 1.0) ** (1.0 / GAMMA)
                    drawn[:, todo] = colour.T.to(drawn.dtype)
                    covered |= todo
            self._from_material = covered & ~before
            return drawn, covered
        return prefill

    def material_cells(self):
        """Cells the last fill painted mostly from materials. They stay out of the memory: painted again on every
        frame they come out as sharp as that frame sees them (stored, a face first painted at a grazing angle
        stays blurred when it turns to the camera), and the same, since materials do not change."""
        px = getattr(self, "_from_material", None)
        self._from_material = None
        if px is None:
            return None
        c = self.cell
        return px.float().reshape(self.h, c, self.w, c).mean((1, 3)) >= 0.5

    def to_cells(self, depth, ids=None):
        """Per-cell depth (sky placed at `far`), per-cell object ids (with an id mask), and the cells that
        straddle an edge. Generated frames leave those out of the memory: what a fill painted across an
        outline is not worth keeping (stored as layers it measured more flicker: loop 1.55x -> 2.14x)."""
        depth = pad_to_cells(depth, self.cell)
        ids = None if ids is None else pad_to_cells(ids.float(), self.cell).long()
        d = cell_depth(depth, self.cell, ids)
        d, cell_ids = d if ids is not None else (d, None)
        edges = cell_edges(depth, self.cell, ids)
        return torch.where(torch.isfinite(d), d, torch.full_like(d, self.far)), cell_ids, edges

    def seed_memory(self):
        ref = self.job["reference"]
        image = load_image(ref["image"], self.W, self.H)
        src = self.job["depth_source"]
        if src == "SCENE":
            depth = self.scene_depth(ref["frame"])
        elif src == "IMAGE":
            depth = load_depth(ref["depth"], self.W, self.H, "the reference depth map")
        else:
            depth = torch.full((self.H, self.W), float(self.job.get("plane_distance", 5.0)))
        finite = depth[torch.isfinite(depth)]
        # sky and other misses are placed far away so they still enter the memory and move like sky
        self.far = float(finite.max()) * 20.0 if finite.numel() else 1000.0
        # the memory keeps the scene as lit without its moving objects' shading and shadows
        latent = self.model.encode(self.relit(pad_to_cells(image, self.cell), ref["frame"], inverse=True).to(self.device))
        memory = SceneMemory(self.model.channels, self.cell, device=self.device, bank_cls=self.memory_cls)
        K, c2w = self.camera(ref["frame"])
        # the reference is stored whole, outline cells too, each side of an outline as its own layer: it is
        # what the user gave, and reading the memory back at its camera must give it back exactly
        cells, cell_ids, _ = self.to_cells(depth, self.object_ids(ref["frame"]))
        memory.write(latent, cells, K, c2w, ids=cell_ids, poses=self.poses(ref["frame"]),
                     pixel_depth=self.pixel_depth(depth), pixel_ids=self.pixel_ids(ref["frame"]))
        return memory

    def pixel_depth(self, depth):
        """[H, W] scene depth padded to whole cells, sky placed at `far` like the cells' depth."""
        depth = pad_to_cells(depth, self.cell)
        return torch.where(torch.isfinite(depth), depth, torch.full_like(depth, self.far))

    def pixel_ids(self, n):
        """Frame n's object id mask padded to whole cells, or None without moving objects."""
        ids = self.object_ids(n)
        return None if ids is None else pad_to_cells(ids.float(), self.cell).long()

    def read(self, memory, n):
        """Memory read at frame n's camera, with what the scene says about the frame's cells.

        Returns (latent, hole, read depth, cells, ids, edges, poses, K, c2w, pixel depth): `cells` is where
        new content goes in depth, `edges` the cells the memory leaves out, pixel depth the scene's (or None)."""
        K, c2w = self.camera(n)
        poses, depth = self.poses(n), self.scene_depth(n)
        cells = cell_ids = None
        edges = torch.zeros(self.h, self.w, dtype=torch.bool)
        if depth is not None:
            cells, cell_ids, edges = self.to_cells(depth, self.object_ids(n))
            depth = self.pixel_depth(depth)
        latent, hole, mdepth = memory.read(K, c2w, self.h, self.w, poses=poses, ids=cell_ids)
        if cells is None:
            # no scene geometry: new content sits at the depth the memory suggests around it
            known = torch.isfinite(mdepth)
            cells = models.push_pull(torch.log(mdepth.clamp_min(1e-6))[None], ~known)[0].exp() if known.any() \
                else torch.full_like(mdepth, float(self.job.get("plane_distance", 5.0)))
        return latent, hole, mdepth, cells, cell_ids, edges, poses, K, c2w, depth

    def frame(self, memory, n):
        latent, hole, mdepth, cells, cell_ids, edges, poses, K, c2w, pixel_depth = self.read(memory, n)
        target = None
        if self.job["depth_source"] == "SCENE":
            target = torch.where(cells >= self.far, torch.full_like(cells, float("inf")), cells)
        splats = self.context(memory) if self.model.uses_context else None
        extra = {}
        if splats is not None:
            extra = {"context": splats, "pixel_ids": self.pixel_ids(n)}
        fill_extra = dict(extra)
        if extra and pixel_depth is not None and self.job["depth_source"] == "SCENE":
            fill_extra["pixel_target"] = torch.where(pixel_depth >= self.far, torch.full_like(pixel_depth, float("inf")),
                                                     pixel_depth)
            prefill = self.from_materials(n, extra["pixel_ids"])
            if prefill is not None:
                fill_extra["pixel_prefill"] = prefill
        full = self.model.fill(latent, hole, mdepth, self.generator(n), target_depth=target, ids=cell_ids, **fill_extra)
        keep = hole & ~edges
        painted = self.material_cells()
        if painted is not None:
            keep &= ~painted.to(keep.device)
        if hole.any():
            memory.write(full, cells, K, c2w, mask=keep, ids=cell_ids, poses=poses, pixel_depth=pixel_depth,
                         pixel_ids=self.pixel_ids(n))
            if extra:
                # the frame shows what the memory now holds, drawn as any later read of it will be: coming
                # back to this pose gives this frame again
                again, still, mdepth = memory.read(K, c2w, self.h, self.w, poses=poses, ids=cell_ids)
                full = torch.where(still[None], full, again.to(full.dtype))
                extra["context"] = self.context(memory)
        # splats keep each pixel to its own bank (static world or moving object) by the frame's id mask
        image = self.model.decode(full, getattr(memory, "last_read_geometry", None), mdepth, **extra)
        image = self.relit(image[:, :self.H, :self.W], n)
        if n == self.job["reference"]["frame"]:
            # the user's image on its own frame, not the model's rendition of it
            image = load_image(self.job["reference"]["image"], self.W, self.H)
        save_png(image, os.path.join(self.frames_dir, protocol.frame_filename(n)))

    @staticmethod
    def context(memory):
        """The last read's splats, from memories that keep them (the bench's baselines do not)."""
        get = getattr(memory, "last_read_context", None)
        return get() if get is not None else None

    def per_frame(self, memory, seg):
        """Frame models: read, fill, write and decode one frame at a time. Yields each frame once saved."""
        for n in seg:
            if self.cancelled():
                raise Cancelled()
            self.frame(memory, n)
            yield n

    def segment(self, memory, i, seg, finished):
        """Segment-level models (video diffusion): one memory read per latent frame, the whole segment generated
        jointly, its new latents written back to the memory before anything is decoded. Yields each frame once
        saved; between denoising steps it checks for a cancel and reports progress with `step` and `steps`."""
        if self.cancelled():
            raise Cancelled()
        t0, total = time.perf_counter(), len(self.order)
        read_frames = self.model.latent_frames(seg)
        reads = [self.read(memory, n) for n in read_frames]

        def step(s, steps):
            if self.cancelled():
                raise Cancelled()
            spent = time.perf_counter() - t0
            eta = spent / (s / steps) * (total - finished) / len(seg) - spent if s else 0.0
            self.emit("progress", segment=i, segments=len(self.segments), frame=seg[0], done=finished, total=total,
                      eta_s=round(max(eta, 0.0), 2), step=s, steps=steps)

        latents = self.model.generate([r[0] for r in reads], [r[1] for r in reads], prompt=self.job.get("prompt", ""),
                                      negative_prompt=self.job.get("negative_prompt", ""),
                                      generator=self.generator(seg[0]), step=step)
        for n, (_, hole, _, cells, cell_ids, edges, poses, K, c2w, pixel_depth), latent in zip(read_frames, reads, latents):
            if hole.any():
                memory.write(latent, cells, K, c2w, mask=hole & ~edges, ids=cell_ids, poses=poses,
                             pixel_depth=pixel_depth, pixel_ids=self.pixel_ids(n))
        for n, image in zip(seg, self.model.decode_frames(latents, len(seg))):
            save_png(self.relit(image[:, :self.H, :self.W], n), os.path.join(self.frames_dir, protocol.frame_filename(n)))
            yield n

    def resume_point(self, fingerprint):
        """Segments already finished by an earlier run of this same job, with the memory they left."""
        prog = os.path.join(self.state_dir, "progress.json")
        try:
            with open(prog, encoding="utf-8") as f:
                state = json.load(f)
            if state.get("fingerprint") != fingerprint:
                return 0, None, []
            done = int(state["segments_done"])
            for seg in self.segments[:done]:
                for n in seg:
                    if not os.path.isfile(os.path.join(self.frames_dir, protocol.frame_filename(n))):
                        return 0, None, []
            memory = SceneMemory.load(os.path.join(self.state_dir, "memory.safetensors"), device=self.device,
                                      bank_cls=self.memory_cls, object_ids=sorted(self.known_ids - {0}))
            self.far = float(state["far"])
            return done, memory, state["stats"][:done]
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return 0, None, []

    def run(self):
        t_start = time.perf_counter()
        # by the model that really runs: a resumed "builtin" job must not mix two different default models
        fingerprint = job_fingerprint(dict(self.job, model=self.model.name))
        os.makedirs(self.frames_dir, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)
        notices = self.warnings + ([self.device_note] if self.device_note else [])
        self.emit("hello", protocol=protocol.PROTOCOL_VERSION, device=self.device, model=self.job["model"],
                  runs=self.model.name,
                  notices=notices, segments=len(self.segments), frames=len(self.order))
        done, memory, stats = self.resume_point(fingerprint)
        self.resumed = done
        if memory is None:
            memory = self.seed_memory()
        else:
            for i, seg in enumerate(self.segments[:done]):
                self.emit("segment_done", segment=i, frames=[seg[0], seg[-1]], resumed=True,
                          files=[os.path.join("frames", protocol.frame_filename(n)) for n in seg])
        total, finished = len(self.order), sum(len(s) for s in self.segments[:done])
        gen_time, gen_frames = 0.0, 0
        for i in range(done, len(self.segments)):
            seg = self.segments[i]
            t0 = time.perf_counter()
            if hasattr(memory, "begin_segment"):
                memory.begin_segment()
            segmented = getattr(self.model, "generates_segments", False)
            for n in (self.segment(memory, i, seg, finished) if segmented else self.per_frame(memory, seg)):
                finished += 1
                elapsed = gen_time + time.perf_counter() - t0
                rate = elapsed / (gen_frames + seg.index(n) + 1)
                self.emit("progress", segment=i, segments=len(self.segments), frame=n, done=finished,
                          total=total, eta_s=round(rate * (total - finished), 2))
            seconds = time.perf_counter() - t0
            gen_time, gen_frames = gen_time + seconds, gen_frames + len(seg)
            stats.append({"segment": i, "frames": [seg[0], seg[-1]], "seconds": round(seconds, 4),
                          "seconds_per_frame": round(seconds / len(seg), 4),
                          "memory_bytes": memory.nbytes(), "memory_cells": len(memory)})
            memory.save(os.path.join(self.state_dir, "memory.safetensors"))
            write_json({"fingerprint": fingerprint, "segments_done": i + 1, "far": self.far, "stats": stats},
                       os.path.join(self.state_dir, "progress.json"))
            self.write_report(stats, fingerprint, time.perf_counter() - t_start)
            self.emit("segment_done", segment=i, frames=[seg[0], seg[-1]], seconds=round(seconds, 4),
                      memory_bytes=memory.nbytes(),
                      files=[os.path.join("frames", protocol.frame_filename(n)) for n in seg])
        report = self.write_report(stats, fingerprint, time.perf_counter() - t_start)
        self.emit("done", stats={k: report[k] for k in ("frames", "segments", "seconds", "memory_bytes", "resumed_segments")})
        return report

    def write_report(self, stats, fingerprint, seconds):
        report = {
            "fingerprint": fingerprint, "model": self.job["model"], "runs": self.model.name, "device": self.device,
            "width": self.W, "height": self.H, "latent": [self.model.channels, self.h, self.w],
            "frames": sum(len(seg) for seg in self.segments[:len(stats)]),
            "segments": len(stats), "seconds": round(seconds, 4),
            "memory_bytes": stats[-1]["memory_bytes"] if stats else 0,
            "resumed_segments": self.resumed,
            "per_segment": stats,
        }
        write_json(report, os.path.join(self.out_dir, "run.json"))
        return report


def run_job(job_path, emit, cancelled=lambda: False):
    job, warnings = protocol.load_job(job_path)
    return Run(job, os.path.dirname(os.path.abspath(job_path)), emit, cancelled, warnings).run()
