"""What the workers tell whoever watches them: a job started or finished, the database went or came back.

The worker and the pool call these hooks on their hot path. :data:`NO_OBSERVER`, the default, does
nothing, so a worker without metrics pays a method call per hook and imports nothing more; the
Prometheus metrics (:mod:`kongtask._metrics`) are one observer. Hooks run on the event loop and
must not block or raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._job import Job


class Observer:
    """Hooks the workers call; each does nothing here."""

    def job_started(self, job: Job) -> None:
        """A worker is about to run ``job`` (its attempt is counted already)."""

    def job_finished(self, job: Job, seconds: float, failed: bool) -> None:
        """``job`` ran for ``seconds`` and succeeded, or ``failed`` (to be retried, or for good
        when its attempts are used up)."""

    def outage_began(self) -> None:
        """The workers lost the database (once per outage, however many statements noticed)."""

    def outage_ended(self) -> None:
        """A statement reached the database again after an outage."""

    async def stopped(self) -> None:
        """The workers have stopped: let go of what was held for them (the metrics server)."""


#: The observer of a worker without metrics.
NO_OBSERVER = Observer()
