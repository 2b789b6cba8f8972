// A harness that runs a Flamenco job type script the way Flamenco Manager's job compiler does, in Node (no
// Manager can run on the test machines). It implements the documented compiler API: the globals print, alert,
// frameChunker, frameCount, formatTimestampLocal, shellSplit, and the modules author (Task, Command; tasks with
// addCommand and addDependency; the job with addTask) and path (basename, dirname, join, stem), with the job's
// fields named as the Manager hands them to JavaScript (settings, metadata, name, created, priority). A string
// thrown by compileJob is the Manager's refusal of the job.
//
//   node flamenco_harness.js SCRIPT.js JOB.json      prints {"job_type": JOB_TYPE, "tasks": [...]} or {"error"}
//   node flamenco_harness.js SCRIPT.js --globals     prints the script's top-level constants named on stdin
"use strict";
const fs = require("fs");
const nodePath = require("path");
const vm = require("vm");

let nextId = 1;

function Task(name, taskType) {
    name = String(name || "").trim();
    taskType = String(taskType || "").trim();
    if (!name) throw new Error("author.Task(name, type): name is required");
    if (!taskType) throw new Error("author.Task(name, type): type is required");
    const task = { uuid: "task-" + nextId++, name: name, type: taskType, priority: 50, commands: [], dependencies: [] };
    task.addCommand = (cmd) => { task.commands.push(cmd); };
    task.addDependency = (dep) => {
        if (!dep || !dep.uuid) throw new Error("addDependency needs a task made by author.Task");
        task.dependencies.push(dep);
    };
    return task;
}

function Command(name, parameters, totalStepCount) {
    // a missing step count is 0: the worker then reports no steps
    return { name: name, parameters: parameters, totalStepCount: totalStepCount || 0 };
}

function frameRangeExplode(range) {
    const frames = new Set();
    for (const part of String(range).replace(/\.\./g, "-").split(",")) {
        const ends = part.split("-").map((s) => s.trim());
        if (ends.length == 1 && /^-?\d+$/.test(ends[0])) frames.add(parseInt(ends[0], 10));
        else if (ends.length == 2 && /^\d+$/.test(ends[0]) && /^\d+$/.test(ends[1])) {
            for (let f = parseInt(ends[0], 10); f <= parseInt(ends[1], 10); f++) frames.add(f);
        } else throw new Error(`invalid range "${range}": ${part}`);
    }
    return [...frames].sort((a, b) => a - b);
}

function frameChunker(range, size) {
    if (size < 1) throw new Error("invalid chunk size, must be positive number: " + size);
    const frames = frameRangeExplode(range);
    const chunks = [];
    for (let i = 0; i < frames.length; i += size) {
        const c = frames.slice(i, i + size);
        chunks.push(c.length == 1 ? `${c[0]}` : `${c[0]}-${c[c.length - 1]}`);
    }
    return chunks;
}

function sandbox() {
    const printed = [];
    const context = {
        print: (...args) => printed.push(args.map(String).join(" ")),
        alert: (...args) => printed.push("alert: " + args.map(String).join(" ")),
        frameChunker: frameChunker,
        frameCount: (range) => frameRangeExplode(range).length,
        formatTimestampLocal: (t) => new Date(t).toISOString().replace(/[-:]/g, "").replace("T", "_").slice(0, 15),
        shellSplit: (s) => (String(s).match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g) || []).map((a) => a.replace(/^["']|["']$/g, "")),
        author: { Task: Task, Command: Command },
        path: {
            basename: (p) => nodePath.posix.basename(p), dirname: (p) => nodePath.posix.dirname(p),
            join: (...p) => nodePath.posix.join(...p), stem: (p) => nodePath.posix.parse(p).name,
        },
        process: { platform: "linux" },
    };
    vm.createContext(context);
    return { context, printed };
}

function load(script) {
    const box = sandbox();
    vm.runInContext(fs.readFileSync(script, "utf8"), box.context, { filename: script });
    return box;
}

function main(argv) {
    const [script, jobPath] = argv;
    const box = load(script);
    if (jobPath == "--globals") {
        const names = fs.readFileSync(0, "utf8").split(/\s+/).filter(Boolean);
        const out = {};
        for (const n of names) out[n] = vm.runInContext(n, box.context);
        process.stdout.write(JSON.stringify(out));
        return 0;
    }
    const jobType = vm.runInContext("JOB_TYPE", box.context);
    if (vm.runInContext("typeof compileJob", box.context) != "function") {
        throw new Error("the script does not define a compileJob(job) function");
    }
    const submitted = JSON.parse(fs.readFileSync(jobPath, "utf8"));
    const tasks = [];
    const job = {
        jobID: "job-1", name: submitted.name || "job", jobType: submitted.type || "mirage", priority: 50,
        created: new Date(0), settings: submitted.settings || {}, metadata: submitted.metadata || {},
        addTask: (t) => tasks.push(t),
    };
    let error = null;
    try {
        vm.runInContext("compileJob", box.context)(job);
    } catch (e) {
        error = typeof e == "string" ? e : String(e && e.message || e);
    }
    const byUuid = new Map(tasks.map((t) => [t.uuid, t.name]));
    const out = {
        job_type: JSON.parse(JSON.stringify(jobType)), printed: box.printed, error: error,
        tasks: error ? [] : tasks.map((t) => ({
            name: t.name, type: t.type, commands: t.commands,
            dependencies: t.dependencies.map((d) => byUuid.has(d.uuid) ? d.name : "<not in the job>"),
        })),
    };
    process.stdout.write(JSON.stringify(out));
    return error ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
