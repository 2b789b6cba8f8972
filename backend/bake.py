"""Baking a finished run's memory into textures: for every texel of an object's UV map, what the memory holds at
that texel's surface address, drawn with the run's own model; texels nothing holds filled from the nearest known
texel, with a mask of them.

The add-on writes the request (bakefile.py: per object its texels, their surface addresses in the object's memory
bank and the surface's outward normals); this reads the run's memory and model, draws, and writes per object a
colour PNG and a mask PNG. LOOK is the memory's own light: the still world as the flythrough showed it, moving
objects without the light the frames multiply back in (their moving shadows). ALBEDO divides that by the still
world's light at each texel, as the synthesis model does, with the all-around light weighed as the references show
it. Where several stored cells hold one point (a surface seen, and filled again, by several frames), the newest
wins: it is the one the flythrough showed last.
"""
import os
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import models, protocol, runstate
from .bakefile import RESULT, BakeObject, BakeRequest, load_request, result_files
from .files import atomic_write, write_json
from .memory import SceneMemory
from .splats import canvas_fill, canvas_pixels, render_splats
from .state import to_rgb8, write_png

CHUNK = 1 << 16  # texels read and drawn at once (a read's candidate pairs grow with them)


class Cancelled(Exception):
    pass


def check_run(folder: str) -> None:
    """JobError (one line) unless the job folder holds a finished run whose saved memory is the one it left."""
    run = runstate.run_state(folder, check_memory=True)
    if run is None or not run.started:
        raise protocol.JobError(f"there is no finished run in {folder}: generate the flythrough first")
    if not run.finished:
        raise protocol.JobError(f"the run in {folder} is not finished ({run.done} of {len(run.frames)} frames): "
                                f"generate again to finish it")
    if not run.memory_ok:
        raise protocol.JobError(f"the memory saved in {folder} is not the one its run left (it was stopped while "
                                f"saving): generate again")


