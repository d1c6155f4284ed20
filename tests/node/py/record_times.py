"""A kongtask task file for the mixed-fleet test, the twin of js/tasks/record_times.js.

Records when it started and when it ended in ``public.fleet_runs``, both read from the database
clock (``clock_timestamp()``), so its times compare with the Node task's. In between it pauses for
the payload's ``sleep_ms``, which widens the run, so that two runs of one queue in flight at once
overlap visibly.
"""

import asyncio


async def task(payload, helpers):
    job = helpers.job
    [(seq,)] = await helpers.query(
        "insert into public.fleet_runs (job_id, queue_name, i, ran_by, started_at)"
        " values (%s, %s, %s, 'kongtask', clock_timestamp()) returning seq",
        (job.id, job.queue_name, payload["i"]),
    )
    await asyncio.sleep(payload["sleep_ms"] / 1000)
    await helpers.query("update public.fleet_runs set ended_at = clock_timestamp() where seq = %s", (seq,))
