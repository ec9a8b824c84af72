"""Fixtures: a store on SQLite and (in CI, or with OAI_TEST_PG_URL) on PostgreSQL, an app,
a client that validates every response against the official schemas, and a live server."""

from __future__ import annotations

import os
import shutil
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import pytest
import sqlalchemy as sa
from fleet import Fleet
from lxml import etree
from werkzeug.serving import BaseWSGIServer, make_server

from harvester.pipeline import Worker
from oaiserver import create_app, oai_dc
from oaiserver.config import Config, from_mapping
from oaiserver.records import DCValue, Record
from oaiserver.store import Store

HERE = Path(__file__).parent
SCHEMAS = HERE / "data" / "schemas"
OAI = "{http://www.openarchives.org/OAI/2.0/}"
NS = {
    "oai": "http://www.openarchives.org/OAI/2.0/",
    "oai_dc": "http://www.openarchives.org/OAI/2.0/oai_dc/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "id": "http://www.openarchives.org/OAI/2.0/oai-identifier",
    "prov": "http://www.openarchives.org/OAI/2.0/provenance",
}
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_url_from(environ: Mapping[str, str]) -> str | None:
    """OAI_TEST_PG_URL; with CI set and no URL given, the local PostgreSQL; otherwise None (skip)."""
    return environ.get("OAI_TEST_PG_URL") or (DEFAULT_PG_URL if environ.get("CI") else None)


PG_URL = pg_url_from(os.environ)


def browser_skip_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the browser tests cannot run here, or None when they run. With CI set they always
    run, so a CI without Chromium fails rather than passing with nothing checked."""
    if environ.get("CI"):
        return None
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name, path=environ.get("PATH")) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found on PATH: `make browser` installs Debian's chromium and "
        "chromium-driver when run as root with apt-get (with CI set these tests fail instead)"
    )


# A namespace imported first is never fetched again: see data/schemas/SOURCES.md.
ORDER = [
    ("http://www.w3.org/XML/1998/namespace", "xml.xsd"),
    ("http://purl.org/dc/elements/1.1/", "simpledc20021212.xsd"),
    ("http://www.openarchives.org/OAI/2.0/", "OAI-PMH.xsd"),
    ("http://www.openarchives.org/OAI/2.0/oai_dc/", "oai_dc.xsd"),
    ("http://www.openarchives.org/OAI/2.0/provenance", "provenance.xsd"),
    ("http://www.openarchives.org/OAI/2.0/oai-identifier", "oai-identifier.xsd"),
    ("http://www.openarchives.org/OAI/2.0/friends/", "friends.xsd"),
    ("http://www.openarchives.org/OAI/2.0/branding/", "branding.xsd"),
]


def _load_schema(also: Sequence[tuple[str, Path]] = ()) -> etree.XMLSchema:
    """OAI-PMH's schemas, and `also` (namespace, file) for payloads of other formats."""
    located = [(ns, SCHEMAS / name) for ns, name in ORDER] + list(also)
    imports = "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{path.resolve().as_uri()}"/>' for ns, path in located
    )
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(
        etree.fromstring(f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>', parser)
    )


OAI_SCHEMA = _load_schema()
# With MARC21 slim payloads (harvested natively and served again): see data/marc21slim-subset.xsd.
WITH_MARC = _load_schema([("http://www.loc.gov/MARC21/slim", HERE / "data" / "marc21slim-subset.xsd")])


def validate(body: bytes, schema: etree.XMLSchema = OAI_SCHEMA) -> etree._Element:
    """Parse an OAI-PMH response strictly and validate it, payload included."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    doc = etree.fromstring(body, parser)
    if not schema.validate(doc):
        raise AssertionError(f"schema-invalid response: {schema.error_log}\n{body[:2000]!r}")
    return doc


def error_codes(doc: etree._Element) -> list[str]:
    return [e.get("code") for e in doc.iter(f"{OAI}error")]


def identifiers(doc: etree._Element) -> list[str]:
    return [e.text for e in doc.iterfind(".//oai:header/oai:identifier", NS)]


def token_of(doc: etree._Element) -> etree._Element | None:
    return doc.find(".//oai:resumptionToken", NS)


def the_token(doc: etree._Element) -> etree._Element:
    """The resumptionToken element of a list that must have one (an incomplete list)."""
    token = token_of(doc)
    assert token is not None, "the list has no resumptionToken"
    return token


BASE_CONFIG: dict[str, Any] = {
    "repository": {
        "name": "Test Repository",
        "base_url": "http://127.0.0.1:5000/oai",
        "admin_emails": ["admin@test.example.org"],
        "identifier": "test.example.org",
    },
    "server": {"page_size": 10},
    "sets": [
        {"spec": "a", "name": "Set A", "description": "Records whose title has an a"},
        {"spec": "a:b", "name": "Set A:B"},
        {"spec": "c", "name": "Set C"},
    ],
}


def make_config(url: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()}
    data["storage"] = {"url": url}
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return from_mapping(data)


def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds (a wait for what the test needs, not for a fixed time);
    fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# ---- running in parallel (pytest-xdist, `make test`) ---------------------------------------------


def xdist_group_of(item: pytest.Item) -> str | None:
    """The process group of a test that uses a module-scoped fixture: its module's name (and that
    fixture's parameter, when it has one), so the costly thing the fixture builds (a live server with
    thousands of records, a browser, an export) is built once and not once per process. Other tests
    have none and are dealt out one at a time (`--dist loadgroup`)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope == "module":
            module = item.path.stem
            params = getattr(getattr(item, "callspec", None), "params", {})
            return f"{module}[{params[name]}]" if name in params else module
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


