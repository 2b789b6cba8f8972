"""What a run leaves in its job folder: frames (PNG), the resume state (state/progress.json and the memory) and
the report (run.json). Every file is written atomically, so a crash never leaves half a file under its name."""
import hashlib
import json
import os
from typing import Optional

import numpy as np
import torch
from PIL import Image

from . import protocol
from .files import atomic_write, write_json
from .runstate import MEMORY, STATE_DIR, digest, memory_files


def save_png(image: torch.Tensor, path: str) -> None:
    """[3, H, W] in 0..1 as an 8-bit PNG, written atomically."""
    arr = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    # compression level 3: a tenth larger than the default level 6 and much faster
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", compress_level=3))


def job_fingerprint(job: protocol.Job) -> str:
    """Hash of everything that decides the frames (a protocol.Job): a changed job must not resume an old run."""
    h = hashlib.sha256()
    keep = {k: getattr(job, k) for k in ("model", "seed", "segment_length", "width", "height", "depth_source",
                                         "plane_distance", "prompt", "negative_prompt") if getattr(job, k) is not None}
    keep["frames"] = [{"frame": f.frame, "K": f.K, "cam_to_world": f.cam_to_world,
                       "objects": None if f.objects is None else {str(k): v for k, v in f.objects.items()}}
                      for f in job.frames]
    keep["objects"] = [{"id": o.id, "name": o.name} for o in job.objects] if job.objects else None
    keep["reference_frame"] = job.reference.frame
    views = [r.view for r in job.references if r.view is not None]
    if len(job.references) > 1 or views:  # left out for one reference, so older runs of such jobs still resume
        keep["references"] = [{"frame": r.frame, "view": None if r.view is None else {
            "K": r.view.K, "cam_to_world": r.view.cam_to_world,
            "objects": None if r.view.objects is None else {str(k): v for k, v in r.view.objects.items()}}}
            for r in job.references]
    if job.start is not None:
        keep["start"] = start_digest(job)
    h.update(json.dumps(keep, sort_keys=True).encode())
    paths = [p for r in job.references for p in (r.image, r.depth)]
    paths += [p for f in job.frames for p in (f.depth, f.ids, f.light, f.albedo, f.parts)]
    paths += [p for v in views for p in (v.depth, v.ids, v.light, v.albedo, v.parts)]
    for p in paths:
        if p:
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def start_digest(job: protocol.Job) -> Optional[str]:
    """Digest of the memory a shot starts from (every bank file), or None where it starts from its references."""
    return None if job.start is None else digest(memory_files(job.start.memory))


class RunFolder:
    """The files of one run in its job folder."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.frames_dir = os.path.join(out_dir, "frames")
        self.state_dir = os.path.join(out_dir, STATE_DIR)
        self.memory_path = os.path.join(self.state_dir, MEMORY)
        self.progress_path = os.path.join(self.state_dir, "progress.json")

    def create(self):
        os.makedirs(self.frames_dir, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)

    def frame_path(self, n: int) -> str:
        return os.path.join(self.frames_dir, protocol.frame_filename(n))

    def frame_files(self, seg: list) -> list:
        """The segment's frames as the protocol names them (relative to the job folder)."""
        return [os.path.join("frames", protocol.frame_filename(n)) for n in seg]

    def save_frame(self, image: torch.Tensor, n: int) -> None:
        save_png(image, self.frame_path(n))

    def saved_state(self) -> Optional[dict]:
        """state/progress.json as an earlier run left it, or None."""
        try:
            with open(self.progress_path, encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) else None
        except (OSError, ValueError):
            return None

    def progress(self, fingerprint: str, segments: list) -> Optional[tuple]:
        """(segments done, far, stats) of an earlier run of this same job whose frames are all still there and
        whose saved memory is the one its last finished segment left, or None (the job changed, a frame is
        missing, the memory was saved without its progress, the state is unreadable)."""
        state = self.saved_state()
        try:
            if state is None or state.get("fingerprint") != fingerprint:
                return None
            if "memory" in state and state["memory"] != digest(memory_files(self.memory_path)):
                return None
            done = int(state["segments_done"])
            for seg in segments[:done]:
                for n in seg:
                    if not os.path.isfile(self.frame_path(n)):
                        return None
            return done, float(state["far"]), state["stats"][:done]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_progress(self, fingerprint: str, done: int, far: float, stats: list, start: Optional[str] = None) -> None:
        """After a segment and its memory are saved: how far the run got, with the digest of that memory and of
        the memory the run started from (None: its references)."""
        write_json({"fingerprint": fingerprint, "segments_done": done, "far": far, "stats": stats,
                    "memory": digest(memory_files(self.memory_path)), "start": start}, self.progress_path)

    def write_report(self, report: dict) -> None:
        write_json(report, os.path.join(self.out_dir, "run.json"))
