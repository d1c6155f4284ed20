"""An example task, ``hello``: kongtask add-job hello '{"name": "Ada"}'."""


def task(payload, helpers):
    helpers.logger.info("hello, %s", payload.get("name", "world"))
