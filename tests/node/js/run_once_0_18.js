// Runs graphile-worker 0.18 once in library mode, as its docs on forbidden flags show:
// `await runOnce({ connectionString, taskDirectory, forbiddenFlags })`. forbiddenFlags is a library
// option only: 0.18's CLI and its preset (graphile.config) have none.
// (0.18 is an ES module; this CommonJS script imports it from where NODE_PATH finds it.)
//
// Usage: node run_once_0_18.js CONNECTION_URL TASK_DIRECTORY FORBIDDEN_FLAGS_JSON
// FORBIDDEN_FLAGS_JSON is a JSON list of flag names, or null.
"use strict";

async function main() {
  const [connectionString, taskDirectory, forbiddenFlagsJson] = process.argv.slice(2);
  const { runOnce } = await import(require.resolve("graphile-worker"));
  const forbiddenFlags = JSON.parse(forbiddenFlagsJson);
  await runOnce({ connectionString, taskDirectory, forbiddenFlags });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
