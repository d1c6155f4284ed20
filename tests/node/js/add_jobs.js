// Adds jobs through graphile-worker 0.1.0's own library API, as its README shows:
// `const runner = await run(options); await runner.addJob(identifier, payload, options)`.
// (0.1.0 exports run, runOnce, runTaskList, runTaskListOnce and getTasks; addJob exists only on the
// runner that `run` returns, and as helpers.addJob inside a task. Both are the same makeAddJob.)
//
// Usage: node add_jobs.js CONNECTION_URL SPEC_FILE
// SPEC_FILE is a JSON list of {identifier, payload, queueName?, runAt? (ISO 8601), maxAttempts?}.
// Prints the rows that addJob returned, as one JSON list, on stdout.
"use strict";
const fs = require("fs");
const { run } = require("graphile-worker");

async function main() {
  const [connectionString, specFile] = process.argv.slice(2);
  const specs = JSON.parse(fs.readFileSync(specFile, "utf8"));
  // The runner also starts a worker; a task name no job uses keeps it from taking any job.
  const runner = await run({
    connectionString,
    taskList: { __kongtask_interop_never_runs__: async () => {} },
    pollInterval: 60000,
  });
  const added = [];
  for (const spec of specs) {
    const options = {};
    if (spec.queueName !== undefined) options.queueName = spec.queueName;
    if (spec.runAt !== undefined) options.runAt = new Date(spec.runAt);
    if (spec.maxAttempts !== undefined) options.maxAttempts = spec.maxAttempts;
    const job = await runner.addJob(spec.identifier, spec.payload, options);
    added.push({ id: String(job.id), queue_name: job.queue_name, task_identifier: job.task_identifier });
  }
  process.stdout.write(JSON.stringify(added) + "\n", () => {
    // 0.1.0's runner.stop() throws while the runner runs (its check is inverted), so end here.
    process.exit(0);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
