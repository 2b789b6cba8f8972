"""Render-farm jobs for a set's shots, as plain data (stdlib only): Open Job Description templates and the
Python a farm task runs inside `blender -b`.

Every task is the headless path that exists anyway: `blender -b FILE --python-exit-code 1 --python-expr TASK --
ARG PYTHON`, where TASK is one of the programs below, ARG the shot (its marker's name, or its number in timeline
order) and PYTHON the backend interpreter to use on the worker (empty: the worker's own setting). A task that
cannot run prints one line (also as OpenJD's `openjd_fail:`) and exits 1; the other shots' files are untouched.

The template in farm/openjd/mirage.yaml is `generic_template()`: shots by number, for any .blend. The bundle
Blender writes for a file is `template(shots, mode)`: one task per shot by name, chained shots one step each,
each depending on the one before.
"""
import os
from typing import Sequence

from .backend import files

SPECIFICATION = "jobtemplate-2023-09"
EXIT_CODE = "1"

_PRELUDE = '''import os, sys, bpy
args = sys.argv[sys.argv.index("--") + 1:]
if len(args) > 1 and args[1]:
    os.environ["MIRAGE_BACKEND_PYTHON"] = args[1]
def fail(message):
    print("openjd_fail: " + message, flush=True)
    sys.exit(message)
if not hasattr(bpy.types.Scene, "mirage"):
    fail("Mirage is not installed or not enabled in this worker's Blender: install the extension there and "
         "enable it (docs/farm.md)")
try:
'''
_EPILOGUE = '''except RuntimeError as e:
    fail(str(e).strip().split("Error: ", 1)[-1])
'''
# one shot by its marker's name ("" for a scene without camera markers)
SHOT_TASK = _PRELUDE + "    bpy.ops.mirage.generate(shot=args[0])\n" + _EPILOGUE
# one shot by its number in timeline order (0: every shot, one after another)
SHOT_NUMBER_TASK = _PRELUDE + "    bpy.ops.mirage.generate(shot_number=int(args[0]))\n" + _EPILOGUE
# every shot's finished segments into the file's Sequencer, then the file saved
STRIPS_TASK = _PRELUDE + "    bpy.ops.mirage.load_shots()\n    bpy.ops.wm.save_mainfile()\n" + _EPILOGUE


def blender_args(task: str, arg: str) -> list:
    """The arguments of a farm task after the executable (OpenJD format strings for the file and the backend)."""
    return ["-b", "{{Param.BlendFile}}", "--python-exit-code", EXIT_CODE, "--python-expr", task, "--", arg,
            "{{Param.BackendPython}}"]


def _parameters(extra: Sequence[dict] = ()) -> list:
    return [
        {"name": "BlendFile", "type": "PATH", "objectType": "FILE", "dataFlow": "INOUT",
         "description": "The .blend with the shots, on storage every worker reaches; its Sequencer gets every "
                        "shot's strips at the end",
         "userInterface": {"control": "CHOOSE_INPUT_FILE", "label": "Blend File",
                           "fileFilters": [{"label": "Blender files", "patterns": ["*.blend"]}]}},
        {"name": "BlenderExecutable", "type": "STRING", "default": "blender",
         "description": "Blender on the workers (4.2 or newer, with the Mirage extension installed and enabled)",
         "userInterface": {"control": "LINE_EDIT", "label": "Blender Executable"}},
        {"name": "BackendPython", "type": "STRING", "default": "", "minLength": 0,
         "description": "The Python with torch that runs Mirage's backend on the workers (empty: each worker's own "
                        "MIRAGE_BACKEND_PYTHON or add-on preference)",
         "userInterface": {"control": "LINE_EDIT", "label": "Backend Python"}},
        *extra]


def _script(task: str, arg: str) -> dict:
    return {"actions": {"onRun": {"command": "{{Param.BlenderExecutable}}", "args": blender_args(task, arg)}}}


def _strips_step(after: Sequence[str]) -> dict:
    return {"name": "Sequencer", "description": "Every shot's strips into the .blend's Sequencer, then the .blend saved",
            "dependencies": [{"dependsOn": name} for name in after], "script": _script(STRIPS_TASK, "-")}


def step_name(index: int, name: str) -> str:
    """A chained shot's step: its place and name (OpenJD step names are at most 64 characters, and unique)."""
    return f"Shot {index + 1:02d} {name or 'Mirage'}"[:64]


def template(shots: Sequence[str], mode: str, job_name: str) -> dict:
    """The OpenJD job template for a set's shots (marker names in timeline order) and mode ("CHAINED": one step
    per shot, each depending on the one before; "PARALLEL": one step with a task per shot), then the Sequencer."""
    if not shots:
        raise ValueError("a job needs at least one shot")
    if mode == "PARALLEL":
        steps = [{"name": "Shots", "description": "Every shot, each starting from the set's references",
                  "parameterSpace": {"taskParameterDefinitions": [{"name": "Shot", "type": "STRING",
                                                                   "range": list(shots)}]},
                  "script": _script(SHOT_TASK, "{{Task.Param.Shot}}")}]
    else:
        steps = []
        for i, name in enumerate(shots):
            step = {"name": step_name(i, name),
                    "description": (f"Shot '{name}'" if name else "The flythrough") +
                                   (", from the memory the shot before it left" if i else ", from the references"),
                    "script": _script(SHOT_TASK, name)}
            if i:
                step["dependencies"] = [{"dependsOn": steps[-1]["name"]}]
            steps.append(step)
    steps.append(_strips_step([s["name"] for s in steps]))
    return {"specificationVersion": SPECIFICATION, "name": job_name[:128],
            "description": "Mirage: every shot of a set generated on the farm, then loaded into its Sequencer",
            "parameterDefinitions": _parameters(), "steps": steps}


def generic_template() -> dict:
    """The template for any .blend (farm/openjd/mirage.yaml): shots by their number in timeline order."""
    shots = {"name": "Shots", "type": "STRING", "default": "0",
             "description": "Which shots, by number in timeline order (1 is the first): a range such as 1-4 gives "
                            "one task per shot (chained shots then need the tasks run in order); 0 makes every shot "
                            "in one task, one after another",
             "userInterface": {"control": "LINE_EDIT", "label": "Shots"}}
    steps = [{"name": "Shots", "description": "The shots, one task each",
              "parameterSpace": {"taskParameterDefinitions": [{"name": "Shot", "type": "INT",
                                                               "range": "{{Param.Shots}}"}]},
              "script": _script(SHOT_NUMBER_TASK, "{{Task.Param.Shot}}")}]
    steps.append(_strips_step(["Shots"]))
    return {"specificationVersion": SPECIFICATION, "name": "Mirage flythrough",
            "description": "Mirage: every shot of a set generated on the farm, then loaded into its Sequencer",
            "parameterDefinitions": _parameters([shots]), "steps": steps}


def write_bundle(folder: str, job_template: dict, values: dict) -> list:
    """An OpenJD job bundle: template.json, parameter_values.json (the job bundle format AWS Deadline Cloud
    submits) and job_parameters.json (what `openjd run ... -p file://job_parameters.json` reads). Returns the
    paths written."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, n) for n in ("template.json", "parameter_values.json", "job_parameters.json")]
    files.write_json(job_template, paths[0])
    files.write_json({"parameterValues": [{"name": k, "value": v} for k, v in values.items()]}, paths[1])
    files.write_json(dict(values), paths[2])
    return paths
