// A graphile-worker task (0.1.0 and 0.18.0 alike) for the mixed-fleet tests: records when it
// started and when it ended in public.fleet_runs, both read from the database clock
// (clock_timestamp()), so its times compare with the kongtask twin's (py/record_times.py). In
// between it pauses for the payload's sleep_ms, which widens the run, so that two runs of one queue
// in flight at once overlap visibly.
// 0.1.0's job row names its queue; later ones hold job_queue_id, which helpers.getQueueName() reads
// (after the start is recorded: its first call for a queue waits to batch the lookup).
module.exports = async (payload, helpers) => {
  const { job } = helpers;
  await helpers.withPgClient(async (client) => {
    const {
      rows: [run],
    } = await client.query(
      "insert into public.fleet_runs (job_id, queue_name, i, ran_by, started_at)" +
        " values ($1, $2, $3, 'node', clock_timestamp()) returning seq",
      [job.id, job.queue_name ?? null, payload.i]
    );
    const queueName = "queue_name" in job ? job.queue_name : await helpers.getQueueName();
    await new Promise((resolve) => setTimeout(resolve, payload.sleep_ms));
    await client.query("update public.fleet_runs set ended_at = clock_timestamp(), queue_name = $2 where seq = $1", [
      run.seq,
      queueName,
    ]);
  });
};