class Baker:
    """One request against its run: the run's job, model (on `device`) and memory (on the CPU), loaded once."""

    def __init__(self, request: BakeRequest, emit: Callable, cancelled: Callable[[], bool] = lambda: False):
        self.request, self.emit, self.cancelled = request, emit, cancelled
        check_run(request.run)
        self.job, self.warnings = protocol.load_job(os.path.join(request.run, "job.json"))
        from .pipeline import resolve_device
        self.device, note = resolve_device(self.job.device)
        if note:
            self.warnings.append(note)
        self.ids = sorted(o.id for o in self.job.objects)
        for o in request.objects:
            if o.bank != 0 and o.bank not in self.ids:
                raise protocol.JobError(f"bake object '{o.name}' names memory bank {o.bank}, which the run does not "
                                        f"have (its moving objects: {self.ids or 'none'})")
        self.model = models.load(self.job.model, self.device, emit=emit)
        memory = os.path.join(request.run, runstate.STATE_DIR, runstate.MEMORY)
        try:
            self.memory = SceneMemory.load(memory, device="cpu", object_ids=self.ids)
        except (OSError, ValueError, KeyError) as e:
            raise protocol.JobError(f"the run's memory cannot be read ({e}): {memory}") from None
        if (self.memory.channels, self.memory.cell) != (self.model.channels, self.model.cell):
            raise protocol.JobError(f"the run's memory was not made by its model {self.model.name}: generate again")
        self._canvases = {}  # decoded canvases by content key: every object and chunk reads the same frames
        self.weight = None

    # -- drawing -----------------------------------------------------------------------------------
    def _canvas(self, cv):
        hit = self._canvases.get(cv.key)
        if hit is None:
            hit = self._canvases[cv.key] = self.model.canvas_patches(cv)
        return hit

    def draw(self, sp, n: int) -> tuple:
        """Splats of a points read (SceneMemory.read_points) drawn: (colours [3, n], covered [n]). The newest stored
        cell wins where several hold a point."""
        if hasattr(self.model, "canvas_patches"):  # learned codes: each cell's pixels from its decoded canvas
            patches, sp = canvas_pixels(sp, self._canvas)
        elif hasattr(self.model, "patches"):  # exact pixel cells
            patches = self.model.patches(sp)
        else:
            raise protocol.ModelError(f"model '{self.model.name}' cannot draw its memory at surface points")
        image, covered, _ = render_splats(patches, sp._replace(age=-sp.age.long()), 1, n)
        return image[:, 0], covered[0]

    def read(self, bank: int, points: torch.Tensor, normals: torch.Tensor, progress: Callable, sides: int = 2) -> tuple:
        """(colours [3, M], seen [M]) of the memory at `points` [M, 3] of bank `bank`, seen from the side of the
        outward `normals` [M, 3]; with `sides` 2, points nothing holds there are read from the other side (a thin
        surface, a plane seen from behind: one texture shows on both)."""
        m = points.shape[0]
        colour, seen = torch.zeros(3, m), torch.zeros(m, dtype=torch.bool)
        for side in (1.0, -1.0)[:sides]:
            todo = torch.nonzero(~seen).squeeze(1)
            for s in range(0, todo.numel(), CHUNK):
                if self.cancelled():
                    raise Cancelled()
                idx = todo[s:s + CHUNK]
                sp = self.memory.read_points(bank, points[idx], side * normals[idx])
                if sp is not None:
                    c, cov = self.draw(sp, idx.numel())
                    colour[:, idx[cov]] = c[:, cov]
                    seen[idx[cov]] = True
                progress(idx.numel() * (1.0 if sides == 1 else 0.75 if side > 0 else 0.25))
        return colour, seen

    # -- one object --------------------------------------------------------------------------------
    def load(self, o: BakeObject) -> tuple:
        """(texels [M] int64, points [M, 3] float32, normals [M, 3] float32, shade [M, 2] or None), checked."""
        def arr(path, what):
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise protocol.JobError(f"the {what} of bake object '{o.name}' cannot be read ({e}): {path}") from None
        texels, points, normals = arr(o.texels, "texels"), arr(o.points, "points"), arr(o.normals, "normals")
        m = texels.shape[0] if texels.ndim == 1 else -1
        if texels.ndim != 1 or texels.dtype.kind not in "iu" or (m and (texels.min() < 0
                                                                          or texels.max() >= o.width * o.height)):
            raise protocol.JobError(f"the texels of bake object '{o.name}' must be [M] integers inside its "
                                    f"{o.width}x{o.height} texture")
        for a, what in ((points, "points"), (normals, "normals")):
            if a.shape != (m, 3) or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise protocol.JobError(f"the {what} of bake object '{o.name}' must be [{m}, 3] finite numbers")
        shade = None
        if o.shade is not None:
            shade = arr(o.shade, "shading map")
            if shade.shape != (m, 2) or shade.dtype.kind != "f" or not np.isfinite(shade).all() or (shade < 0).any():
                raise protocol.JobError(f"the shading map of bake object '{o.name}' must be [{m}, 2] numbers >= 0")
        return (torch.from_numpy(texels.astype(np.int64)), torch.from_numpy(points.astype(np.float32)),
                torch.from_numpy(normals.astype(np.float32)),
                None if shade is None else torch.from_numpy(shade.astype(np.float32)))

    def albedo(self, colour: torch.Tensor, shade: torch.Tensor) -> torch.Tensor:
        """The memory's colours [3, M] with the still world's light at each texel (shade [M, 2]: direct and all
        around) divided out, weighed as the synthesis model weighs it (imagine.light, ambient_weight)."""
        from .models.synth.light import light
        if self.weight is None:
            self.weight = ambient_weight_of(self.job, self.model, self.request.run, self.device)
        return (colour / light(shade.T[:, None, :], self.weight)[0]).clamp(0, 1)

    def bake(self, i: int, o: BakeObject, progress: Callable) -> dict:
        """Object i's texture and mask written; what it holds (texels, seen, filled) returned."""
        texels, points, normals, shade = self.load(o)
        colour, seen = self.read(o.bank, points, normals, progress, o.sides)
        if shade is not None:
            colour = self.albedo(colour, shade)
        w, h = o.width, o.height
        image = torch.zeros(3, h * w)
        known = torch.zeros(h * w, dtype=torch.bool)
        image[:, texels[seen]] = colour[:, seen]
        known[texels[seen]] = True
        # every other texel (unseen surface, and outside the UV islands, where filtering and mipmaps reach) takes
        # the nearest known texel's colour
        filled = image.reshape(3, h, w)
        if bool(seen.any()):
            filled = canvas_fill(filled, known.reshape(h, w))
        mask = torch.zeros(h * w, dtype=torch.uint8)
        mask[texels[~seen]] = 255
        mask = mask.reshape(h, w)
        ow, oh = o.size or (w, h)
        if (ow, oh) != (w, h):  # a finer texture than the memory holds: the read, upsampled
            filled = F.interpolate(filled[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), size=(oh, ow), mode="nearest")[0, 0].to(torch.uint8)
        colour_rel, mask_rel = result_files(i)
        write_png(to_rgb8(filled), os.path.join(self.request.folder, colour_rel))
        atomic_write(os.path.join(self.request.folder, mask_rel),
                     lambda tmp: Image.fromarray(mask.numpy(), mode="L").save(tmp, format="PNG"))
        n = int(texels.numel())
        return {"name": o.name, "colour": colour_rel, "mask": mask_rel, "texels": n, "seen": int(seen.sum()),
                "filled": n - int(seen.sum())}

    def run(self) -> dict:
        req = self.request
        os.makedirs(os.path.join(req.folder, RESULT), exist_ok=True)
        self.emit("hello", protocol=protocol.PROTOCOL_VERSION, device=self.device, model=self.job.model,
                  runs=self.model.name, notices=self.warnings, objects=len(req.objects))
        sizes = []
        for o in req.objects:
            try:
                sizes.append(int(np.load(o.texels, mmap_mode="r").shape[0]))
            except (OSError, ValueError):
                sizes.append(0)  # load() says what is wrong with it
        total, done = max(sum(sizes), 1), [0.0]
        t0 = time.perf_counter()
        results = []
        for i, o in enumerate(req.objects):
            def progress(n, i=i, o=o):
                done[0] += n
                spent = time.perf_counter() - t0
                self.emit("progress", object=o.name, objects_done=i, objects=len(req.objects),
                          done=int(done[0]), total=total, eta_s=round(spent / done[0] * (total - done[0]), 2))
            results.append(self.bake(i, o, progress))
        report = {"mode": req.mode, "model": self.model.name, "seconds": round(time.perf_counter() - t0, 3),
                  "objects": results}
        write_json(report, os.path.join(req.folder, RESULT, "result.json"))
        self.emit("done", cancelled=False, stats={"objects": len(results), "seconds": report["seconds"],
                                                   "texels": sum(r["texels"] for r in results),
                                                   "seen": sum(r["seen"] for r in results)})
        return report


def ambient_weight_of(job: protocol.Job, model, folder: str, device: str) -> float:
    """How much the all-around light weighs against the direct light in the job's references (imagine's
    ambient_weight over the references as the memory stores them); JobError where they have no shading map."""
    from .models.synth.light import ambient_weight
    from .pipeline import Run
    exemplars = Run(job, model, folder, lambda *a, **k: None, device=device).exemplars()
    weight = ambient_weight(exemplars)
    if weight is None:
        raise protocol.JobError("ALBEDO needs the still world's light on the references, which this run did not "
                                "export (its model does not use the shading map): bake LOOK, or generate with the "
                                "Built-in model first")
    return weight


def bake_folder(folder: str, emit: Callable, cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Run the request in the bake folder `folder` (bakefile.REQUEST there)."""
    request = load_request(os.path.join(folder, "request.json"))
    return Baker(request, emit, cancelled).run()
