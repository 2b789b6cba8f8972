"""Set Up Backend: a private Python environment with the backend's pinned requirements (backend/requirements.txt).

No bpy in here: the preferences (setup_ops.py) start an Install on a thread and poll it from a timer, or run it
synchronously under `blender -b`. The environment is built in a staging folder beside the real one and only
swapped in once its check passed, so a failed, cancelled or half-finished install never replaces a working
environment, and nothing half-installed is ever used. Torch never enters Blender's own Python.
"""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from . import runner
from .backend import protocol

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(protocol.__file__)), "requirements.txt")
# pip 24.1+ prints download progress as "Progress N of M" lines when asked (--progress-bar raw)
PIP = "pip==26.3"
PYPI = "https://pypi.org/simple"
# torch is installed first, from the PyTorch index of the build chosen; the rest from the usual index
TORCH_INDEX = {"cuda": "https://download.pytorch.org/whl/cu128", "cpu": "https://download.pytorch.org/whl/cpu"}
# room the environment takes once installed, checked before anything is written
NEED_BYTES = {"cpu": 2_500_000_000, "cuda": 8_000_000_000}
TORCH_BUILDS = ("AUTO", "CUDA", "CPU")
# the share of the whole set-up at the start of each step
STEPS = (("venv", "Creating the environment", 0.0), ("pip", "Updating pip", 0.04),
         ("torch", "Installing torch", 0.07), ("rest", "Installing the backend's packages", 0.65),
         ("check", "Checking the backend", 0.95))
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Name or service not known", "Network is unreachable", "No route to host", "ProxyError",
                  "ConnectTimeout", "Read timed out", "Max retries exceeded", "getaddrinfo failed")


class SetupError(RuntimeError):
    """One line for the user; any working environment is left as it was."""


class Cancelled(SetupError):
    pass


def env_python(env_dir: str) -> str:
    """The interpreter of an environment folder."""
    if sys.platform == "win32":
        return os.path.join(env_dir, "Scripts", "python.exe")
    return os.path.join(env_dir, "bin", "python")


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver that answers: nvidia-smi lists a GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def torch_build(choice: str) -> str:
    """'cuda' or 'cpu' for the user's choice (AUTO: CUDA where an NVIDIA GPU answers; macOS has none)."""
    if choice not in TORCH_BUILDS:
        raise SetupError(f"Torch Build must be one of {', '.join(TORCH_BUILDS)}, not {choice!r}")
    if choice == "AUTO":
        return "cuda" if sys.platform != "darwin" and has_nvidia_gpu() else "cpu"
    if choice == "CUDA" and sys.platform == "darwin":
        raise SetupError("There is no CUDA build of torch for macOS: set Torch Build to Auto or CPU")
    return choice.lower()


