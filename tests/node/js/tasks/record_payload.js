// A graphile-worker task (0.1.0, 0.17.3 and 0.18.0 alike): records the job it was given in
// public.interop_results, so the Python side can compare what Node saw with what was sent.
// JSON.stringify(payload) is what a Node task would send on: JavaScript's reading of the payload.
// 0.1.0's job row names its queue; later ones hold job_queue_id, which helpers.getQueueName() reads.
module.exports = async (payload, helpers) => {
  const { job } = helpers;
  const queueName = "queue_name" in job ? job.queue_name : await helpers.getQueueName();
  await helpers.withPgClient((client) =>
    client.query(
      "insert into public.interop_results" +
        " (job_id, task_identifier, queue_name, attempts, last_error, payload, ran_by)" +
        " values ($1, $2, $3, $4, $5, $6, 'node')",
      [job.id, job.task_identifier, queueName, job.attempts, job.last_error, JSON.stringify(payload)]
    )
  );
};
