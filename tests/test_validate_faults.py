"""Each rule of `oaiserver validate` against a repository that breaks exactly that rule, and all of them
against our own correct repository: a rule that never failed in a test does not exist.

The repository is our app over a small store (24 records in sets, 3 deleted, 5 to a page), behind
`faultyrepo.FaultyRepository`, one live server per fault on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Clock, LiveServer, make_config
from faultyrepo import (
    BUSY_ONCE,
    DAY_GRANULARITY,
    FAULT,
    FAULTS,
    FOREIGN_DESCRIPTION,
    NEWEST_FIRST,
    PAGE_SIZE,
    T0,
    Fault,
    FaultyRepository,
    seeded_store,
)
from flask import Flask

from oaiserver import create_app
from oaiserver import validate as v
from oaiserver.cli import main
from oaiserver.store import Store
from oaiserver.validate.core import Validator
from oaiserver.validate.rules import section_and_level

Start = Callable[[Fault | None], str]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    """start(fault) -> the base URL of our repository with that fault (None: none), started once each."""
    url = f"sqlite:///{tmp_path_factory.mktemp('faulty')}/store.db"
    store = seeded_store(url)
    servers: dict[str | None, LiveServer] = {}

    def start(fault: Fault | None) -> str:
        key = fault.name if fault else None
        if key not in servers:
            live = LiveServer(None)
            config = make_config(
                url, repository__base_url=live.url, server__page_size=PAGE_SIZE, server__sets_page_size=2
            )
            live.server.app = FaultyRepository(create_app(config, store=store), fault)
            live.thread = threading.Thread(
                target=live.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            servers[key] = live.__enter__()
        return servers[key].url

    yield start
    for live in servers.values():
        live.__exit__(None, None, None)
    store.close()


def verdicts(url: str, **options: float) -> dict[str, v.Result]:
    return {r.name: r for r in Validator(url, timeout=5, **options).run()}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def correct(repository: Start) -> dict[str, v.Result]:
    return verdicts(repository(None))


def test_the_correct_repository_passes_every_rule(correct: dict[str, v.Result]) -> None:
    assert list(correct) == list(v.rule_names())
    wrong = {name: (r.status, r.reason) for name, r in correct.items() if r.status != v.PASS}
    assert wrong == {}
    assert "a:b" in correct["selective.set"].reason
    assert "gzip served when asked" in correct["identify.compression"].reason
    assert correct["list.last-token"].reason == "page 5 ends the list with an empty token"


def test_every_rule_is_broken_by_some_fault() -> None:
    broken = {rule for fault in FAULTS for rule in fault.breaks}
    assert broken == set(v.rule_names())


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_each_fault_is_reported_by_its_rule(repository: Start, correct: dict[str, v.Result], fault: Fault) -> None:
    """Exactly the rules the fault breaks are not PASS (FAIL for a MUST, WARN for a SHOULD); the others
    keep their verdicts, or are skipped for lack of what the broken rule would have given them."""
    results = verdicts(repository(fault))
    reported = {name: r.status for name, r in results.items() if r.status in (v.FAIL, v.WARN)}
    detail = "\n".join(f"{r.status} {name}: {r.reason}" for name, r in results.items() if r.status != v.PASS)
    assert reported == fault.breaks, f"{fault.what}:\n{detail}"
    changed = {n for n, r in results.items() if n not in fault.breaks and r.status not in (correct[n].status, v.SKIP)}
    assert changed == set(), detail
    for name in fault.breaks:
        section, _ = section_and_level(name)
        assert results[name].section == section and section
        shown = results[name].requests  # the requests that showed it, linked in the HTML report
        assert shown and all(u.startswith(repository(fault)) for u in shown), (name, shown)


def test_content_without_a_shipped_schema_is_not_checked_rather_than_failed(repository: Start) -> None:
    """pyoai's toolkit description: its namespace has no schema here, so it is reported as not checked."""
    results = verdicts(repository(FOREIGN_DESCRIPTION))
    assert {r.status for r in results.values()} == {v.PASS}, [r for r in results.values() if r.status != v.PASS]
    assert "not checked (no schema shipped): http://oai.dlib.vt.edu/OAI/metadata/toolkit" in (
        results["schema-valid"].reason
    )


def test_a_repository_of_day_granularity_passes_every_rule(repository: Start) -> None:
    """YYYY-MM-DD declared and every datestamp a day: selective harvesting is asked in days, and said so."""
    results = verdicts(repository(DAY_GRANULARITY))
    assert {n: r.reason for n, r in results.items() if r.status != v.PASS} == {}
    assert results["identify.granularity"].reason == "YYYY-MM-DD"
    assert re.fullmatch(r"from=(\S+) until=\1 lists \S+ \(\1\)", results["selective.from-until"].reason)


