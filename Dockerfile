# syntax=docker/dockerfile:1
# kongtask's image: `kongtask worker` on the task files in /app/tasks, as a non-root user.
#
#   docker build -t kongtask .
#   docker run --rm -e DATABASE_URL=postgres://app:secret@db:5432/app -v "$PWD/tasks:/app/tasks:ro" kongtask
#
# Your tasks come from a folder mounted at /app/tasks (above), or from an image of your own built
# FROM this one (deploy/example-app/Dockerfile). The operator's guide is docs/operations.md.

ARG PYTHON_VERSION=3.12

# --- build: the wheel, installed into a virtualenv that the runtime stage copies whole -----------
# tests/test_deploy_image.py runs these RUN lines to build the venv it tests the command in, so
# every path in them comes from an ENV variable.
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/kongtask \
    WHEELS=/tmp/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kongtask/ kongtask/
# With the dashboard extra, so that one image runs `kongtask dashboard` as well as the worker.
RUN python -m pip wheel --no-deps --wheel-dir "$WHEELS" . \
 && python -m venv "$VIRTUAL_ENV" \
 && for wheel in "$WHEELS"/kongtask-*.whl; do "$VIRTUAL_ENV/bin/python" -m pip install "${wheel}[dashboard]"; done

# --- runtime: Python, tini, the virtualenv, and nothing of the build ------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
# tini is PID 1: it hands SIGTERM (docker stop, a Kubernetes pod's end) to kongtask, whose graceful
# shutdown then lets running jobs finish, and it reaps any process a task left behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kongtask \
 && useradd --system --uid 10001 --gid kongtask --home-dir /app --no-create-home --shell /usr/sbin/nologin kongtask
COPY --from=build /opt/kongtask /opt/kongtask
ENV VIRTUAL_ENV=/opt/kongtask \
    PATH=/opt/kongtask/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KONGTASK_LOG_FORMAT=json
# The project folder: kongtask finds tasks/ (and a kongtask.toml, if you add one) here.
WORKDIR /app
RUN mkdir tasks
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["tini", "--", "kongtask"]
CMD ["worker"]
