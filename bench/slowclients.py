#!/usr/bin/env python3
"""Slow and stalled clients against `oaiserver serve` (as users run it): what a normal client
waits while 64 stalled and 64 trickling connections are held, how long until the server cuts
them, and the server's CPU per 1,000 records harvested (the cost of the worker that does it).

    .venv/bin/python bench/slowclients.py                          # 20,000 records, ~2 minutes
    .venv/bin/python bench/slowclients.py --pythonpath /tmp/base   # the same, served from another
                                                                    # source tree (before/after)
    .venv/bin/python bench/slowclients.py --cpu-against /tmp/base  # server CPU only, this tree and
                                                                    # another side by side, alternating

Prints one table and writes JSON (bench/results/slowclients.json). Figures, not targets: the
exit code is 0 whenever the run completed. Everything talks to 127.0.0.1 only.

- stalled: 16 each of a connection that sends nothing, headers without their blank line, a
  body shorter than its Content-Length, a chunked body that stops mid-chunk;
- trickling: headers sent one byte every --pace seconds, never finished;
- probes: Identify and a ListRecords page (a resumption token from the middle of the list),
  alternately, each on a new connection with a 10 s timeout, before and while the crowd is held;
- cut: seconds from a crowd connection's opening until the server closes it (or answers 408).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B

FORM = "application/x-www-form-urlencoded"
POST = f"POST /oai HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\n".encode()
STALLED = {
    "silent": b"",
    "headers": b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\n",
    "short body": POST + b"Content-Length: 100\r\n\r\nverb=Id",
    "chunks": POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nve",
}
TRICKLE_START = b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\nX-Slow: "


class Crowd:
    """The hostile connections, driven by one thread: trickles sent, closes noticed and timed."""

    def __init__(self, port: int, stalled: int, trickling: int, pace: float) -> None:
        self.pace = pace
        self.opened: dict[socket.socket, tuple[str, float]] = {}
        self.cut: dict[str, list[float]] = {}
        self.answered_408 = 0
        kinds = list(STALLED)
        for i in range(stalled):
            self._open(port, kinds[i % len(kinds)], STALLED[kinds[i % len(kinds)]])
        for _ in range(trickling):
            self._open(port, "trickling", TRICKLE_START)
        self.selector = selectors.DefaultSelector()
        for sock in self.opened:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self, port: int, kind: str, first: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first:
            sock.sendall(first)
        self.opened[sock] = (kind, time.monotonic())

    def _close(self, sock: socket.socket) -> None:
        kind, opened = self.opened.pop(sock)
        self.cut.setdefault(kind, []).append(time.monotonic() - opened)
        self.selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        next_trickle = time.monotonic() + self.pace
        while self.opened and not self.stop.is_set():
            for key, _ in self.selector.select(max(0.0, next_trickle - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                self._read(sock)
            if time.monotonic() >= next_trickle:
                next_trickle += self.pace
                self._trickle()

    def _read(self, sock: socket.socket) -> None:
        """What the server sent a crowd connection: a 408 is counted; its close closes ours."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 408"):
            self.answered_408 += 1
        if not data:
            self._close(sock)

    def _trickle(self) -> None:
        """One more header byte on each trickling connection."""
        for sock, (kind, _) in list(self.opened.items()):
            if kind != "trickling":
                continue
            try:
                sock.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                self._close(sock)

    def wait_cut(self, timeout: float) -> None:
        self.thread.join(timeout)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in list(self.opened):
            sock.close()


def probe(server: B.Server, token: str, count: int, budget: float) -> dict[str, Any]:
    """Identify and a ListRecords page, alternately, each on a new connection."""
    latencies: dict[str, list[float]] = {"Identify": [], "ListRecords": []}
    failures = 0
    deadline = time.monotonic() + budget
    for i in range(count):
        if time.monotonic() > deadline:
            break
        verb = "Identify" if i % 2 == 0 else "ListRecords"
        params = {"verb": verb} if verb == "Identify" else {"verb": verb, "resumptionToken": token}
        started = time.perf_counter()
        try:
            response = requests.get(server.url, params=params, timeout=10, headers={"Connection": "close"})
            ok = response.status_code == 200 and b"<error" not in response.content[:2000]
        except requests.RequestException:
            ok = False
        elapsed = time.perf_counter() - started
        if ok:
            latencies[verb].append(elapsed)
        else:
            failures += 1
    return {
        "failures (10 s timeout or error)": failures,
        **{
            f"{verb} ms p50/p95/max": [
                round(B.percentile(values, 50) * 1000, 1),
                round(B.percentile(values, 95) * 1000, 1),
                round(max(values) * 1000 if values else float("nan"), 1),
            ]
            for verb, values in latencies.items()
        },
        "answered": {verb: len(values) for verb, values in latencies.items()},
    }