# ---- PostgreSQL: one skip rule, one per-test schema ---------------------------------------------


def pg_url() -> str:
    """The PostgreSQL every PG test uses, or a skip. The one rule: without OAI_TEST_PG_URL the test
    is skipped, unless CI is set; then PG_URL is 127.0.0.1:5432 and a PostgreSQL that is down
    fails the test instead of skipping it."""
    if PG_URL is None:
        pytest.skip("PostgreSQL tests run when CI is set or OAI_TEST_PG_URL is given")
    return PG_URL


@contextmanager
def pg_schema(prefix: str = "t") -> Iterator[str]:
    """A store URL in a fresh schema of `pg_url()` (its search_path), dropped afterwards, so tests
    share one database without seeing each other's tables."""
    url = pg_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.dispose()  # a fresh connection for the drop: the test may have broken the pooled ones
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


@contextmanager
def engine_of(url: str) -> Iterator[sa.Engine]:
    """A plain SQLAlchemy engine on a store's database (psycopg for PostgreSQL), disposed after:
    for tests that look under a store, or shape it as an older version left it."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def backend_store_url(backend: str, folder: Path) -> Iterator[str]:
    """A fresh store's URL on `backend` ("sqlite": a file in `folder`; "postgresql": `pg_schema`)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'store.sqlite3'}"
    else:
        with pg_schema() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on both backends; PostgreSQL is never skipped when CI is set."""
    with backend_store_url(request.param, tmp_path) as url:
        yield url


class Clock:
    """A settable clock, so tests choose datestamps instead of sleeping."""

    def __init__(self, now: int = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return float(self.now)

    def tick(self, seconds: int = 1) -> int:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    s = Store(store_url, clock=clock)
    yield s
    s.close()


class OAIClient:
    """Flask's test client that validates every OAI-PMH response it gets."""

    def __init__(self, flask_client: Any) -> None:
        self.http = flask_client

    def get(self, query: str = "", **kwargs: Any) -> etree._Element:
        response = self.http.get(f"/oai?{query}" if query else "/oai", **kwargs)
        assert response.status_code == 200, response.data
        return validate(response.data)

    def post(self, body: str | bytes, **kwargs: Any) -> etree._Element:
        kwargs.setdefault("content_type", "application/x-www-form-urlencoded")
        response = self.http.post("/oai", data=body, **kwargs)
        assert response.status_code == 200, response.data
        return validate(response.data)

    def __call__(self, **args: str) -> etree._Element:
        from urllib.parse import urlencode

        return self.get(urlencode(args))


@pytest.fixture
def config(store_url: str) -> Config:
    return make_config(store_url)


@pytest.fixture
def app(config: Config, store: Store) -> Any:
    return create_app(config, store=store)


@pytest.fixture
def oai(app: Any) -> OAIClient:
    return OAIClient(app.test_client())


class Threaded:
    """A socket server served on a daemon thread; as a context manager, started and then shut
    down, its socket closed."""

    server: socketserver.TCPServer
    thread: threading.Thread

    def serve(self, server: socketserver.TCPServer, poll_interval: float = 0.5) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()


class LiveServer(Threaded):
    """The app served by a real WSGI server on 127.0.0.1, on a free port, in a thread."""

    server: BaseWSGIServer

    def __init__(self, app: Any) -> None:
        self.serve(make_server("127.0.0.1", 0, app, threaded=True))
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/oai"


def make_record(local: str, title: str = "A title", *, sets: tuple[str, ...] = (), **dc: str) -> Record:
    """A live oai_dc record with identifier oai:test.example.org:<local>."""
    values = [DCValue("title", title)] + [DCValue(k, v) for k, v in dc.items()]
    return Record(
        identifier=f"oai:test.example.org:{local}",
        dc=values,
        sets=list(sets),
        metadata={oai_dc.PREFIX: oai_dc.render(values)},
    )


def stored(store: Store, identifier: str) -> Record:
    """The record `identifier`, which must be in the store (a tombstone counts)."""
    record = store.get(identifier)
    assert record is not None, f"{identifier} is not in the store"
    return record


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A running fleet of the specs a test names with `fleet.with_specs`."""
    with Fleet(request.param) as running:
        yield running


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[Worker]:
    """The worker processes the harvests of a test start."""
    started: list[Worker] = []
    real_init = Worker.__init__

    def init(self: Worker) -> None:
        real_init(self)
        started.append(self)

    monkeypatch.setattr(Worker, "__init__", init)
    return started
