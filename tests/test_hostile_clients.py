"""Hostile clients against `oaiserver serve` as users run it (gunicorn, the default worker):
sockets that stall or trickle their request hold no worker, a stalled request is cut, a body
of any framing is read only up to the limit, and each instance has its own control socket."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests
from conftest import OAI, error_codes, validate
from loadkit import Gunicorn

from oaiserver.config import ConfigError, from_mapping
from oaiserver.store import Store

pytestmark = pytest.mark.slow

FORM = "application/x-www-form-urlencoded"
POST_HEAD = f"POST /oai HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\n".encode()
STALLED_HEADERS = b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\n"
SHORT_BODY = f"POST /oai HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nContent-Length: 100\r\n\r\nverb=Ide".encode()
STALLED_CHUNKS = (
    f"POST /oai HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nverb=".encode()
)
KINDS = {"silent": b"", "stalled headers": STALLED_HEADERS, "short body": SHORT_BODY, "stalled chunks": STALLED_CHUNKS}


def sqlite_url(tmp_path: Path) -> str:
    """A store made before the server starts (two workers creating one at once may collide)."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    Store(url).close()
    return url


def connect(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if first:
        sock.sendall(first)
    return sock


class Trickle:
    """Sockets that send one more header byte every `pace` seconds and never finish."""

    def __init__(self, port: int, count: int, pace: float = 0.5) -> None:
        self.sockets = [connect(port, b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(count)]
        self.stop = threading.Event()
        self.pace = pace
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.pace):
            for sock in self.sockets:
                with suppress(OSError):
                    sock.send(b"a")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()


@contextmanager
def hostile_crowd(port: int, per_kind: int) -> Iterator[list[socket.socket]]:
    """`per_kind` sockets of each stalled kind, and as many trickling ones."""
    held = [connect(port, first) for first in KINDS.values() for _ in range(per_kind)]
    trickle = Trickle(port, per_kind)
    try:
        yield held + trickle.sockets
    finally:
        trickle.close()
        for sock in held:
            sock.close()


def test_identify_answers_while_80_connections_stall_or_trickle(tmp_path: Path) -> None:
    """Stalled headers, short bodies, stalled chunks, silent and trickling sockets (16 of each)
    take no worker from other clients: Identify, ListRecords and a POST are answered while all
    of them are still held (server.request_timeout is set far beyond the test)."""
    url = sqlite_url(tmp_path)
    with Gunicorn(tmp_path, url, timeout=120, request_timeout=300) as server, hostile_crowd(server.port, 16) as crowd:
        assert len(crowd) == 80
        for _ in range(3):
            identify = requests.get(server.base, params={"verb": "Identify"}, timeout=10)
            assert identify.status_code == 200
            assert error_codes(validate(identify.content)) == []
        listed = requests.get(server.base, params={"verb": "ListRecords", "metadataPrefix": "oai_dc"}, timeout=10)
        assert error_codes(validate(listed.content)) == ["noRecordsMatch"]
        posted = requests.post(server.base, data={"verb": "Identify"}, timeout=10)
        assert posted.status_code == 200 and error_codes(validate(posted.content)) == []
        answered_or_closed, _, _ = select.select(crowd, [], [], 0)
        assert answered_or_closed == [], "the crowd was let go before the other clients were answered"


def closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before closing the socket (waits until it closes, at most 60 s)."""
    sock.settimeout(60)
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return received
        if not data:
            return received
        received += data


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_stalled_request_is_cut(tmp_path: Path, kind: str) -> None:
    """A request not received whole within server.request_timeout is answered 408 (or, when
    nothing came, closed), long before gunicorn's worker timeout."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120, request_timeout=2) as server:
        sock = connect(server.port, KINDS[kind])
        try:
            received = closed_by_server(sock)
        finally:
            sock.close()
        if kind == "silent":
            assert received == b""
        else:
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
        assert requests.get(server.base, params={"verb": "Identify"}, timeout=10).status_code == 200


def test_a_trickling_request_is_cut(tmp_path: Path) -> None:
    """The deadline is for the whole request, not for each byte: a client that sends a byte
    every 0.2 s is cut too."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120, request_timeout=2) as server:
        sock = connect(server.port, b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        received = b""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    received = closed_by_server(sock)
                    break
                sock.send(b"a")
            else:
                pytest.fail("the trickling request was not cut within 60 s")
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut while we were sending
        finally:
            sock.close()
        assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received[:200]


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def test_a_huge_chunked_body_is_not_read_whole(tmp_path: Path) -> None:
    """200 MB sent chunked (no Content-Length): the server reads at most its limit, answers
    badArgument (HTTP 200, schema-valid), and its workers grow by less than 100 MB."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120) as server:
        workers = server.workers()
        before = rss_kib(workers)
        sock = connect(server.port, f"POST /oai HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\n".encode())
        sock.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"verb=Identify&" + b"x" * (1024 * 1024 - 14)
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = {"chunks": 0}
        received: list[bytes] = []

        def send() -> None:
            with suppress(OSError):
                for _ in range(200):
                    sock.sendall(framed)
                    sent["chunks"] += 1
                sock.sendall(b"0\r\n\r\n")

        sender = threading.Thread(target=send, daemon=True)
        reader = threading.Thread(target=lambda: received.append(closed_by_server(sock)), daemon=True)
        sender.start()
        reader.start()
        peak = before
        while sender.is_alive() or reader.is_alive():
            peak = max(peak, rss_kib(workers))
            sender.join(0.05)
            reader.join(0.05)
        sock.close()
        response = received[0]
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert error_codes(validate(body)) == ["badArgument"]
        assert b"too long" in body
        assert (peak - before) < 100 * 1024, f"workers grew by {(peak - before) // 1024} MB"
        assert sent["chunks"] < 200, "the server read the whole body"
        assert requests.get(server.base, params={"verb": "Identify"}, timeout=10).status_code == 200


def test_a_long_form_post_gets_bad_argument(tmp_path: Path) -> None:
    """Over the 64 KiB limit with a Content-Length, by the real server: badArgument, not 413."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120) as server:
        body = "verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:x:" + "y" * 70_000
        response = requests.post(server.base, data=body, headers={"Content-Type": FORM}, timeout=30)
        assert response.status_code == 200
        assert error_codes(validate(response.content)) == ["badArgument"]
        assert b"too long" in response.content


def test_a_long_get_gets_bad_argument(tmp_path: Path) -> None:
    """A GET whose identifier passes the 4,096-character limit is answered badArgument by the
    real server, not refused by gunicorn for its request line."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120) as server:
        params = {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": "oai:x:" + "y" * 5000}
        response = requests.get(server.base, params=params, timeout=30)
        assert response.status_code == 200, response.text[:300]
        assert error_codes(validate(response.content)) == ["badArgument"]
        assert b"too long" in response.content


def test_each_instance_has_its_own_control_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `oaiserver serve` on one host get distinct control sockets; stopping one leaves
    the other's in place."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    url = sqlite_url(tmp_path)
    with Gunicorn(tmp_path, url) as first, Gunicorn(tmp_path, url) as second:
        sockets = until_sockets(runtime, 2)
        assert all(any(str(s.port) in name for name in sockets) for s in (first, second)), sockets
        first.stop()
        left = until_sockets(runtime, 1)
        assert left == [n for n in sockets if str(second.port) in n]
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(str(runtime / left[0]))  # the survivor still answers on it
        client.close()
    assert until_sockets(runtime, 0) == []


def until_sockets(folder: Path, count: int, timeout: float = 30.0) -> list[str]:
    """The names of the Unix sockets under `folder`, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_socket())
        if len(found) == count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("value", [0, 301, "soon", True])
def test_request_timeout_out_of_range_is_named(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^server\.request_timeout: (expected|must be between)"):
        from_mapping({"server": {"request_timeout": value}})
    assert from_mapping({}).request_timeout == 20
    assert from_mapping({"server": {"request_timeout": 300}}).request_timeout == 300


def read_responses(sock: socket.socket) -> list[bytes]:
    """Every response on a connection the server closes, split at each status line."""
    data = closed_by_server(sock)
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def test_expect_100_continue_and_pipelining_still_work(tmp_path: Path) -> None:
    """The event loop sends one `100 Continue` for a body it waits for, and two requests sent
    at once on one connection get two answers, in order."""
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120) as server:
        sock = connect(server.port, POST_HEAD + b"Content-Length: 13\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(30)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"verb=Identify")
        sock.shutdown(socket.SHUT_WR)
        (answer,) = read_responses(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert error_codes(validate(answer.partition(b"\r\n\r\n")[2])) == []

        two = b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\n\r\n"
        two += POST_HEAD + b"Content-Length: 13\r\nConnection: close\r\n\r\nverb=ListSets"
        sock = connect(server.port, two)
        answers = read_responses(sock)
        sock.close()
        assert [a[:15] for a in answers] == [b"HTTP/1.1 200 OK"] * 2
        docs = [validate(a.partition(b"\r\n\r\n")[2]) for a in answers]
        assert [d.find(f"{OAI}request").get("verb") for d in docs] == ["Identify", "ListSets"]
        assert [error_codes(d) for d in docs] == [[], []]


THIN_CHUNKS = POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 40_000
BIG_HEADERS = b"GET /oai?verb=Identify HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"y" * 8000 + b"\r\n" * 1
BAD_CHUNK = POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nverb=Identify\r\n"
REFUSED = {
    "chunked framing thinner than its content": (THIN_CHUNKS, b"HTTP/1.1 400 "),
    "a header block over 16 KiB": (BIG_HEADERS * 5, b"HTTP/1.1 431 "),
    "a chunk size that is not hexadecimal": (BAD_CHUNK, b"HTTP/1.1 400 "),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_request_that_cannot_be_buffered_whole_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """Requests the event loop cannot hand on whole are answered by it, then closed; none is
    given to a thread that would wait on the client (which then stalls here), and the answer
    comes long before server.request_timeout (set to 300 s)."""
    sent, status = REFUSED[kind]
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120, request_timeout=300) as server:
        sock = connect(server.port, b"")
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(sent)
        received = closed_by_server(sock)
        sock.close()
        assert received.startswith(status), received[:300]
        assert received.count(b"HTTP/1.1 ") == 1
        assert requests.get(server.base, params={"verb": "Identify"}, timeout=10).status_code == 200


# Chunked framing h11 lets through but gunicorn's own body reader refuses when the application
# reads the body: each is the client's fault, answered 400, never a 500 with a traceback.
STRICTER_CHUNKS = {
    "a chunk size with a trailing space": b"3 \r\nv=a\r\n0\r\n\r\n",
    "a Content-Length trailer": b"3\r\nv=a\r\n0\r\nContent-Length: 3\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(STRICTER_CHUNKS))
def test_chunked_framing_the_application_cannot_read_is_a_bad_request(tmp_path: Path, kind: str) -> None:
    sent = POST_HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + STRICTER_CHUNKS[kind]
    with Gunicorn(tmp_path, sqlite_url(tmp_path), timeout=120, request_timeout=30) as server:
        sock = connect(server.port, b"")
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(sent)
        received = closed_by_server(sock)
        sock.close()
        assert received.startswith(b"HTTP/1.1 400 "), received[:300]
        assert b"Traceback" not in received
        assert requests.get(server.base, params={"verb": "Identify"}, timeout=10).status_code == 200


@pytest.mark.parametrize(("timeout", "every"), [(60, 1.0), (1, 0.25)])
def test_the_worker_tells_the_arbiter_it_lives_once_a_heartbeat(
    monkeypatch: pytest.MonkeyPatch, timeout: int, every: float
) -> None:
    """gthread touches its heartbeat file at each turn of its event loop (twice a request); ours
    at most once a second, or four times within the arbiter's timeout if that is shorter."""
    import logging
    import os

    from gunicorn.config import Config

    from oaiserver import serving

    now = [1000.0]
    monkeypatch.setattr(serving.time, "monotonic", lambda: now[0])
    # The arbiter gives its workers half its timeout.
    worker = serving.RequestBufferingWorker(0, os.getpid(), [], None, timeout / 2, Config(), logging.getLogger("t"))
    touched = []
    monkeypatch.setattr(worker.tmp, "notify", lambda: touched.append(now[0]))
    for _ in range(10):
        worker.notify()
        now[0] += every / 4
    worker.tmp.close()
    assert touched == [1000.0, 1000.0 + every, 1000.0 + 2 * every]
