"""Where the CPU time goes: the server's workers under bench/profiling.py, this process sampled, and
the collapsed stacks merged and summarized."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import BENCH
from servers import VENV_BIN, Server, free_port


@contextmanager
def sampling(out: Path) -> Iterator[None]:
    """Sample this process's CPU time into collapsed stacks at `out`."""
    from profiling import Sampler

    sampler = Sampler().start()
    try:
        yield
    finally:
        sampler.stop()
        sampler.dump(out)


def start_profiled_server(workdir: Path, workers: int, profdir: Path) -> Server:
    """Our app under gunicorn with bench/profiling.py as its configuration: every worker is
    sampled and writes its stacks when it exits. Same app, config and worker model as
    `oaiserver serve`, on another port."""
    profdir.mkdir(parents=True, exist_ok=True)
    for old in profdir.glob("worker-*.txt"):
        old.unlink()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OAI_STORAGE_URL", "OAI_SECRET")}
    env.update(OAI_CONFIG=str(workdir / "config.yaml"), BENCH_PROFILE_DIR=str(profdir))
    cmd = [str(VENV_BIN / "gunicorn"), "-c", str(BENCH / "profiling.py"), "--workers", str(workers)]
    cmd += ["--bind", f"127.0.0.1:{port}", "oaiserver:create_app()"]
    server = Server(f"oaiserver-profiled-{profdir.name}", cmd, env, port, workdir)
    server.wait_ready()
    return server


def merge_stacks(files: list[Path], out: Path) -> None:
    counts: dict[str, int] = {}
    for f in files:
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[stack] = counts.get(stack, 0) + int(n)
    out.write_text("".join(f"{k} {v}\n" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive and self shares of the sampled functions, from collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {"samples": 0, "inclusive": [], "self": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n

    def ranked(d: dict[str, int], skip_wrappers: bool) -> list[list[Any]]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])
        if skip_wrappers:  # the outer frames every sample goes through say nothing
            rows = [r for r in rows if r[1] < 0.97 * total]
        return [[round(100 * n / total, 1), f] for f, n in rows[:top]]

    return {"samples": total, "inclusive": ranked(inclusive, True), "self": ranked(own, False)}
