"""Every error a kongtask user may catch.

Each message says what is wrong and what to do, in one line, so the CLI can print it as it is.
"""

from __future__ import annotations


class KongtaskError(Exception):
    """Base class of every error kongtask raises on purpose."""


class ConfigurationError(KongtaskError):
    """The options given to kongtask do not fit together, or a value is invalid."""


class ConnectionFailed(KongtaskError):
    """PostgreSQL could not be reached or refused the connection.

    ``transient`` is true when nothing answered (the server may still be starting), false when
    the server refused us (a wrong password, user or database) or the host name does not resolve.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CrontabError(ConfigurationError):
    """A crontab line, or a cron item declared in code, cannot be read; the message names the
    file and line (``crontab:3: ...``) or the item."""


class MigrationError(KongtaskError):
    """The database schema cannot be brought to the version this kongtask knows."""


class SchemaTooOld(MigrationError):
    """What was asked needs graphile-worker's 0.18 schema, and the database holds v0.1.0's."""


class SchemaChanged(MigrationError):
    """Another process ran a breaking migration while the worker ran: it stopped, and a restart
    runs on the new schema."""


class TaskLoadError(KongtaskError):
    """A task file or module could not be turned into tasks."""


class PayloadError(KongtaskError, ValueError):
    """A job payload (or another job option) cannot be sent to PostgreSQL."""
