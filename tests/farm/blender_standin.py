"""A stand-in for the `blender` executable, built on the bpy module (no Blender binary of 4.2 or newer exists on
the test machines). It understands what farm tasks use, the way Blender does:

  blender [-b] [-y] [FILE.blend] [--python-exit-code N] [--python-expr EXPR] [--python FILE] [-- ARGS...]

Arguments are handled in order; like Blender it first loads the user preferences (which enable the installed
extensions of BLENDER_USER_RESOURCES), keeps every argument in sys.argv, exits with N at once when a script
raises and N is set, exits as a script asks (sys.exit), and exits 0 when the arguments are done.
"""
import os
import sys
import traceback

import bpy  # noqa: E402  (reads BLENDER_USER_RESOURCES: the worker's installed extensions)


def fail(message):
    print(f"Error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def run_script(code, name, exit_code):
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__", "__file__": name})
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        if exit_code:
            sys.stdout.flush()
            os._exit(exit_code)


def main(argv):
    sys.argv = [sys.argv[0]] + argv  # scripts see every argument, as in Blender
    bpy.ops.wm.read_userpref()  # Blender starts with the user's preferences: their enabled add-ons
    exit_code = 0
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            break
        if a in ("-b", "--background", "-y", "--enable-autoexec"):
            i += 1
        elif a == "--python-exit-code":
            if i + 1 >= len(argv) or not argv[i + 1].isdigit():
                fail("--python-exit-code needs a number from 0 to 255")
            exit_code = int(argv[i + 1])
            i += 2
        elif a in ("--python-expr", "--python"):
            if i + 1 >= len(argv):
                fail(f"{a} needs an argument")
            if a == "--python":
                with open(argv[i + 1], encoding="utf-8") as f:
                    run_script(f.read(), argv[i + 1], exit_code)
            else:
                run_script(argv[i + 1], "<string>", exit_code)
            i += 2
        elif a.startswith("-"):
            fail(f"the stand-in blender does not know the argument {a}")
        else:
            if not os.path.isfile(a):
                fail(f"Cannot read file \"{os.path.abspath(a)}\": No such file or directory")
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(a))
            i += 1
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
