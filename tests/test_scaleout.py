"""Several stateless instances over one store; gunicorn as in production; nothing leaks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import Clock, LiveServer, identifiers, make_config, make_record, token_of, validate

from oaiserver import create_app
from oaiserver.store import Store


def test_two_instances_share_tokens(store_url: str, store: Store, clock: Clock) -> None:
    """A harvester alternating page by page between two instances gets the whole list once."""
    store.write([make_record(f"{i:03d}") for i in range(95)])
    clock.tick()
    other = Store(store_url)
    try:
        with LiveServer(None) as one, LiveServer(None) as two:
            # The secret is not configured: it is generated once and kept in the store.
            one.server.app = create_app(make_config(store_url, repository__base_url=one.url), store=store)
            two.server.app = create_app(make_config(store_url, repository__base_url=two.url), store=other)
            doc = validate(requests.get(one.url + "?verb=ListIdentifiers&metadataPrefix=oai_dc", timeout=10).content)
            seen, servers, turn = identifiers(doc), [one, two], 1
            while (token := token_of(doc)) is not None and token.text:
                url = servers[turn % 2].url
                page = requests.get(f"{url}?verb=ListIdentifiers&resumptionToken={token.text}", timeout=10)
                doc = validate(page.content)
                seen += identifiers(doc)
                turn += 1
    finally:
        other.close()
    assert turn == 10
    assert seen == [f"oai:test.example.org:{i:03d}" for i in range(95)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_gunicorn_workers_accept_each_others_tokens(tmp_path: Path, store_url: str, store: Store, clock: Clock) -> None:
    store.write([make_record(f"{i:03d}") for i in range(60)])
    clock.now = int(time.time()) - 5  # the server uses the real clock: make the records visible
    store.write([make_record("late")])
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "repository": {"identifier": "test.example.org", "base_url": f"http://127.0.0.1:{port}/oai"},
                "storage": {"url": store_url},
                "server": {"page_size": 7},
            }
        )
    )
    exe = Path(sys.executable).parent / "oaiserver"
    proc = subprocess.Popen(
        [str(exe), "--config", str(cfg), "serve", "--workers", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/oai"
        for _ in range(100):
            try:
                requests.get(base + "?verb=Identify", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        doc = validate(requests.get(base + "?verb=ListIdentifiers&metadataPrefix=oai_dc", timeout=10).content)
        seen = identifiers(doc)
        while (token := token_of(doc)) is not None and token.text:
            # A new connection each time, so consecutive pages land on different workers.
            doc = validate(
                requests.get(
                    f"{base}?verb=ListIdentifiers&resumptionToken={token.text}",
                    timeout=10,
                    headers={"Connection": "close"},
                ).content
            )
            seen += identifiers(doc)
        assert sorted(seen) == sorted(store.identifiers()) and len(seen) == 61
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            # gunicorn gives a worker its graceful_timeout (30 s) to end, then kills it: on a busy
            # machine a worker may take that long (one still booting, for instance).
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"oaiserver serve did not stop within 60 s of SIGTERM; its output:\n{out.decode()[-3000:]}")
    workers = set(re.findall(rb"Booting worker with pid: (\d+)", out))
    assert len(workers) == 3


def test_no_traceback_or_configuration_in_responses(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(store_url, server__secret="s3cret-value-xyz")
    app = create_app(cfg, store=store)

    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("internal detail /etc/passwd")

    monkeypatch.setattr("oaiserver.protocol.handle", boom)
    client = app.test_client()
    response = client.get("/oai?verb=Identify")
    assert response.status_code == 500
    for secret in (b"Traceback", b"RuntimeError", b"/etc/passwd", b"s3cret-value-xyz", store_url.encode()):
        assert secret not in response.data
