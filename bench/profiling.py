"""A CPU-time sampling profiler, standard library only, for `bench.py --profile`.

`signal.setitimer(ITIMER_PROF)` delivers SIGPROF after every `interval` seconds of CPU time the
process consumes (user + system, all threads), so idle waits are never sampled, and time in C
code (zlib, sqlite3, socket writes) is charged to the Python function that called it. Each
sample's stack is counted; `dump` writes collapsed stacks (`frame;frame;... count`, outermost
first), the format flame-graph tools read.

Also a gunicorn configuration file: `gunicorn -c bench/profiling.py 'oaiserver:create_app()'`
samples every worker once it has loaded the app and writes `$BENCH_PROFILE_DIR/worker-<pid>.txt` when the
worker exits. The master is not sampled (it only watches the workers).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
from pathlib import Path
from types import FrameType
from typing import Any

_PREFIXES = sorted(
    {str(Path(p)) + os.sep for p in (sysconfig.get_path("purelib"), sysconfig.get_path("stdlib"))}
    | {str(Path(__file__).resolve().parent.parent) + os.sep},
    key=len,
    reverse=True,
)


def _where(filename: str) -> str:
    for prefix in _PREFIXES:
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


class Sampler:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.counts: dict[tuple[Any, ...], int] = {}
        self._names: dict[Any, str] = {}
        self._previous: Any = None

    def _handler(self, _signum: int, frame: FrameType | None) -> None:
        stack = []
        while frame is not None:
            stack.append(frame.f_code)
            frame = frame.f_back
        key = tuple(stack)
        self.counts[key] = self.counts.get(key, 0) + 1

    def start(self) -> Sampler:
        self._previous = signal.signal(signal.SIGPROF, self._handler)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._previous or signal.SIG_DFL)

    def _name(self, code: Any) -> str:
        name = self._names.get(code)
        if name is None:
            qualname = getattr(code, "co_qualname", code.co_name)
            name = f"{qualname} ({_where(code.co_filename)}:{code.co_firstlineno})".replace(";", ",")
            self._names[code] = name
        return name

    def dump(self, path: Path) -> None:
        lines = [
            ";".join(self._name(c) for c in reversed(stack)) + f" {n}"
            for stack, n in sorted(self.counts.items(), key=lambda kv: -kv[1])
        ]
        path.write_text("\n".join(lines) + "\n")


# ---- gunicorn hooks (this file is also a gunicorn configuration file) -----------------------

_worker_sampler: Sampler | None = None


def post_fork(server: Any, worker: Any) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # as `oaiserver serve` does


def post_worker_init(worker: Any) -> None:
    """The app is loaded: sample from here on (imports and start-up are left out)."""
    global _worker_sampler
    _worker_sampler = Sampler(float(os.environ.get("BENCH_PROFILE_INTERVAL", "0.001"))).start()


def worker_exit(server: Any, worker: Any) -> None:
    if _worker_sampler is not None:
        _worker_sampler.stop()
        out = Path(os.environ.get("BENCH_PROFILE_DIR", ".")) / f"worker-{os.getpid()}.txt"
        _worker_sampler.dump(out)
