"""Model weights from the Hugging Face Hub: the standard cache, offline mode, a disk check before a download,
and download progress as protocol messages. Used by the Wan model; no torch here (only huggingface_hub, and
the tqdm it brings)."""
import os
import shutil
import time

from .base import ModelError

GB = 1e9
# what a diffusers snapshot needs: configs, safetensors weights and the tokenizer; never pickled weights
FILES = ["*.json", "*.safetensors", "*.model", "*.txt"]
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def offline_var() -> str | None:
    """The variable that switches the Hub off (HF_HUB_OFFLINE, or transformers' own TRANSFORMERS_OFFLINE), read
    when asked (not at import) so a change of the environment is seen; None when online."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


def hf_cache_dir() -> str:
    """The standard Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def check_disk(need: int, folder: str, title: str) -> int:
    """Refuse a download that does not fit, with the exact number of bytes it needs. Returns the free bytes."""
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ModelError(f"{title} needs {gb(need)} ({need} bytes) more in {folder}, only {gb(free)} are free: "
                         f"free space there or set HF_HUB_CACHE to a folder on a larger disk")
    return free


def _progress_class(emit, model, title):
    """A tqdm class for snapshot_download that turns its byte counters into protocol 'download' messages."""
    from tqdm.auto import tqdm

    class Progress(tqdm):
        last = 0.0

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            now = time.monotonic()
            # the byte counter written to disk; its total grows as files start
            if self.unit == "B" and "transfer" not in str(self.desc).lower() and now - Progress.last >= 1.0:
                Progress.last = now
                emit("download", model=model, name=title, done_bytes=int(self.n), total_bytes=int(self.total or 0))
            return out

        def close(self):
            f = self.fp
            super().close()
            try:
                f.close()
            except Exception:
                pass

    return Progress


def _incomplete(e: BaseException) -> str | None:
    """'N file(s) are missing (...)' from huggingface_hub's IncompleteSnapshotError, else None."""
    from huggingface_hub.errors import IncompleteSnapshotError
    if not isinstance(e, IncompleteSnapshotError):
        return None
    text = str(e)
    start = text.find(" is incomplete: ")
    if start < 0:
        return "some files are missing"
    part = text[start + len(" is incomplete: "):]
    end = part.find("). ")
    return part[:end + 1] if end >= 0 else part.split(". ")[0]


def fetch_weights(repo: str, revision: str | None, title: str, approx_bytes: float, emit=None, model: str = "") -> str:
    """The snapshot folder of repo@revision in the Hugging Face cache, downloading it first when it is missing.
    Every refusal is one line that says what is missing, how big it is and where it goes."""
    from huggingface_hub import snapshot_download
    cache = hf_cache_dir()
    missing = None
    try:
        return snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True, allow_patterns=FILES)
    except Exception as e:  # not cached (LocalEntryNotFoundError) or cut short (IncompleteSnapshotError): download
        missing = _incomplete(e)
    var = offline_var()
    if var and missing:
        raise ModelError(f"{title}: the copy in {cache} is incomplete ({missing}) and {var} is set: run once "
                         f"online to finish the download (about {gb(approx_bytes)} in all)")
    if var:
        raise ModelError(f"{title} needs about {gb(approx_bytes)} downloaded to {cache}; it is not there and "
                         f"{var} is set: run once online (or copy that cache from a machine that has it)")
    try:
        plan = snapshot_download(repo, revision=revision, cache_dir=cache, dry_run=True, allow_patterns=FILES)
    except Exception as e:
        raise ModelError(f"{title} needs about {gb(approx_bytes)} downloaded from Hugging Face ({repo}) to {cache}, "
                         f"and the download cannot start: {first_line(e)}") from None
    need = sum(f.file_size or 0 for f in plan if f.will_download)
    check_disk(need, cache, title)
    emit = emit or (lambda *a, **k: None)
    emit("download", model=model, name=title, done_bytes=0, total_bytes=int(need))
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache, allow_patterns=FILES,
                                   tqdm_class=_progress_class(emit, model, title))
    except Exception as e:
        raise ModelError(f"downloading {title} ({gb(need)}) to {cache} failed: {first_line(e)}; run again to resume") from None
    emit("download", model=model, name=title, done_bytes=int(need), total_bytes=int(need))
    return folder


def first_line(e: BaseException) -> str:
    """An exception's first line (its type name when it has no text)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
