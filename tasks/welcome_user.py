"""Welcome a new user: an ``async def`` task that queues other jobs.

    kongtask add-job welcome_user '{"email": "ada@example.com", "name": "Ada"}'

An async task runs on the worker's event loop, so it must not block: await its I/O instead. Its
helpers are awaitable (``await helpers.add_job(...)``, ``await helpers.query(...)``).
"""

from datetime import datetime, timedelta, timezone


async def task(payload, helpers):
    email, name = payload["email"], payload.get("name", "there")

    # One queue per user: that user's emails go out one at a time, in order.
    queue = f"emails:{email}"
    await helpers.add_job(
        "send_email",
        {"to": email, "subject": f"Welcome, {name}!", "body": "Thanks for signing up."},
        queue_name=queue,
    )
    # A follow-up in three days; the job waits in the table until then.
    tip = await helpers.add_job(
        "send_email",
        {"to": email, "subject": "A tip for your first week", "body": "Did you know..."},
        queue_name=queue,
        run_at=datetime.now(timezone.utc) + timedelta(days=3),
    )
    [(now,)] = await helpers.query("select now()")
    helpers.logger.info("welcomed %s at %s; follow-up is job %s", email, now, tip.id)
