"""Writing files so that a crash or a full disk never leaves half a file under its final name.

Stdlib only: the add-on (inside Blender) and the backend both write through it.
"""
import errno
import json
import os
from typing import Callable


def atomic_write(path: "str | os.PathLike", write: Callable[[str], None]) -> None:
    """write(tmp) then rename onto `path`. On failure the temporary file is removed; a full disk is reported
    naming `path` (PIL, json and safetensors report it without a file name)."""
    path = os.fspath(path)
    tmp = path + ".part"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        raise


def write_json(data, path: "str | os.PathLike", indent: int = 1) -> None:
    """`data` as JSON at `path`, atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
    atomic_write(path, write)
