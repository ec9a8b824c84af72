"""The servers under test: oaiserver as in production (`oaiserver serve`) and the pyoai peer, each a
gunicorn we start on a free port and whose CPU and memory we read from /proc."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import requests
import yaml
from harness import BENCH, ROOT, log
from loading import REPO_ID
from procfs import CLK_TCK, _stat, children, status_kb

VENV_BIN = Path(sys.executable).parent
PEER_VENV = BENCH / ".peer-venv"
# The second peer, in the same venv: (distribution, version, the module of its app in bench/).
PEER_PACKAGES = {"peer": ("oaipmh", "4.0.0", "peer_app"), "oairepo": ("oai-repo", "0.5.2", "peer_oairepo")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A gunicorn master we started, its workers, and their CPU time."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, logdir: Path) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/oai"
        self.out = open(logdir / f"{name}.out.log", "wb")  # noqa: SIM115 - closed in stop()
        self.err = open(logdir / f"{name}.err.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err, start_new_session=True)
        self.seen_workers: set[int] = set()
        self.extra_cpu: Callable[[], float] | None = None  # CPU spent for it elsewhere (PostgreSQL)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.err.name}")
            with suppress(requests.RequestException):
                if requests.get(self.url, params={"verb": "Identify"}, timeout=5).status_code == 200:
                    workers = self.workers()
                    if len(workers) >= 1:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s; see {self.err.name}")

    def workers(self) -> list[int]:
        found = children(self.proc.pid)
        self.seen_workers.update(found)
        return found

    def cpu(self) -> float:
        """CPU seconds (user + system) of the master and its live workers."""
        ticks = 0
        for pid in [self.proc.pid, *self.workers()]:
            st = _stat(pid)
            if st is not None:
                ticks += st[1]
        return ticks / CLK_TCK + (self.extra_cpu() if self.extra_cpu is not None else 0.0)

    def memory(self) -> dict[str, Any]:
        workers = self.workers()
        return {
            "master_hwm_mb": (status_kb(self.proc.pid, "VmHWM") or 0) / 1024,
            "worker_hwm_mb": [(status_kb(p, "VmHWM") or 0) / 1024 for p in workers],
            "worker_rss_mb": [(status_kb(p, "VmRSS") or 0) / 1024 for p in workers],
            "workers_ever": len(self.seen_workers),
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown of the workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.out.close()
        self.err.close()


def start_ours(workdir: Path, db: Path | str, workers: int, page_size: int, *, code: Path | None = None) -> Server:
    """oaiserver on the SQLite file `db`, or on the store URL `db` (a str); `code`: the checkout
    whose `oaiserver` package serves (first on its PYTHONPATH), else the one installed."""
    from oaiserver.synthetic import synthetic_sets

    port = free_port()
    cfg = {
        "repository": {"name": "Benchmark", "base_url": f"http://127.0.0.1:{port}/oai", "identifier": REPO_ID},
        "storage": {"url": db if isinstance(db, str) else f"sqlite:///{db}"},
        "server": {"page_size": page_size},
        "sets": synthetic_sets(),
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("OAI_STORAGE_URL", "OAI_SECRET")}
    env["OAI_CONFIG"] = str(path)
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    cmd = [str(VENV_BIN / "oaiserver"), "--config", str(path), "serve"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    server = Server("oaiserver", cmd, env, port, workdir)
    server.wait_ready()
    return server


def pg_backend_cpu(admin_url: str, application_name: str) -> Callable[[], float]:
    """A reader of the CPU seconds of the PostgreSQL backends serving `application_name` (on
    this machine, from /proc), for a server on PostgreSQL: its queries run there."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)

    def cpu() -> float:
        with engine.connect() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %(n)s", {"n": application_name}
            ).scalars()
            ticks = sum(st[1] for st in map(_stat, pids) if st is not None)
        return ticks / CLK_TCK

    return cpu


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    gunicorn_version = importlib.metadata.version("gunicorn")
    wanted = [*(f"{dist}=={version}" for dist, version, _ in PEER_PACKAGES.values()), f"gunicorn=={gunicorn_version}"]
    names = [w.split("==")[0] for w in wanted]
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", f"import importlib.metadata as m; print(*(m.version(d) for d in {names!r}))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.split() == [w.split("==")[1] for w in wanted]:
            return PEER_VENV
    log(f"making {PEER_VENV.relative_to(ROOT)} with {', '.join(wanted)}")
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *wanted], check=True)
    return PEER_VENV


def start_peer(workdir: Path, db: Path, workers: int, page_size: int, name: str = "peer") -> Server:
    """A peer (PEER_PACKAGES: pyoai by default, or oai-repo) under the same gunicorn, sync workers."""
    venv = ensure_peer_venv()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PEER_DB=str(db), PEER_BASE_URL=f"http://127.0.0.1:{port}/oai", PEER_PAGE_SIZE=str(page_size))
    cmd = [str(venv / "bin" / "gunicorn"), "--workers", str(workers), "--worker-class", "sync"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--chdir", str(BENCH), f"{PEER_PACKAGES[name][2]}:app"]
    server = Server(name, cmd, env, port, workdir)
    server.wait_ready()
    return server
