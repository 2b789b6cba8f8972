"""What a run leaves in its job folder: frames (PNG), the resume state (state/progress.json and the memory) and
the report (run.json). Every file is written atomically, so a crash never leaves half a file under its name."""
import hashlib
import json
import os
import queue
import sys
import threading
from typing import Optional

import numpy as np
import torch
from PIL import Image

from . import protocol
from .channels import CHANNELS
from .files import atomic_write, write_json
from .runstate import MEMORY, STATE_DIR, digest, memory_files


def save_png(image: torch.Tensor, path: str) -> None:
    """[3, H, W] in 0..1 as an 8-bit PNG, written atomically."""
    write_png(to_rgb8(image), path)


def to_rgb8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in 0..1 -> [H, W, 3] uint8, rounded."""
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def write_png(arr: np.ndarray, path: str) -> None:
    # compression level 3: a tenth larger than the default level 6 and much faster
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", compress_level=3))


class FrameWriter:
    """PNGs written on a thread of their own, so the next frame's work does not wait on compression (zlib lets go
    of the interpreter while it works). At most `queued` frames wait; `flush` returns once every frame handed over
    is on disk, and raises what a write raised (a full disk)."""

    def __init__(self, queued: int = 2):
        self._queue = queue.Queue(maxsize=queued)
        self._error = None
        self._thread = None

    def put(self, image: torch.Tensor, path: str) -> None:
        """[3, H, W] in 0..1, written to `path` as soon as the thread gets to it."""
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="frame-writer", daemon=True)
            self._thread.start()
        self._queue.put((to_rgb8(image), path))

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Wait for the frames handed over, whatever happened to them (a run that stops leaves no file half
        written behind); what a write raised is dropped (the run is already stopping for another reason)."""
        self._queue.join()
        self._error = None

    def _raise(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self):
        while True:
            arr, path = self._queue.get()
            try:
                if self._error is None:  # after a failure, the rest is dropped: the run stops at the next flush
                    write_png(arr, path)
            except Exception as e:  # handed to the loop's thread, which reports it
                self._error = e
            finally:
                self._queue.task_done()


class Fingerprint:
    """Hashes of everything that decides the frames, one after each segment: the job's fixed part (model, seed,
    size, depth source and distances, moving objects, the reference image and its frame's camera and files, the
    scene depths that scale a depth estimated from the image) chained with each
    segment's frames (cameras, object transforms, their files) in order. A run continues an earlier one when the
    hash after the segments it finished is the same: what was generated is what this job generates there,
    whatever comes after (a streamed job's later frames are not known when it resumes)."""

    def __init__(self, job: protocol.Job, reference: protocol.Frame):
        keep = {k: getattr(job, k) for k in ("model", "seed", "segment_length", "width", "height", "depth_source",
                                             "plane_distance", "monocular_distance", "prompt", "negative_prompt")
                if getattr(job, k) is not None}
        keep["objects"] = [{"id": o.id, "name": o.name} for o in job.objects] if job.objects else None
        keep["reference"] = _frame_entry(reference)
        views = [r.view for r in job.references if r.view is not None]
        if len(job.references) > 1 or views:
            keep["references"] = [{"frame": r.frame, "view": None if r.view is None else _frame_entry(r.view),
                                   **({"object": r.object} if r.object is not None else {})}
                                  for r in job.references]
        if job.parts:
            keep["parts"] = job.parts
        if job.start is not None:  # a shot that starts from another's memory: that memory decides its frames
            keep["start"] = start_digest(job)
        h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode())
        paths = [p for r in job.references for p in (r.image, r.depth)] + list(_frame_files(reference))
        paths += [r.scene_depth for r in job.references if r.scene_depth]  # MONOCULAR only: older runs still resume
        for p in paths + [p for v in views for p in _frame_files(v)]:
            _hash_file(h, p)
        self.links = [h.hexdigest()]

    def after(self, segments: list) -> str:
        """The hash after `segments` (lists of protocol.Frame, the job's first segments in order)."""
        while len(self.links) <= len(segments):
            h = hashlib.sha256(self.links[-1].encode())
            frames = segments[len(self.links) - 1]
            h.update(json.dumps([_frame_entry(f) for f in frames], sort_keys=True).encode())
            for f in frames:
                for p in _frame_files(f):
                    _hash_file(h, p)
            self.links.append(h.hexdigest())
        return self.links[len(segments)]


def _frame_entry(f: protocol.Frame) -> dict:
    return {"frame": f.frame, "K": f.K, "cam_to_world": f.cam_to_world,
            "objects": None if f.objects is None else {str(k): v for k, v in f.objects.items()}}


def _frame_files(f: protocol.Frame) -> tuple:
    return tuple(getattr(f.maps, c.name) for c in CHANNELS)


def _hash_file(h, path: Optional[str]) -> None:
    h.update(b"-" if not path else b"+")
    if path:
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())


def peak_rss() -> Optional[int]:
    """Bytes of RAM this process has held at most so far, or None where the platform does not say."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kilobytes


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
        self.writer = FrameWriter()

    def create(self):
        os.makedirs(self.frames_dir, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)

    def frame_path(self, n: int) -> str:
        return os.path.join(self.frames_dir, protocol.frame_filename(n))

    def frame_files(self, seg: list) -> list:
        """The segment's frames as the protocol names them (relative to the job folder)."""
        return [os.path.join("frames", protocol.frame_filename(n)) for n in seg]

    def save_frame(self, image: torch.Tensor, n: int) -> None:
        """Frame n's PNG, written on the writer thread: `flush` before anything says it is on disk."""
        self.writer.put(image, self.frame_path(n))

    def flush(self) -> None:
        """Wait until every frame handed to save_frame is on disk."""
        self.writer.flush()

    def close(self) -> None:
        """Wait for the frames handed to save_frame, without raising (a run that stops for another reason)."""
        self.writer.close()

    def saved_state(self) -> Optional[dict]:
        """state/progress.json as an earlier run left it, or None."""
        try:
            with open(self.progress_path, encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) else None
        except (OSError, ValueError):
            return None

    def progress(self) -> Optional[tuple]:
        """(segments done, their fingerprint, far, stats) of an earlier run in this folder whose saved memory is
        the one its last finished segment left, or None (no state, the memory was saved without its progress,
        the state is unreadable)."""
        state = self.saved_state()
        try:
            if state is None:
                return None
            if "memory" in state and state["memory"] != digest(memory_files(self.memory_path)):
                return None
            done = int(state["segments_done"])
            return done, str(state["fingerprint"]), float(state["far"]), list(state["stats"][:done])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def has_frames(self, segments: list) -> bool:
        """Every frame of `segments` (lists of frame numbers) is on disk."""
        return all(os.path.isfile(self.frame_path(n)) for seg in segments for n in seg)

    def save_progress(self, fingerprint: str, done: int, far: float, stats: list, start: Optional[str] = None) -> None:
        """After a segment and its memory are saved: how far the run got, with the digest of that memory and of
        the memory the run started from (None: its references)."""
        write_json({"fingerprint": fingerprint, "segments_done": done, "far": far, "stats": stats,
                    "memory": digest(memory_files(self.memory_path)), "start": start}, self.progress_path)

    def write_report(self, report: dict) -> None:
        write_json(report, os.path.join(self.out_dir, "run.json"))