def pinned(requirement: str, path: str = REQUIREMENTS) -> str:
    """The pinned line of one package in the requirements file, e.g. 'torch==2.13.0'."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if re.match(rf"{re.escape(requirement)}\s*==", line):
                return line.replace(" ", "")
    raise SetupError(f"{path} does not pin {requirement}")


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def free_bytes(folder: str) -> int:
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free


@dataclass
class State:
    """What the preferences and the status bar show. `fraction` is the share of the whole set-up done."""
    step: str = ""
    package: str = ""
    size: str = ""
    fraction: float = 0.0
    running: bool = False
    error: str = ""
    result: str = ""
    cancelled: bool = False

    def text(self) -> str:
        if self.error:
            return self.error
        if self.result:
            return self.result
        parts = [self.step or "Waiting"]
        if self.package:
            parts.append(self.package + (f" ({self.size})" if self.size else ""))
        return ": ".join(parts) + f" - {self.fraction * 100:.0f}%"


class Install:
    """One set-up of the environment in `env_dir` with the interpreter `base_python` (the one running Blender).

    `wheel_folder`: install from that folder only (pip --no-index --find-links), for studios without network.
    `online`: whether downloads are allowed at all (bpy.app.online_access). `need_bytes`: free space required
    before anything is written (default: by build). Progress is in `state`; `log_path` gets pip's whole output.
    """

    def __init__(self, env_dir: str, base_python: str, build: str = "cpu", wheel_folder: str = "",
                 online: bool = True, log_path: str = "", need_bytes: int = None,
                 requirements: str = REQUIREMENTS):
        self.env_dir = os.path.abspath(env_dir)
        self.staging = self.env_dir + ".new"
        self.base_python = base_python
        self.build = build
        self.wheel_folder = os.path.abspath(os.path.expanduser(wheel_folder)) if wheel_folder else ""
        self.online = online
        self.log_path = log_path or os.path.join(os.path.dirname(self.env_dir), "setup.log")
        self.need_bytes = NEED_BYTES[build] if need_bytes is None else need_bytes
        self.requirements = requirements
        self.state = State()
        self._proc = None
        self._cancel = threading.Event()
        self._thread = None
        self._raw_progress = False
        self._lines = []  # the current pip run's output

    # -- running it ----------------------------------------------------------------------------
    def start(self) -> None:
        """On a thread: the caller polls `state` (never blocks)."""
        self.state.running = True
        self._thread = threading.Thread(target=self._run_catching, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_catching(self):
        try:
            self.run()
        except SetupError:
            pass  # in state.error

    def cancel(self) -> None:
        """Stop the running step; the staging folder is removed and any previous environment stays."""
        self._cancel.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def run(self) -> str:
        """The whole set-up, synchronously. Returns the check's line; raises SetupError (one line)."""
        self.state.running = True
        try:
            os.makedirs(os.path.dirname(self.env_dir), exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as self._log:
                self._note(f"set-up of {self.env_dir} with {self.base_python}, torch build {self.build}, "
                           f"wheel folder {self.wheel_folder or 'none'}")
                try:
                    result = self._steps()
                except SetupError as e:
                    self._discard()
                    self.state.cancelled = isinstance(e, Cancelled)
                    self.state.error = str(e)
                    self._note(f"failed: {e}")
                    raise
                self._note(result)
                self.state.result = result
                self.state.fraction = 1.0
                return result
        except OSError as e:  # the log or the folder itself cannot be written
            self._discard()
            self.state.error = self._os_error(e)
            raise SetupError(self.state.error) from None
        finally:
            self.state.running = False
            self._proc = None

    def _steps(self):
        self._preflight()
        self._step("venv")
        if os.path.exists(self.staging):
            shutil.rmtree(self.staging)
        self._call([self.base_python, "-m", "venv", self.staging], "the environment")
        py = env_python(self.staging)
        self._step("pip")
        # best effort: an older pip still installs, only without byte counts
        self._raw_progress = self._call([py, "-m", "pip", "install", "--upgrade", PIP, *self._index_args()],
                                        "pip", must=False)
        self._step("torch")
        torch = pinned("torch", self.requirements)
        self._call([py, "-m", "pip", "install", torch, *self._index_args(torch=True), *self._progress_args()], torch)
        self._step("rest")
        self._call([py, "-m", "pip", "install", "-r", self.requirements, *self._index_args(),
                    *self._progress_args()], "the backend's packages")
        self._step("check")
        ok, text = runner.check(py, timeout=300)
        if not ok:
            raise SetupError(f"The new environment does not pass the check: {text}")
        self._swap()
        return text.replace(py, env_python(self.env_dir))

    def _preflight(self):
        if self.wheel_folder:
            if not os.path.isdir(self.wheel_folder):
                raise SetupError(f"The wheel folder does not exist: {self.wheel_folder}")
            if not any(n.endswith(".whl") for n in os.listdir(self.wheel_folder)):
                raise SetupError(f"The wheel folder holds no wheels (.whl): {self.wheel_folder}")
        elif not self.online:
            raise SetupError("Online access is off, so Set Up Backend cannot download: allow it in Preferences > "
                             "System > Network (Allow Online Access), or set a Wheel Folder with the backend's wheels")
        free = free_bytes(self.env_dir)
        if free < self.need_bytes:
            raise SetupError(f"The backend needs about {gb(self.need_bytes)} free in {os.path.dirname(self.env_dir)}, "
                             f"only {gb(free)} are free: free space there or choose another Environment Folder")

    def _index_args(self, torch=False):
        if self.wheel_folder:
            # that folder only: --isolated also drops pip's own configuration (its find-links and indexes)
            return ["--isolated", "--no-index", "--find-links", self.wheel_folder]
        args = ["--retries", "2", "--timeout", "30"]
        if torch and sys.platform != "darwin":
            # the PyTorch index holds both builds (and torch's own dependencies); PyPI's Linux torch is CUDA only
            args += ["--index-url", TORCH_INDEX[self.build], "--extra-index-url", PYPI]
        return args

    def _progress_args(self):
        return ["--progress-bar", "raw"] if self._raw_progress else []

    def _swap(self):
        """The checked staging folder becomes the environment; the previous one is removed only then."""
        old = self.env_dir + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        if os.path.exists(self.env_dir):
            os.replace(self.env_dir, old)
        os.replace(self.staging, self.env_dir)
        shutil.rmtree(old, ignore_errors=True)

    def _discard(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self.staging, ignore_errors=True)

    # -- one step ------------------------------------------------------------------------------
    def _step(self, key):
        if self._cancel.is_set():
            raise Cancelled("Set Up Backend was cancelled; the previous environment (if any) is unchanged")
        for k, label, start in STEPS:
            if k == key:
                self.state.step, self.state.fraction = label, start
        self.state.package = self.state.size = ""
        self._note(f"step: {self.state.step}")

    def _span(self):
        keys = [k for k, _, _ in STEPS]
        i = keys.index(next(k for k, label, _ in STEPS if label == self.state.step))
        return STEPS[i][2], (STEPS[i + 1][2] if i + 1 < len(STEPS) else 1.0)

    def _call(self, cmd, what, must=True):
        """Run one command, its output parsed for progress and logged. True when it succeeded."""
        self._note("$ " + " ".join(cmd))
        self._lines = []
        env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
        for key in ("PYTHONHOME", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV"):
            env.pop(key, None)  # Blender's own Python settings must not leak into the environment
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          bufsize=1, env=env, errors="replace")
        except OSError as e:
            raise SetupError(f"Cannot start {cmd[0]}: {e.strerror or e}") from None
        lo, hi = self._span()
        for line in self._proc.stdout:
            self._log.write(line)
            self._lines.append(line.rstrip())
            self._parse(line.rstrip(), lo, hi)
        code = self._proc.wait()
        self._log.flush()
        if self._cancel.is_set():
            raise Cancelled("Set Up Backend was cancelled; the previous environment (if any) is unchanged")
        if code != 0 and must:
            raise SetupError(self._explain(what))
        return code == 0

    def _parse(self, line, lo, hi):
        s = self.state
        m = re.match(r"\s*Progress (\d+) of (\d+)", line)
        if m:
            done, total = int(m.group(1)), int(m.group(2))
            if total:
                # a download fills the first four fifths of its step; installing the rest
                s.fraction = lo + (hi - lo) * 0.8 * done / total
            return
        m = re.match(r"\s*(?:Collecting|Processing|Requirement already satisfied:)\s+(\S+)", line)
        if m:
            name = os.path.basename(m.group(1))
            s.package = re.split(r"[-=<>!~\[ ]", name, maxsplit=1)[0]
            s.size = ""
            return
        m = re.match(r"\s*Downloading\s+(\S+)\s+\(([^)]+)\)", line)
        if m:
            s.package = re.split(r"-\d", os.path.basename(m.group(1)), maxsplit=1)[0]
            s.size = m.group(2)
            return
        if line.startswith("Installing collected packages:"):
            s.package = f"{len(line.split(':', 1)[1].split(','))} packages"
            s.size = ""
            s.fraction = max(s.fraction, lo + (hi - lo) * 0.8)

    def _explain(self, what):
        """pip's failure as one line."""
        text = "\n".join(self._lines)
        log = self.log_path
        if "No space left on device" in text or "[Errno 28]" in text:
            return (f"The disk is full while installing {what} into {os.path.dirname(self.env_dir)}: "
                    f"free about {gb(self.need_bytes)} or choose another Environment Folder")
        missing = re.search(r"No matching distribution found for (\S+)", text)
        if self.wheel_folder and missing:
            return (f"The wheel folder {self.wheel_folder} has no wheel of {missing.group(1)} for this Python "
                    f"({sys.version_info.major}.{sys.version_info.minor}): add it with "
                    f"`pip download -r requirements.txt -d <folder>` using the same Python version")
        if not self.wheel_folder and any(e in text for e in NETWORK_ERRORS):
            return (f"Cannot reach the package index to download {what}: check the network (or the proxy), "
                    f"or set a Wheel Folder with the backend's wheels (details in {log})")
        errors = [ln.strip() for ln in self._lines if ln.strip().startswith("ERROR:")]
        last = errors[-1][len("ERROR:"):].strip() if errors else (self._lines[-1].strip() if self._lines else "no output")
        return f"Installing {what} failed: {last} (details in {log})"

    def _os_error(self, e):
        if getattr(e, "errno", None) == 28:
            return (f"The disk is full in {os.path.dirname(self.env_dir)}: free about {gb(self.need_bytes)} "
                    f"or choose another Environment Folder")
        return f"Cannot use {e.filename or os.path.dirname(self.env_dir)}: {e.strerror or e}"

    def _note(self, text):
        self._log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}\n")
        self._log.flush()


def remove(env_dir: str) -> None:
    """Delete an environment folder (and any staging left by a crash)."""
    for path in (env_dir, env_dir + ".new", env_dir + ".old"):
        if os.path.exists(path):
            shutil.rmtree(path)
