"""Tests that stop a database stop their own: a private PostgreSQL server (initdb in a
temporary folder, a free port), never the machine's, which may be a user's own database."""

from __future__ import annotations

import re

import conftest
import pytest
import sqlalchemy as sa
from conftest import DEFAULT_PG_URL, HERE, PG_URL, pg_url, pg_url_from
from loadkit import postgres_answers, private_postgres, require_postgres_tools


def test_no_test_drives_a_server_it_did_not_start() -> None:
    """pg_ctlcluster and systemctl act on the machine's clusters; pg_ctl only ever gets the
    folder of a server the test made (PrivatePostgres)."""
    offenders = []
    for path in sorted(HERE.glob("*.py")):
        if path.name == "test_private_postgres.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pg_ctlcluster|systemctl|service postgresql|pg_ctl\(", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_postgres_tests_skip_only_without_a_database_and_never_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """One skip rule for every PostgreSQL test (conftest.pg_url): skipped without
    OAI_TEST_PG_URL, never when CI is set (the local PostgreSQL is then required)."""
    assert pg_url_from({}) is None
    assert pg_url_from({"CI": "true"}) == DEFAULT_PG_URL
    assert pg_url_from({"CI": "true", "OAI_TEST_PG_URL": "postgresql://u@h/db"}) == "postgresql://u@h/db"
    monkeypatch.setattr(conftest, "PG_URL", None)
    with pytest.raises(pytest.skip.Exception, match="OAI_TEST_PG_URL"):
        pg_url()
    monkeypatch.setattr(conftest, "PG_URL", DEFAULT_PG_URL)
    assert pg_url() == DEFAULT_PG_URL


def test_one_per_test_schema_helper() -> None:
    """The per-test PostgreSQL schema is made in one place (conftest.pg_schema), used by all."""
    copies = [p.name for p in sorted(HERE.glob("*.py")) if "CREATE " + "SCHEMA" in p.read_text()]
    assert copies == ["conftest.py"], copies


def shared_start_time() -> object:
    engine = sa.create_engine(PG_URL or "")
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_postmaster_start_time()").scalar_one()
    finally:
        engine.dispose()


def test_a_private_server_stops_and_starts_alone_and_is_removed_afterwards() -> None:
    tools = require_postgres_tools()
    shared_before = shared_start_time() if PG_URL else None
    with private_postgres(tools) as server:
        root, url = server.root, server.url
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kept (value text)")
            conn.exec_driver_sql("INSERT INTO kept VALUES ('across a restart')")
        engine.dispose()
        server.stop()
        assert not postgres_answers(url)
        if PG_URL:
            assert postgres_answers(), "the shared server stays up"
        server.start()
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT value FROM kept").scalar_one() == "across a restart"
        engine.dispose()
    assert not root.exists(), "its folder is removed"
    assert not postgres_answers(url), "it is stopped"
    if PG_URL:
        assert shared_start_time() == shared_before, "the shared server was never restarted"


def test_a_private_server_is_stopped_and_removed_when_the_test_fails() -> None:
    tools = require_postgres_tools()
    with pytest.raises(RuntimeError, match="the test failed"), private_postgres(tools) as server:
        root, url = server.root, server.url
        assert postgres_answers(url)
        raise RuntimeError("the test failed")
    assert not root.exists()
    assert not postgres_answers(url)
