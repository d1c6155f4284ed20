"""A kongtask task file, the twin of js/tasks/record_payload.js: records the job it was given.

The interop tests copy it into a tasks folder under each task's name, and compare what it wrote
to ``public.interop_results`` with what Node sent.
"""

import json


async def task(payload, helpers):
    job = helpers.job
    await helpers.query(
        "insert into public.interop_results"
        " (job_id, task_identifier, queue_name, attempts, last_error, payload, ran_by)"
        " values (%s, %s, %s, %s, %s, %s, 'kongtask')",
        (job.id, job.task_identifier, job.queue_name, job.attempts, job.last_error, json.dumps(payload)),
    )
