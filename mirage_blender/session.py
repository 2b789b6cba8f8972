"""One Generate: the job builder's steps, then the backend process (runner.py) watched until it ends,
its finished segments landed in the Sequencer (vse.py).

The same Session serves the modal operator (driven by a timer, UI stays live) and the synchronous
path of `blender -b` (timers never fire there), so both behave identically. Operators only read the
session's state (status, progress, error, ended, notices) and call tick, cancel and close.
"""
import json
import os
import time
from collections.abc import Iterator

from . import video, vse
from .backend import protocol
from .core.errors import InputError, sentence
from .job import JobBuilder
from .runner import Backend, backend_python

# A frame takes seconds on a CPU; minutes of silence mean the backend hangs (stopped, deadlocked, swapping)
DEFAULT_STALL_TIMEOUT = 300
# A cancelled backend stops between frames; one that has not stopped by then is killed
CANCEL_GRACE = 10


class Session:
    """One job: one shot of the scene (`shot` of the set `plan`, shots.py; by default the scene's first shot)
    exported, generated and landed in the Sequencer on `channel` (None: the first one free over the shot).
    `listeners` are called with every message the backend sends."""

    def __init__(self, context, python_pref: str = "", stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                 shot=None, plan=None, channel: int = None):
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
        self.progress = 0.0
        self.status = "Preparing"
        self.channel = channel
        self.segments_in_vse = 0
        self.video = None  # the flythrough.mp4 written when the run finished
        self.started = time.monotonic()
        self.listeners = []
        self.job = JobBuilder(self.scene, self.settings, self.notices, shot, plan)
        self._steps = None  # the preparation while it runs
        self.exported = False  # every frame is in the job folder
        self._export = (0.0, "")  # share of the whole run and status of the export, while it runs beside the backend
        self._generation = (0.0, "")  # the same of the backend's work

    @property
    def out(self) -> str:
        return self.job.out

    @property
    def tracked(self) -> list[str]:
        """Names of the moving objects, each with its own memory."""
        return self.job.tracked

    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None or self.cancelled

    # -- preparing the job folder ------------------------------------------------------------
    def prepare(self) -> Iterator:
        """Generator of the job builder's steps (job.Step): one material bake or one frame each, and the step
        after which the backend can start while the frames are still being exported."""
        self.python = backend_python(self.python_pref)
        for step in self.job.steps():
            self._export = (step.progress if step.progress is not None else self._export[0], step.status)
            self._show()
            yield step
        self.exported = True
        self._export = (0.1, "")

    def start(self) -> None:
        self.backend = Backend(self.python, self.job.job_path, os.path.join(self.out, "backend.log"),
                               follow=not self.exported)
        self._generation = (0.0, "Starting the backend")
        self._show()
        self.last_message = time.monotonic()

    def _show(self) -> None:
        """Progress and status of the export and the backend, which run side by side once the backend started."""
        (done, export), (generated, generation) = self._export, self._generation
        self.progress = done + generated
        if self.backend is None or not generation:
            self.status = export or generation
        else:
            self.status = generation + (f" ({export[0].lower() + export[1:]})" if export else "")

    # -- driving it ----------------------------------------------------------------------------
    def tick(self, budget: float = 0.05) -> list[dict]:
        """One timer tick of the UI: the backend's messages so far, handled and returned, then export steps for
        about `budget` seconds (at least one) while frames remain; the backend starts at the step that says the
        job can start. Never waits on the backend."""
        handled = self.poll() if self.backend is not None else []
        if self.finished and self._steps is not None:
            self._finish_export()
        if self.exported or self.ended:
            return handled
        if self.cancel_requested_at is not None:  # the backend was asked to stop: so is the export
            self._close_steps()
            return handled
        if self._steps is None:
            self._steps = self.prepare()
        deadline = time.monotonic() + budget
        while not self.ended:
            began = time.monotonic()
            try:
                step = next(self._steps)
            except StopIteration:
                self._steps = None
                if self.backend is None:
                    self.start()
                break
            if step.ready and self.backend is None:
                self.start()
            # no step that would end past the budget, judged by the last one (a frame's export takes tens of
            # milliseconds: a second one begun just before the deadline would double the tick)
            now = time.monotonic()
            if now + (now - began) >= deadline:
                break
        return handled

    def poll(self) -> list[dict]:
        """Handle the backend's messages that arrived so far, without waiting; returns them."""
        handled = []
        for msg in self.backend.poll():
            self.handle(msg)
            handled.append(msg)
            if self.ended:
                break
        self.supervise()
        return handled

    def run_blocking(self, stall_timeout: float = None) -> None:
        """The path for `blender -b` and scripts: no timers. The export runs step by step on this thread while
        the backend generates beside it (its messages handled between steps), then this waits on the backend."""
        if stall_timeout is not None:
            self.stall_timeout = stall_timeout
        try:
            self._steps = self.prepare()
            for step in self._steps:
                if step.ready and self.backend is None:
                    self.start()
                if self.backend is not None:
                    self.poll()
                if self.finished:
                    self._finish_export()
                    break
                if self.ended or self.cancel_requested_at is not None:
                    break
            self._close_steps()
            if self.backend is None and not self.ended:
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
        """Called on every tick: a backend that is alive but silent for too long is stopped, and so is one
        that did not stop in time after Cancel."""
        if self.backend is None or self.ended:
            return
        # while frames are still being exported, a quiet backend may be waiting for them
        if self.exported and self.stall_timeout and time.monotonic() - self.last_message > self.stall_timeout \
                and self.backend.proc.poll() is None:
            self.backend.kill()
            self.error = (f"The backend stopped responding for {self.stall_timeout:g} s and was stopped; "
                          f"finished segments are kept (details in {os.path.join(self.out, 'backend.log')})")
        elif self.cancel_requested_at is not None and time.monotonic() - self.cancel_requested_at > CANCEL_GRACE:
            self.backend.kill()

    def cancel(self) -> None:
        self.cancel_requested_at = time.monotonic()
        if self.backend is None:
            self.cancelled = True
        else:
            self.backend.cancel()

    def _finish_export(self) -> None:
        """The backend finished while the export had steps left: it had every frame, so what is left is the
        whole job.json (a folder that runs and resumes on its own, and that a shot's state is read from)."""
        for _ in self._steps:
            pass
        self._steps = None

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()  # an export stopped halfway puts the user's current frame back
            self._steps = None

    def close(self) -> None:
        """Stop whatever still runs: an export stopped halfway puts the user's current frame back; a
        backend gets a cancel, and is killed when it does not end within 10 s."""
        self._close_steps()
        if self.backend is not None:
            self.backend.cancel()
            try:
                self.backend.proc.wait(timeout=10)
            except Exception:
                self.backend.kill()
            self.backend.proc.wait()
            self.backend.close()
        if self.finished and self.settings.write_mp4 and self.video is None and self.error is None:
            self._write_video()

    def _write_video(self) -> None:
        """A finished run only (never a cancelled or failed one): its frames as flythrough.mp4 in its folder.
        The frames are the shot's: job.json may still be the streamed one, which lists none of them."""
        with open(self.job.job_path, encoding="utf-8") as f:
            job = json.load(f)
        try:
            self.video = video.encode(self.scene, self.out, list(self.job.shot.frames), job["width"], job["height"])
        except InputError as e:
            self.error = str(e)
            return
        self.status += f", {video.NAME} written"

    # -- messages from the backend -----------------------------------------------------------
    def handle(self, msg: dict) -> None:
        kind = msg["type"]
        self.last_message = time.monotonic()
        for listener in self.listeners:
            listener(msg)
        if kind == "hello":
            self._hello(msg)
        elif kind == "progress":
            self._progress(msg)
        elif kind == "download":
            total = msg.get("total_bytes") or 0
            name = msg.get("name") or msg.get("model")
            self.status = (f"Downloading {name}: {_size(msg.get('done_bytes', 0), total)} of {_size(total, total)}"
                           if total else f"Downloading {name}")
        elif kind == "segment_done":
            self.insert(msg)
        elif kind == "error":
            self.error = sentence(msg.get("message") or "the backend failed")
        elif kind == "done":
            self._done(msg)
        elif kind == "_exit" and not self.ended:
            if self.cancel_requested_at is not None:
                self.cancelled = True  # stopped (or killed when it did not stop in time) because the user asked
            else:
                self.error = (f"The backend stopped unexpectedly (exit code {msg['code']}): "
                              f"{self.backend.last_error_line()}")

    def _hello(self, msg):
        if msg.get("protocol") != protocol.PROTOCOL_VERSION:
            self.error = (f"The backend speaks protocol {msg.get('protocol')}, this add-on speaks "
                          f"{protocol.PROTOCOL_VERSION}: install the add-on and backend of the same release")
            if self.backend is not None:
                self.backend.kill()
            return
        self.notices.extend(msg.get("notices") or [])
        self._generation = (self._generation[0], f"Generating on {msg.get('device', '?').upper()} with {msg.get('model')}")
        self._show()

    def _progress(self, msg):
        where = f"Segment {msg['segment'] + 1}/{msg['segments']}"
        if "step" in msg:  # segment-level models report their denoising steps
            status = (f"{where}: step {msg['step'] + 1}/{msg['steps']} "
                      f"({msg['done']}/{msg['total']} frames), about {msg['eta_s']:.0f} s left")
        else:
            status = f"{where}, frame {msg['frame']} ({msg['done']}/{msg['total']}), about {msg['eta_s']:.0f} s left"
        self._generation = (0.9 * msg["done"] / max(msg["total"], 1), status)
        self._show()

    def _done(self, msg):
        if msg.get("cancelled"):
            self.cancelled = True
            return
        self.finished = True
        self.progress = 1.0
        stats = msg.get("stats", {})
        self.status = (f"Done: {stats.get('frames')} frames in {stats.get('seconds', 0):.1f} s, "
                       f"memory {stats.get('memory_bytes', 0) / 2**20:.2f} MiB")
        if self.tracked:  # say which objects kept their own memory, so a missing one can be marked Moving
            names = ", ".join(self.tracked[:3]) + (f" and {len(self.tracked) - 3} more" if len(self.tracked) > 3 else "")
            self.status += f", moving: {names}"

    def insert(self, msg: dict) -> None:
        scene, shot = self.scene, self.job.shot
        if not self.segments_in_vse:
            vse.remove_previous(scene, self.out)
        if self.channel is None:
            self.channel = vse.free_channel(scene, shot.frames[0], shot.frames[-1])
        vse.add_segment(scene, f"{shot.label} {msg['segment'] + 1:03d}", self.out, msg["files"],
                        msg["frames"][0], self.channel)
        self.segments_in_vse += 1


def _size(n: int, total: int) -> str:
    """Bytes in GB, or in MB for downloads under a gigabyte (the depth model is 0.1 GB)."""
    return f"{n / 1e9:.1f} GB" if total >= 1e9 else f"{n / 1e6:.0f} MB"
