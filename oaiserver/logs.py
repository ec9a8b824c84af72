"""Where the server's log lines go, however it is served.

`oaiserver serve` (and `--dev`) set up logging before the app exists; gunicorn run by hand
configures only its own loggers, and Python drops INFO lines that reach no handler. So the app
makes sure the `oaiserver` loggers reach one: gunicorn's error log when a gunicorn worker runs
it (its file, `--error-logfile`, and its level, `--log-level`), else standard error.
"""

from __future__ import annotations

import logging
import sys

OURS = "oaiserver"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def reach_a_handler() -> None:
    """Give the `oaiserver` loggers a handler unless logging is configured already (by our
    CLIs, a `--log-config`, a test runner): once per process, whatever serves the app."""
    ours = logging.getLogger(OURS)
    if ours.handlers or logging.getLogger().handlers:
        return
    gunicorn = logging.getLogger("gunicorn.error")
    if gunicorn.handlers:
        for handler in gunicorn.handlers:
            ours.addHandler(handler)
        ours.setLevel(gunicorn.level or logging.INFO)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
    ours.propagate = False  # a root handler added later must not print each line twice
