"""Command line of the backend.

  python -m backend run JOB.json            human-readable progress on stderr (scripts, render farms)
  python -m backend run JOB.json --jsonl    protocol messages on stdout, commands on stdin (the add-on)
  ... --follow                              a streamed job: wait for the frames still being exported
  python -m backend check                   one JSON line: can this interpreter run the backend?
  python -m backend bake FOLDER [--jsonl]   bake a finished run's memory into textures (FOLDER/request.json)

Exit codes: 0 done, 1 the job failed (one line on stderr says why), 2 usage, 3 cancelled.
"""
import argparse
import json
import os
import sys
import threading
import traceback

from . import protocol


def _emitter(jsonl):
    lock = threading.Lock()

    def emit(msg_type, **fields):
        with lock:
            if jsonl:
                sys.stdout.write(protocol.encode(msg_type, **fields))
                sys.stdout.flush()
            elif msg_type == "progress" and "object" in fields:  # a bake
                print(f"baking {fields['object']}  {100 * fields['done'] / max(fields['total'], 1):.0f}%  "
                      f"eta {fields['eta_s']:.0f}s", file=sys.stderr, flush=True)
            elif msg_type == "progress":
                print(f"frame {fields['frame']}  {fields['done']}/{fields['total']}  eta {fields['eta_s']:.0f}s",
                      file=sys.stderr, flush=True)
            elif msg_type == "hello":
                for n in fields.get("notices") or ():
                    print(f"notice: {n}", file=sys.stderr, flush=True)
            elif msg_type == "segment_done":
                print(f"segment {fields['segment']} done: frames {fields['frames'][0]}..{fields['frames'][1]}",
                      file=sys.stderr, flush=True)
            elif msg_type == "error":
                print(f"error: {fields['message']}", file=sys.stderr, flush=True)
    return emit


def _watch_stdin(cancel, stop_on_eof):
    """Cancel on a 'cancel' command, and on end of input when the parent asked for that (it died)."""
    for line in sys.stdin:
        msg = protocol.decode(line)
        if msg and msg["type"] == "cancel":
            cancel.set()
            return
    if stop_on_eof:
        cancel.set()


def cmd_check():
    info = {"python": sys.executable, "protocol": protocol.PROTOCOL_VERSION}
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.cuda.is_available())
        from . import catalog
        info["models"] = catalog.available()
        info["catalog"] = [catalog.as_json(m) for m in catalog.catalog()]
        info["ok"] = True
    except Exception as e:  # report, never crash: this is the health check
        info.update(ok=False, error=f"{type(e).__name__}: {e}")
    print(json.dumps(info))
    return 0 if info["ok"] else 1


def error_message(e):
    """One line for the user for an exception that stopped a run."""
    import errno
    if isinstance(e, (protocol.JobError, protocol.ModelError)):
        return str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = e.filename or "the output folder"
        return f"the disk is full while writing {where}: free space or choose another output folder"
    if isinstance(e, OSError):
        return f"cannot use {e.filename}: {e.strerror or e}" if e.filename else f"file error: {e.strerror or e}"
    if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch here
        return ("the GPU ran out of memory: lower the resolution (or its percentage) or the segment length, "
                "or set Device to CPU")
    if isinstance(e, MemoryError):
        return "the computer ran out of memory: lower the resolution (or its percentage) or the segment length"
    return f"internal error: {type(e).__name__}: {e}"


def cmd_run(job_path, jsonl, stop_on_eof, follow=False):
    emit = _emitter(jsonl)
    cancel = threading.Event()
    if jsonl:
        threading.Thread(target=_watch_stdin, args=(cancel, stop_on_eof), daemon=True).start()
    try:
        protocol.load_job(job_path)  # a bad job fails in a moment, before torch loads
    except protocol.JobError as e:
        emit("error", message=str(e))
        return 1
    try:
        import torch  # noqa: F401  (fail here with a clear line rather than deep inside)
    except ImportError as e:
        emit("error", message=f"the backend Python ({sys.executable}) cannot import torch: {e}")
        return 1
    from .pipeline import Cancelled, run_job
    try:
        run_job(job_path, emit, cancel.is_set, follow=follow)
    except Cancelled:
        emit("done", cancelled=True, stats={})
        return 3
    except Exception as e:
        message = error_message(e)
        if message.startswith("internal error"):
            traceback.print_exc(file=sys.stderr)  # a bug: the log keeps the details
        emit("error", message=message)
        return 1
    return 0


def cmd_bake(folder, jsonl, stop_on_eof):
    """Bake a finished run's memory into textures: the request in `folder` (backend/bakefile.py)."""
    emit = _emitter(jsonl)
    cancel = threading.Event()
    if jsonl:
        threading.Thread(target=_watch_stdin, args=(cancel, stop_on_eof), daemon=True).start()
    from . import bakefile
    try:
        bakefile.load_request(os.path.join(folder, bakefile.REQUEST))  # a bad request fails before torch loads
    except protocol.JobError as e:
        emit("error", message=str(e))
        return 1
    try:
        import torch  # noqa: F401
    except ImportError as e:
        emit("error", message=f"the backend Python ({sys.executable}) cannot import torch: {e}")
        return 1
    from .bake import Cancelled, bake_folder
    try:
        bake_folder(folder, emit, cancel.is_set)
    except Cancelled:
        emit("done", cancelled=True, stats={})
        return 3
    except Exception as e:
        message = error_message(e)
        if message.startswith("internal error"):
            traceback.print_exc(file=sys.stderr)
        emit("error", message=message)
        return 1
    return 0


def main(argv=None):
    # idle OpenMP threads sleep instead of spinning: beside Blender exporting, or any other busy process, spinning
    # threads take the cores the work needs (set before torch loads, which happens only when a job runs)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog="python -m backend", description="Mirage world-model backend")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a job.json")
    run.add_argument("job")
    run.add_argument("--jsonl", action="store_true", help="speak the JSON-lines protocol on stdout/stdin")
    run.add_argument("--stop-on-eof", action="store_true", help="cancel when stdin closes (the caller died)")
    run.add_argument("--follow", action="store_true",
                     help="a streamed job: wait for the frames the add-on is still exporting")
    sub.add_parser("check", help="report whether this interpreter can run the backend")
    bake = sub.add_parser("bake", help="bake a finished run's memory into textures (a bake request's folder)")
    bake.add_argument("folder")
    bake.add_argument("--jsonl", action="store_true", help="speak the JSON-lines protocol on stdout/stdin")
    bake.add_argument("--stop-on-eof", action="store_true", help="cancel when stdin closes (the caller died)")
    args = parser.parse_args(argv)
    if args.cmd == "check":
        return cmd_check()
    if args.cmd == "bake":
        return cmd_bake(os.path.abspath(args.folder), args.jsonl, args.stop_on_eof)
    return cmd_run(os.path.abspath(args.job), args.jsonl, args.stop_on_eof, args.follow)


if __name__ == "__main__":
    sys.exit(main())
