"""Every default of the library in one place (the CLI's settings start from these too)."""

from __future__ import annotations

from datetime import timedelta

#: The schema that holds the jobs, as upstream's.
SCHEMA = "graphile_worker"
CONCURRENCY = 1
#: Seconds between fetches of an idle worker when no NOTIFY arrives (upstream: 2000 ms).
POLL_INTERVAL = 2.0
#: Seconds running jobs may take to finish after a stop request before they are failed.
SHUTDOWN_TIMEOUT = 30.0
#: Seconds between refreshes of ``locked_at`` on the queues of running jobs.
HEARTBEAT_INTERVAL = 30.0
#: A queue locked longer than this (without a heartbeat) is taken to belong to a dead worker.
#: Four heartbeats: a live worker is never robbed, a dead one's job waits about two minutes.
JOB_EXPIRY = timedelta(minutes=2)
#: The most jobs one fetch checks out. The local buffer adapts below it to what the workers get
#: through in about 50 ms, so quick jobs go in large batches and slow ones are not hoarded.
BATCH_SIZE = 500
#: Seconds a task may run before it is failed; ``None`` means no limit.
TASK_TIMEOUT: float | None = None
#: The port of the metrics and probes server; ``None``: no server.
METRICS_PORT: int | None = None
#: Where that server listens: this machine only, unless asked (a container sets 0.0.0.0).
METRICS_HOST = "127.0.0.1"