def cpu_side_by_side(workdir: Path, db: Path, other: str, harvests: int) -> dict[str, Any]:
    """Server CPU per 1,000 records of this tree and of `other`, full harvests alternating."""
    servers: dict[str, B.Server] = {}
    for name, path in (("this tree", ""), (other, other)):
        folder = workdir / ("this" if not path else "other")
        folder.mkdir()
        os.environ.pop("PYTHONPATH", None)
        if path:
            os.environ["PYTHONPATH"] = path
        servers[name] = B.start_ours(folder, db, workers=2, page_size=500)
        B.warm_up(servers[name])
    os.environ.pop("PYTHONPATH", None)
    figures: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _ in range(harvests):
            for name, server in servers.items():
                figures[name].append(B.full_harvest(server).summary()["server_cpu_ms_per_1k"])
    finally:
        for server in servers.values():
            server.stop()
    return {f"server CPU ms per 1,000 records, {name} (median; each)": (B.median(v), v) for name, v in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", "-n", type=int, default=20_000, help="records served (default 20,000)")
    parser.add_argument("--stalled", type=int, default=64, help="stalled connections held (default 64)")
    parser.add_argument("--trickling", type=int, default=64, help="trickling connections held (default 64)")
    parser.add_argument("--pace", type=float, default=0.5, help="seconds between a trickle's bytes (0.5)")
    parser.add_argument("--probes", type=int, default=200, help="probe requests per phase (default 200)")
    parser.add_argument("--harvests", type=int, default=3, help="full harvests for the CPU figure (median)")
    parser.add_argument("--cut-wait", type=float, default=120, help="seconds to wait for the crowd to be cut")
    parser.add_argument("--pythonpath", help="serve from this source tree instead (PYTHONPATH of the server)")
    parser.add_argument(
        "--cpu-against", metavar="DIR", help="only the CPU figure, alternating with a server from DIR's source tree"
    )
    parser.add_argument("--json", type=Path, default=B.BENCH / "results" / "slowclients.json")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="slowclients-"))
    try:
        return measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, workdir: Path) -> int:
    db = workdir / "bench.sqlite3"
    B.log(f"loading {args.records:,} records into {db}")
    B.load(db, args.records, 1000)
    if args.cpu_against:
        for key, value in cpu_side_by_side(workdir, db, args.cpu_against, args.harvests).items():
            print(f"{key:55} {value}")
        return 0
    if args.pythonpath:
        os.environ["PYTHONPATH"] = args.pythonpath
    server = B.start_ours(workdir, db, workers=2, page_size=500)
    results: dict[str, Any] = {"records": args.records, "served_from": args.pythonpath or str(B.ROOT)}
    try:
        B.warm_up(server)
        walks = [B.full_harvest(server) for _ in range(args.harvests)]
        results["server CPU ms per 1,000 records (median)"] = round(
            B.median([w.summary()["server_cpu_ms_per_1k"] for w in walks]), 2
        )
        results["server CPU ms per 1,000 records (each)"] = [w.summary()["server_cpu_ms_per_1k"] for w in walks]
        token = walks[0].tokens[len(walks[0].tokens) // 2]
        B.log("probing a quiet server")
        results["quiet"] = probe(server, token, args.probes, budget=120)
        B.log(f"holding {args.stalled} stalled and {args.trickling} trickling connections")
        crowd = Crowd(server.port, args.stalled, args.trickling, args.pace)
        try:
            results["crowd held"] = probe(server, token, args.probes, budget=120)
            crowd.wait_cut(args.cut_wait)
            results["cut: seconds from opening, min/median/max by kind"] = {
                kind: [round(min(v), 1), round(B.median(v), 1), round(max(v), 1)] for kind, v in crowd.cut.items()
            }
            results["not cut after --cut-wait"] = len(crowd.opened)
            results["answered 408"] = crowd.answered_408
        finally:
            crowd.close()
    finally:
        server.stop()
    for key, value in results.items():
        print(f"{key:55} {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
