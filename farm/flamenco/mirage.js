// SPDX-License-Identifier: GPL-3.0-or-later
//
// Mirage for Blender: a Flamenco job type that generates every shot of a set (the scene's camera markers), one
// task per shot, then loads every shot's strips into the .blend's Sequencer.
//
// Install: copy this file into the Flamenco Manager's scripts/ folder (beside its executable; Flamenco 3.7 and
// newer reload scripts without a restart), then press the refresh button of the job types in Blender's
// Flamenco panel. Workers need the Mirage extension enabled in their Blender, and the backend's Python (see
// docs/farm.md in Mirage's repository).
//
// Each task runs the headless path of the extension with Flamenco's blender-render command:
//   {blender} {blenderArgs} <file> --python-exit-code 1 --python-expr <task> -- <shot> <backend python>
// and prints, per frame, a "Time:" line (a task step for the worker) and, per segment, "Saved: '<frame>'" (the
// latest image on the Manager).

const JOB_TYPE = {
    label: "Mirage Flythrough",
    description: "Every shot of a Mirage set (its camera markers), one task each, then the Sequencer",
    settings: [
        // evaluated by the Flamenco add-on in Blender when the job is submitted
        { key: "shots", type: "string", required: true, visible: "hidden",
          eval: "C.scene.mirage.farm_shots",
          description: "The shots in timeline order, as JSON: [{\"name\": marker name, \"frames\": count}]" },
        { key: "mode", type: "string", required: true, choices: ["CHAINED", "PARALLEL"],
          eval: "C.scene.mirage.shot_mode", visible: "web",
          description: "CHAINED: each shot starts from the memory the shot before it left (one after another); " +
                       "PARALLEL: every shot starts from the references, all at once" },
        { key: "backend_python", type: "string", required: false, default: "", visible: "submission",
          description: "The Python with torch that runs Mirage's backend on the workers (empty: each worker's own " +
                       "MIRAGE_BACKEND_PYTHON or add-on preference)" },
        { key: "blendfile", type: "string", required: true, visible: "web",
          description: "Path of the .blend with the shots (set by the Flamenco add-on)" },
    ]
};

// The Python every task runs inside Blender; the same programs as mirage_blender/farmjob.py (a test compares).
const PRELUDE = 'import os, sys, bpy\n' +
    'args = sys.argv[sys.argv.index("--") + 1:]\n' +
    'if len(args) > 1 and args[1]:\n' +
    '    os.environ["MIRAGE_BACKEND_PYTHON"] = args[1]\n' +
    'def fail(message):\n' +
    '    print("openjd_fail: " + message, flush=True)\n' +
    '    sys.exit(message)\n' +
    'if not hasattr(bpy.types.Scene, "mirage"):\n' +
    '    fail("Mirage is not installed or not enabled in this worker\'s Blender: install the extension there and "\n' +
    '         "enable it (docs/farm.md)")\n' +
    'try:\n';
const EPILOGUE = 'except RuntimeError as e:\n' +
    '    fail(str(e).strip().split("Error: ", 1)[-1])\n';
const SHOT_TASK = PRELUDE + '    bpy.ops.mirage.generate(shot=args[0])\n' + EPILOGUE;
const STRIPS_TASK = PRELUDE + '    bpy.ops.mirage.load_shots()\n    bpy.ops.wm.save_mainfile()\n' + EPILOGUE;

function blenderCommand(settings, program, arg, steps) {
    return author.Command("blender-render", {
        exe: "{blender}",
        exeArgs: "{blenderArgs}",
        argsBefore: [],
        blendfile: settings.blendfile,
        args: ["--python-exit-code", "1", "--python-expr", program, "--", arg, settings.backend_python || ""],
    }, steps);
}

function parseShots(text) {
    let shots;
    try {
        shots = JSON.parse(text);
    } catch (e) {
        throw "Mirage: the shots setting is not JSON: " + e;
    }
    if (!Array.isArray(shots) || shots.length == 0) {
        throw "Mirage: the scene has no shots to generate: check its camera markers in Blender (Mirage's panel " +
              "lists the shots or says what is wrong with them)";
    }
    for (const shot of shots) {
        if (typeof shot.name != "string" || !(shot.frames > 0)) {
            throw "Mirage: every shot needs a name and a number of frames, got " + JSON.stringify(shot);
        }
    }
    return shots;
}

function compileJob(job) {
    const settings = job.settings;
    if (!settings.blendfile) {
        throw "Mirage: the job has no blendfile setting (submit it from Blender with the Flamenco add-on)";
    }
    if (settings.mode != "CHAINED" && settings.mode != "PARALLEL") {
        throw "Mirage: mode must be CHAINED or PARALLEL, not " + settings.mode;
    }
    const shots = parseShots(settings.shots);
    const chained = settings.mode == "CHAINED";
    const shotTasks = [];
    for (const shot of shots) {
        const task = author.Task("shot " + (shot.name || "Mirage"), "blender");
        task.addCommand(blenderCommand(settings, SHOT_TASK, shot.name, shot.frames));
        if (chained && shotTasks.length > 0) {
            // the shot starts from the memory the shot before it left
            task.addDependency(shotTasks[shotTasks.length - 1]);
        }
        shotTasks.push(task);
        job.addTask(task);
    }
    const strips = author.Task("sequencer", "blender");
    strips.addCommand(blenderCommand(settings, STRIPS_TASK, "-", 0));
    for (const task of shotTasks) {
        strips.addDependency(task);
    }
    job.addTask(strips);
}
