// Adds jobs through graphile-worker 0.18's own library API, as its README shows:
// `const utils = await makeWorkerUtils({ connectionString }); await utils.addJob(identifier, payload,
// spec)`, or all at once with `await utils.addJobs(specs)`.
// (0.18 is an ES module; this CommonJS script imports it from where NODE_PATH finds it.)
//
// Usage: node add_jobs_0_18.js CONNECTION_URL SPEC_FILE add_job|add_jobs
// SPEC_FILE is a JSON list of {identifier, payload, queueName?, runAt? (ISO 8601), maxAttempts?,
// priority?, jobKey?, jobKeyMode?, flags?}. Prints what the calls returned, as one JSON list on stdout: each job's id
// (a string: a bigint), task identifier, job_queue_id and revision.
//
// addJob's answers follow SPEC_FILE. addJobs's do not, quite: it labels the rows that the SQL
// add_jobs returns with the task identifiers of SPEC_FILE by position, but add_jobs (upstream's and
// kongtask's alike) inserts them in the order of a join with the tasks table, so a job's
// task_identifier there may be another's. Read the jobs back from the database instead.
"use strict";
const fs = require("fs");

async function main() {
  const [connectionString, specFile, how] = process.argv.slice(2);
  const { makeWorkerUtils } = await import(require.resolve("graphile-worker"));
  const specs = JSON.parse(fs.readFileSync(specFile, "utf8")).map((spec) => {
    const options = {};
    if (spec.queueName !== undefined) options.queueName = spec.queueName;
    if (spec.runAt !== undefined) options.runAt = new Date(spec.runAt);
    if (spec.maxAttempts !== undefined) options.maxAttempts = spec.maxAttempts;
    if (spec.priority !== undefined) options.priority = spec.priority;
    if (spec.jobKey !== undefined) options.jobKey = spec.jobKey;
    if (spec.jobKeyMode !== undefined) options.jobKeyMode = spec.jobKeyMode;
    if (spec.flags !== undefined) options.flags = spec.flags;
    return { identifier: spec.identifier, payload: spec.payload, options };
  });
  const utils = await makeWorkerUtils({ connectionString });
  try {
    let jobs;
    if (how === "add_job") {
      jobs = [];
      for (const { identifier, payload, options } of specs) {
        jobs.push(await utils.addJob(identifier, payload, options));
      }
    } else if (how === "add_jobs") {
      jobs = await utils.addJobs(specs.map(({ identifier, payload, options }) => ({ identifier, payload, ...options })));
    } else {
      throw new Error(`unknown way to add jobs: ${how}`);
    }
    const added = jobs.map((job) => ({
      id: String(job.id),
      task_identifier: job.task_identifier,
      job_queue_id: job.job_queue_id,
      revision: job.revision,
    }));
    process.stdout.write(JSON.stringify(added) + "\n");
  } finally {
    await utils.release();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
