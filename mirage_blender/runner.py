"""The backend process, seen from Blender: start it, read its messages off-thread, cancel it.

No bpy in here. Blender's main thread only ever drains a queue, so a slow or dead backend can
never freeze the UI (the pattern Dream Textures uses for its generator process).
"""
import collections
import json
import os
import queue
import subprocess
import sys
import threading

from .backend import protocol

ENV_PYTHON = "MIRAGE_BACKEND_PYTHON"
# the folder that holds the backend package: the extension's own folder in the zip
EXT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(protocol.__file__)))


class BackendError(RuntimeError):
    """One line for the user."""


def backend_python(pref_value: str = "") -> str:
    """The interpreter that runs the backend: the environment variable wins over the preference."""
    path = os.environ.get(ENV_PYTHON) or pref_value
    if not path:
        raise BackendError(f"No backend Python is set: press Set Up Backend in Preferences > Add-ons > Mirage, "
                           f"choose a Backend Python there, or set {ENV_PYTHON}")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BackendError(f"The backend Python does not exist or cannot run: {path}")
    return path


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = EXT_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    # Blender's own Python settings must not leak into the backend's interpreter
    env.pop("PYTHONHOME", None)
    return env


def check(python: str, timeout: float = 60) -> tuple[bool, str]:
    """Ask an interpreter whether it can run the backend. Returns (ok, one-line status)."""
    try:
        out = subprocess.run([python, "-m", "backend", "check"], cwd=EXT_DIR, env=_env(),
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"cannot start {python}: {e}"
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return False, f"{python} did not answer the check: {(out.stderr.strip().splitlines() or ['no output'])[-1]}"
    if not info.get("ok"):
        return False, f"{python} cannot run the backend: {info.get('error')}"
    device = "CUDA" if info.get("cuda") else "CPU only"
    return True, f"Ready: torch {info['torch']}, {device}, models: {', '.join(info.get('models', []))}"


class Backend:
    """One running job. Messages arrive on `messages`; a final {'type': '_exit', 'code': N} ends it."""

    def __init__(self, python: str, job_path: str, log_path: str, follow: bool = False, command: list = None):
        """follow: the job is still being exported (a streamed job.json): the backend takes its frames as they come.
        command: the backend's arguments for another command than running `job_path` (a bake: ["bake", folder])."""
        self.messages = queue.Queue()
        self.stderr_tail = collections.deque(maxlen=20)
        self._log = open(log_path, "a", encoding="utf-8")
        args = (["run", job_path] + (["--follow"] if follow else [])) if command is None else list(command)
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "backend", *args, "--jsonl", "--stop-on-eof"],
                cwd=EXT_DIR, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1,
                # its own process group: Ctrl+C in Blender's terminal must not kill it mid-write
                start_new_session=(sys.platform != "win32"))
        except OSError as e:
            self._log.close()
            raise BackendError(f"Cannot start the backend with {python}: {e.strerror or e}") from None
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        self._stdout = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            msg = protocol.decode(line)
            if msg is not None:
                self.messages.put(msg)
        code = self.proc.wait()
        self._stderr.join(timeout=5)
        self.messages.put({"type": "_exit", "code": code})

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())
            self._log.write(line)
            self._log.flush()
        self._log.close()

    def poll(self) -> list[dict]:
        """Messages that arrived so far, without waiting."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> list[dict]:
        """Block for the next message (the synchronous path used under `blender -b`)."""
        try:
            return [self.messages.get(timeout=timeout)]
        except queue.Empty:
            return []

    def cancel(self) -> None:
        """Ask politely; the backend stops between frames, so finished segments stay intact."""
        try:
            self.proc.stdin.write(protocol.encode("cancel"))
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        """Once the process has ended: its readers finish and every pipe is closed (the log closes with its
        reader)."""
        for reader in (self._stdout, self._stderr):
            reader.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except (OSError, ValueError):  # stdin's last write may hit a closed pipe
                pass

    def last_error_line(self) -> str:
        lines = [line for line in self.stderr_tail if line.strip()]
        return lines[-1] if lines else "no message"
