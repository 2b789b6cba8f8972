"""One Generate: every shot of the scene's set (or the one asked for) one after another in timeline order, each
its own Session (its own job folder, backend process and strips), chained shots each starting from the memory the
one before it left. The operators drive it exactly like a Session: tick, run_blocking, cancel, close, and its
state (status, progress, error, ended, notices).

A shot that fails stops the run with its error; the shots before it keep their frames and strips.
"""
import os
import time
from collections.abc import Callable
from typing import Optional

from . import shots, video, vse
from .core.errors import sentence
from .session import DEFAULT_STALL_TIMEOUT, Session


class Generation:
    def __init__(self, context, python_pref: str = "", stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                 shot: str = "", number: int = 0, log: Optional[Callable[[str], None]] = None):
        """`shot`: the name of the one shot to make, or `number` (1 = the first in timeline order); neither:
        every shot. `log` gets progress lines render farms read (Flamenco's Time:/Saved:, OpenJD's
        openjd_progress:), headless only."""
        self.context = context
        self.scene = context.scene
        self.python_pref, self.stall_timeout = python_pref, stall_timeout
        self.wanted, self.number = shot, number
        self.log = log
        self.plan = None
        self.todo = None  # the shots still to make
        self.session = None
        self.done = []  # finished sessions
        self.channel = None
        self.error = None
        self.cancelled = False
        self.finished = False
        self.notices = []
        self.progress = 0.0
        self.status = "Preparing"
        self.started = time.monotonic()

    # -- the state the operators read ---------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None or self.cancelled

    @property
    def segments_in_vse(self) -> int:
        return sum(s.segments_in_vse for s in self.done + ([self.session] if self.session else []))

    @property
    def out(self) -> Optional[str]:
        return self.session.out if self.session else (self.done[-1].out if self.done else None)

    # -- which shots ----------------------------------------------------------------------------
    def _choose(self) -> None:
        plan = shots.plan(self.scene, self.scene.mirage)
        self.plan = plan
        self._notice(*plan.notices)
        if self.wanted:
            picked = [plan.find(self.wanted, self.scene)]
        elif self.number:
            picked = [plan.number(self.number)]
        else:
            picked = list(plan.shots)
        self.todo = picked
        # one channel for every shot made now, free of anything but their own earlier strips
        self.channel = vse.free_channel(self.scene, min(s.frames[0] for s in picked),
                                        max(s.frames[-1] for s in picked), {s.folder for s in picked})
        self.total = len(picked)

    def _notice(self, *lines) -> None:
        for line in lines:
            if line not in self.notices:
                self.notices.append(line)

    def _next(self) -> bool:
        """Start the next shot's Session; False when none is left."""
        if not self.todo:
            return False
        shot = self.todo.pop(0)
        self.session = Session(self.context, self.python_pref, self.stall_timeout, shot, self.plan, self.channel)
        if self.log is not None:
            self.session.listeners.append(FarmLog(self.log, shot, self.session).handle)
        return True

    def _shot_ended(self) -> None:
        """Take over the ended shot's outcome; start the next one where it finished."""
        s = self.session
        if s.finished and s.error is None:
            s.close()  # its backend has ended: the pipes closed and, with Write MP4, the shot's video written
        shot = s.job.shot
        self._notice(*(f"{shot.label}: {sentence(n)}" if self.plan.has_markers else n for n in s.notices))
        if s.error:
            named = not shot.name or s.error.startswith(f"Shot '{shot.name}'")
            self.error = s.error if named else f"Shot '{shot.name}': {s.error}"
        elif s.cancelled:
            self.cancelled = True
        else:
            self.done.append(s)
            self.session = None
            if not self._next():
                self._finish()
        self._refresh()

    def _finish(self) -> None:
        self.finished = True
        self.progress = 1.0
        last = self.done[-1]
        if len(self.done) == 1:
            self.status = last.status
            return
        frames = sum(len(s.job.shot.frames) for s in self.done)
        self.status = (f"Done: {len(self.done)} shots, {frames} frames in {time.monotonic() - self.started:.1f} s "
                       f"({', '.join(s.job.shot.name for s in self.done)})")
        if all(s.video for s in self.done):
            self.status += f", {video.NAME} written in each shot's folder"

    def _refresh(self) -> None:
        s = self.session
        if s is None or self.ended:
            return
        share = (len(self.done) + s.progress) / max(self.total, 1)
        self.progress = share
        shot = s.job.shot
        self.status = (f"Shot {len(self.done) + 1}/{self.total} '{shot.name}': {s.status}"
                       if shot.name and self.total > 1 else
                       (f"Shot '{shot.name}': {s.status}" if shot.name else s.status))

    # -- driving it -----------------------------------------------------------------------------
    def tick(self, budget: float = 0.05) -> list[dict]:
        """One timer tick of the UI (see Session.tick): the current shot's export steps or messages."""
        if self.ended:
            return []
        if self.plan is None:
            self._choose()
            self._next()
        handled = self.session.tick(budget)
        if self.session.ended:
            self._shot_ended()
        else:
            self._refresh()
        return handled

    def run_blocking(self) -> None:
        """The path for `blender -b` and scripts: every shot, one after another, waiting on each backend."""
        if self.plan is None:
            self._choose()
            self._next()
        while not self.ended:
            try:
                self.session.run_blocking()
            finally:
                if self.session.ended:
                    self._shot_ended()

    def fail(self, message: str) -> None:
        """An error raised while driving the current shot (one line): the run stops with it, naming the shot."""
        if self.session is None:
            self.error = message
            return
        self.session.error = message
        self._shot_ended()

    def cancel(self) -> None:
        if self.session is not None and not self.session.ended:
            self.session.cancel()
        else:
            self.cancelled = True

    def close(self) -> None:
        """Stop whatever still runs (see Session.close)."""
        if self.session is not None:
            self.session.close()


class FarmLog:
    """Progress lines for render farms, from one shot's backend messages: a Flamenco worker counts `Time:` and
    `skipping existing frame` lines as task steps and shows `Saved: '<file>'` as the latest image; OpenJD reads
    `openjd_progress:` and `openjd_status:`."""

    def __init__(self, write: Callable[[str], None], shot, session):
        self.write, self.shot, self.session = write, shot, session
        self.last = time.monotonic()

    def handle(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "progress" and "step" not in msg:
            now = time.monotonic()
            seconds, self.last = now - self.last, now
            self.write(f"Mirage: {self.shot.label} frame {msg['frame']} ({msg['done']}/{msg['total']})")
            self.write(f"Time: {int(seconds // 60):02d}:{seconds % 60:05.2f}")
            self.write(f"openjd_progress: {100.0 * msg['done'] / max(msg['total'], 1):.1f}")
        elif kind == "segment_done" and msg.get("resumed"):
            for f in msg["files"]:
                self.write(f"skipping existing frame {f}")
        elif kind == "segment_done":
            self.write(f"Saved: '{os.path.join(self.session.out, msg['files'][-1])}'")
            self.write(f"openjd_status: {self.shot.label}: segment {msg['segment'] + 1} done")
        elif kind == "hello":
            self.write(f"openjd_status: {self.shot.label}: generating on {str(msg.get('device', '?')).upper()}")
