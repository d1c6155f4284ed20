// The latency probe for Node graphile-worker (0.1.0 and 0.18.0); twin of bench/tasks/bench_latency.py.
// process.hrtime.bigint() reads CLOCK_MONOTONIC, the clock the Python harness stamps with
// time.monotonic_ns(), so the two timestamps are directly comparable.
const fs = require("fs");

module.exports = async (payload) => {
  const startedNs = process.hrtime.bigint();
  const fd = fs.openSync(process.env.KONGTASK_BENCH_FIFO, fs.constants.O_WRONLY);
  try {
    fs.writeSync(fd, `${payload.sample} ${startedNs}\n`);
  } finally {
    fs.closeSync(fd);
  }
};
