"""Running it: health, metrics, overload and a store that goes away."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from conftest import Clock, LiveServer, make_config, make_record, validate

from oaiserver import create_app
from oaiserver.store import Store


def test_healthz(app: Any) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_metrics_count_requests_errors_and_records(app: Any, store: Store, clock: Clock) -> None:
    store.write([make_record(str(i)) for i in range(3)])
    clock.tick()
    client = app.test_client()

    def value(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    before = client.get("/metrics").get_data(as_text=True)
    client.get("/oai?verb=ListRecords&metadataPrefix=oai_dc")
    client.get("/oai?verb=Nope")
    after = client.get("/metrics").get_data(as_text=True)
    for name, delta in (
        ('oai_requests_total{verb="ListRecords"}', 1),
        ('oai_records_served_total{verb="ListRecords"}', 3),
        ('oai_errors_total{code="badVerb"}', 1),
        ('oai_request_seconds_count{verb="ListRecords"}', 1),
    ):
        assert value(after, name) - value(before, name) == delta, name


def test_store_failure_answers_503_with_retry_after(app: Any, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "freeze", down)
    monkeypatch.setattr(store, "ping", down)
    client = app.test_client()
    for path in ("/oai?verb=ListRecords&metadataPrefix=oai_dc", "/healthz"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"].isdigit()
        assert b"Traceback" not in response.data and b"SELECT" not in response.data


def test_overload_gets_503_and_retry_after(
    store_url: str, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cap at 2, a third concurrent list request is refused, and served once retried."""
    store.write([make_record(str(i)) for i in range(3)])
    clock.tick()
    release, inside = threading.Event(), threading.Semaphore(0)
    real_page, held = store.page_rendered, iter(range(2))

    def slow_page(*args: Any, **kwargs: Any) -> Any:
        if next(held, None) is not None:  # the first two list pages wait until released
            inside.release()
            release.wait(10)
        return real_page(*args, **kwargs)

    monkeypatch.setattr(store, "page_rendered", slow_page)
    with LiveServer(None) as server:
        cfg = make_config(
            store_url, repository__base_url=server.url, server__max_concurrent_lists=2, server__retry_after=3
        )
        server.server.app = create_app(cfg, store=store)
        url = server.url + "?verb=ListIdentifiers&metadataPrefix=oai_dc"
        results: list[int] = []
        workers = [
            threading.Thread(target=lambda: results.append(requests.get(url, timeout=20).status_code)) for _ in range(2)
        ]
        for w in workers:
            w.start()
        assert inside.acquire(timeout=10) and inside.acquire(timeout=10)
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "3"
        assert requests.get(server.url + "?verb=Identify", timeout=10).status_code == 200, "only lists are capped"
        release.set()
        for w in workers:
            w.join(20)
        assert results == [200, 200]
        validate(requests.get(url, timeout=10).content)


def test_harvests_show_on_the_home_page_and_in_metrics(store_url: str, store: Store) -> None:
    from oaiserver.store import finish_run, start_run

    partners = [
        {"name": "alpha", "base_url": "http://127.0.0.1:9/oai"},
        {"name": "beta", "base_url": "http://127.0.0.1:9/oai"},
    ]
    app = create_app(make_config(store_url, partners=partners), store=store)
    first = start_run(store, "alpha", "me", started=1_700_000_000, from_date=None, resumed=False)
    finish_run(store, first, "alpha", finished=1_700_000_060, outcome="success", reason=None, counts={"received": 40})
    second = start_run(store, "alpha", "me", started=1_700_000_100, from_date=None, resumed=False)
    finish_run(
        store, second, "alpha", finished=1_700_000_110, outcome="failed", reason="timeout", counts={"received": 2}
    )
    client = app.test_client()
    home = client.get("/").get_data(as_text=True)
    assert "alpha" in home and "failed" in home and "2023-11-14T22:15:10Z" in home
    assert "beta" in home and "never" in home
    text = client.get("/metrics").get_data(as_text=True)
    assert 'harvest_runs_total{outcome="success",partner="alpha"} 1.0' in text
    assert 'harvest_runs_total{outcome="failed",partner="alpha"} 1.0' in text
    assert 'harvest_records_total{partner="alpha"} 42.0' in text
    assert 'harvest_last_success_timestamp_seconds{partner="alpha"} 1.70000006e+09' in text