@pytest.mark.parametrize("variation", [None, NEWEST_FIRST], ids=["as-is", "newest-first"])
def test_a_repository_read_within_max_pages_gets_no_warning(repository: Start, variation: Fault | None) -> None:
    """--max-pages=1 stops ListSets and ListIdentifiers early: the validator's limit, not a fault of the
    repository, so what could not be seen is skipped (the last token) or not held against it (a record
    of ListRecords' first page that ListIdentifiers would have listed further on)."""
    results = verdicts(repository(variation), max_pages=1)
    assert {n: r.reason for n, r in results.items() if r.status in (v.FAIL, v.WARN)} == {}
    assert "--max-pages=1" in results["list.last-token"].reason and results["list.last-token"].status == v.SKIP
    assert results["sets"].reason.endswith("stopped at --max-pages")


def test_a_503_with_retry_after_is_waited_out_not_warned(repository: Start) -> None:
    results = verdicts(repository(BUSY_ONCE))
    assert {n: r.reason for n, r in results.items() if r.status != v.PASS} == {}
    assert "HTTP 503 Retry-After 1 waited out and retried" in results["http-200"].reason


def test_a_selective_list_that_breaks_off_says_why_and_links_the_failed_request(repository: Start) -> None:
    result = verdicts(repository(FAULT["until-alone-refused"]))["selective.day-inclusive"]
    assert "the list broke off (error: badArgument" in result.reason
    assert "&until=" in result.requests[0] and "&from=" not in result.requests[0]


def test_json_and_html_reports(repository: Start, tmp_path: Path) -> None:
    url = repository(next(f for f in FAULTS if f.name == "no-final-token"))
    page = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["validate", url, "--timeout", "5", "--json", "--html", str(page)])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["url"] == url and doc["ok"] is False and doc["counts"]["FAIL"] == 1
    (last,) = [r for r in doc["results"] if r["status"] == v.FAIL]
    assert last["rule"] == "list.last-token" and last["section"] == "3.5" and last["level"] == "MUST"
    assert last["requests"] and last["requests"][0].startswith(url + "?verb=ListIdentifiers&resumptionToken=")
    html = page.read_text()
    assert "list.last-token" in html and "What to change:" in html and "empty &lt;resumptionToken/&gt;" in html
    assert f'<a href="{last["requests"][0].replace("&", "&amp;")}">' in html


def test_the_request_cap_stops_the_run_and_says_so(repository: Start) -> None:
    results = verdicts(repository(None), max_requests=10)
    assert all(r.status != v.FAIL for r in results.values())
    skipped = [r for r in results.values() if r.status == v.SKIP]
    assert skipped and all("--max-requests=10 reached" in r.reason for r in skipped)


def test_the_delay_spaces_requests(repository: Start) -> None:
    import time

    started = time.monotonic()
    Validator(repository(None), timeout=5, max_requests=4, delay=0.2).run()
    assert time.monotonic() - started >= 0.6  # three gaps between four requests


def test_a_url_that_is_not_oai_pmh_gets_a_clear_message() -> None:
    web = Flask(__name__)
    web.add_url_rule("/oai", view_func=lambda: "<html><body><h1>Welcome</h1><p>Our catalogue<br></body></html>")
    with LiveServer(web) as live:
        result = CliRunner().invoke(main, ["validate", live.url, "--timeout", "5"])
    assert result.exit_code == 1
    assert f"{live.url} is not an OAI-PMH base URL: verb=Identify answered HTTP 200 text/html" in result.stderr
    assert "FAIL  identify.required" in result.stdout


def test_the_demo_repository_passes_every_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """demo.yaml over the seeds and marked synthetic records (sets three deep, deletions): no false alarm."""
    import time

    import yaml
    from conftest import HERE

    from oaiserver import config as config_mod

    root = HERE.parent
    monkeypatch.setenv("OAI_STORAGE_URL", f"sqlite:///{tmp_path / 'demo.sqlite3'}")
    monkeypatch.chdir(root)
    for args in (["ingest", "seeds"], ["synthetic", "120"]):
        result = CliRunner().invoke(main, ["--config", str(root / "demo.yaml"), *args])
        assert result.exit_code == 0, result.output
    data = yaml.safe_load((root / "demo.yaml").read_text())
    data["storage"]["url"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    data["server"]["page_size"] = 25
    live = LiveServer(None)
    data["repository"]["base_url"] = live.url
    cfg = config_mod.from_mapping(data)
    store = Store(cfg.storage_url, clock=Clock(int(time.time()) + 2))  # lists hold what was written before
    live.server.app = create_app(cfg, store=store)
    try:
        with live:
            results = verdicts(live.url)
    finally:
        store.close()
    assert {name: (r.status, r.reason) for name, r in results.items() if r.status != v.PASS} == {}
    assert "of its descendant region:asia" in results["selective.set"].reason


def test_an_empty_repository_gets_no_warning(tmp_path: Path) -> None:
    """A repository with no records yet is correct (ListIdentifiers answers noRecordsMatch): the list
    rules are skipped, saying why, and nothing is reported as FAIL or WARN."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store = Store(url, clock=Clock(T0))
    live = LiveServer(None)
    live.server.app = create_app(make_config(url, repository__base_url=live.url), store=store)
    try:
        with live:
            results = verdicts(live.url)
    finally:
        store.close()
    assert {name: r.reason for name, r in results.items() if r.status in (v.FAIL, v.WARN)} == {}
    assert results["list.unique"].status == v.SKIP
    assert "noRecordsMatch" in results["list.unique"].reason
