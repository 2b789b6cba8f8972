"""What a job folder says about its run, from its files alone (stdlib only: the add-on reads it to show a shot's
state and to chain shots, the backend to save and check its resume state).

A run leaves `job.json` (the job), `run.json` (the report: frames finished), `state/progress.json` (segments
finished, the job's fingerprint, the digest of the saved memory) and the saved memory `state/memory*.safetensors`
(the static bank and one file per moving object's bank).
"""
import glob
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional

STATE_DIR = "state"
MEMORY = "memory.safetensors"


def memory_files(memory_path: str) -> list:
    """The files of a saved memory whose static bank is `memory_path`: it and its banks beside it
    (<stem>.object<id>.safetensors), sorted."""
    stem = memory_path[:-len(".safetensors")] if memory_path.endswith(".safetensors") else memory_path
    banks = glob.glob(glob.escape(stem) + ".object*.safetensors")
    return sorted([memory_path] + banks) if os.path.isfile(memory_path) else sorted(banks)


def digest(paths) -> str:
    """sha256 over the files' names (not their folders) and contents, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(os.path.basename(p).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_json(path: str) -> Optional[dict]:
    """A JSON object from a file, or None where it is missing or not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunState:
    """A job folder's run: the frames its job lists, the frames finished, and whether the saved memory is the
    one its finished segments left (its digest as progress.json recorded it)."""
    frames: tuple
    done: int
    finished: bool
    memory_ok: bool

    @property
    def started(self) -> bool:
        return self.done > 0


def run_state(folder: str, check_memory: bool = False) -> Optional[RunState]:
    """The run in a job folder, or None where there is no job; `memory_ok` is only worked out (the saved memory
    hashed) with `check_memory`, else False."""
    job = read_json(os.path.join(folder, "job.json"))
    if job is None or not isinstance(job.get("frames"), list):
        return None
    frames = tuple(f.get("frame") for f in job["frames"] if isinstance(f, dict))
    report = read_json(os.path.join(folder, "run.json")) or {}
    progress = read_json(os.path.join(folder, STATE_DIR, "progress.json")) or {}
    done = report.get("frames") if isinstance(report.get("frames"), int) else 0
    current = bool(progress) and progress.get("fingerprint") == report.get("fingerprint")
    memory = os.path.join(folder, STATE_DIR, MEMORY)
    memory_ok = False
    if check_memory and current:
        try:
            memory_ok = progress.get("memory") == digest(memory_files(memory))
        except OSError:
            pass
    return RunState(frames, done if current else 0, current and done == len(frames), memory_ok)
