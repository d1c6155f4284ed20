"""Node.js graphile-worker, driven as its users drive it, for the interop tests.

``fixtures.py`` installs the real npm packages once and runs them; ``js/`` holds the Node scripts and
the task files that the tests hand to upstream's CLI, ``py/`` their kongtask twins; ``interop.py``
and ``fleet.py`` hold what the interop test files share (payloads, result tables, the mixed fleet).
"""
