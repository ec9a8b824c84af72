"""`make demo`: the seeds plus marked synthetic records (`oaiserver synthetic`), served from a
store of their own (demo.yaml), never the store of `make run`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import HERE, NS, Clock, OAIClient, identifiers, token_of

from oaiserver import config as config_mod
from oaiserver import create_app
from oaiserver.cli import main
from oaiserver.store import Store
from oaiserver.synthetic import synthetic_records, synthetic_sets

ROOT = HERE.parent
DEMO = ROOT / "demo.yaml"


def test_marked_records_cannot_be_taken_for_real() -> None:
    records = list(synthetic_records(500, "cables.example.org", marked=True))
    assert all(r.identifier.startswith("oai:cables.example.org:synthetic-") for r in records)
    assert all(r.dc[0].element == "title" and r.dc[0].value.startswith("[synthetic] ") for r in records)
    assert all(r.sets and all(s.startswith("synthetic:") for s in r.sets) for r in records)
    assert 0 < sum(r.deleted for r in records) < 50


def test_unmarked_records_are_unchanged_for_tests_and_benchmarks() -> None:
    first = next(synthetic_records(1, "test.example.org"))
    assert first.identifier == "oai:test.example.org:rec-0000000"
    assert not first.dc[0].value.startswith("[synthetic]")
    assert {s["spec"] for s in synthetic_sets()} >= set(first.sets)
    assert "synthetic" not in {s["spec"] for s in synthetic_sets()}


def test_marked_sets_cover_every_spec_the_records_carry() -> None:
    specs = {s["spec"] for s in synthetic_sets(marked=True)}
    carried = {spec for r in synthetic_records(300, "x.example.org", marked=True) for spec in r.sets}
    assert "synthetic" in specs and carried <= specs


@pytest.fixture
def demo_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """demo.yaml as shipped, its store moved to a temporary file."""
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    monkeypatch.setenv("OAI_STORAGE_URL", url)
    monkeypatch.chdir(ROOT)
    return url


def test_synthetic_command_adds_marked_records_once(demo_store: str) -> None:
    first = CliRunner().invoke(main, ["--config", str(DEMO), "synthetic", "300"])
    assert first.exit_code == 0, first.output
    assert first.output == "300 synthetic record(s): 300 added, 0 changed, 0 unchanged\n"
    again = CliRunner().invoke(main, ["--config", str(DEMO), "synthetic", "300"])
    assert again.output == "300 synthetic record(s): 0 added, 0 changed, 300 unchanged\n"
    store = Store(demo_store)
    try:
        counts = store.counts()
        deleted = sum(r.deleted for r in synthetic_records(300, "cables.example.org"))
        assert (counts["live"], counts["deleted"]) == (300 - deleted, deleted)
    finally:
        store.close()


@pytest.mark.parametrize("count", [["--", "-1"], ["many"], ["1000001"]])
def test_synthetic_command_refuses_a_bad_count(demo_store: str, count: list[str]) -> None:
    result = CliRunner().invoke(main, ["--config", str(DEMO), "synthetic", *count])
    assert result.exit_code == 2 and "Invalid value for 'COUNT'" in result.output
    assert "Traceback" not in result.output


def test_synthetic_command_says_when_the_configuration_lists_no_synthetic_set(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{tmp_path / 's.sqlite3'}"}}))
    result = CliRunner().invoke(main, ["--config", str(config), "synthetic", "10"])
    assert result.exit_code == 0
    assert "the configuration lists no set 'synthetic'" in result.output


def test_demo_serves_seeds_and_synthetic_records_with_sets_paging_and_deletions(demo_store: str) -> None:
    for args in (["ingest", "seeds"], ["synthetic", "250"]):
        result = CliRunner().invoke(main, ["--config", str(DEMO), *args])
        assert result.exit_code == 0, result.output
    cfg = config_mod.load(DEMO)
    store = Store(cfg.storage_url, clock=Clock(int(time.time()) + 2))  # lists hold what was written a second before
    try:
        oai = OAIClient(create_app(cfg, store=store).test_client())
        specs = []
        doc = oai(verb="ListSets")
        while True:
            specs += [e.text for e in doc.iterfind(".//oai:setSpec", NS)]
            token = token_of(doc)
            if token is None or not token.text:
                break
            doc = oai(verb="ListSets", resumptionToken=token.text)
        assert {"cables", "local", "synthetic", "synthetic:history"} <= set(specs)

        seeds = identifiers(oai(verb="ListIdentifiers", metadataPrefix="oai_dc", set="local"))
        assert seeds == ["oai:cables.example.org:000_44774e4221cac103"]

        page = oai(verb="ListRecords", metadataPrefix="oai_dc", set="synthetic")
        token = token_of(page)
        assert token is not None and token.get("completeListSize") == "250"
        titles = [e.text or "" for e in page.iterfind(".//dc:title", NS)]
        assert titles and all(t.startswith("[synthetic] ") for t in titles)

        headers = []
        page = oai(verb="ListIdentifiers", metadataPrefix="oai_dc", set="synthetic")
        while True:
            headers += [
                (h.findtext("oai:identifier", namespaces=NS), h.get("status"))
                for h in page.iterfind(".//oai:header", NS)
            ]
            token = token_of(page)
            if token is None or not token.text:
                break
            page = oai(verb="ListIdentifiers", resumptionToken=token.text)
        expected = {r.identifier for r in synthetic_records(250, "cables.example.org", marked=True) if r.deleted}
        assert len(headers) == 250 and expected
        assert {i for i, status in headers if status == "deleted"} == expected
    finally:
        store.close()


def test_demo_has_a_store_of_its_own() -> None:
    demo = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    run = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert demo["storage"]["url"] != run["storage"]["url"]
    assert demo["repository"]["base_url"] != run["repository"]["base_url"]  # both can run at once
    assert demo["repository"]["identifier"] == run["repository"]["identifier"]
    assert [s["spec"] for s in run["sets"]] == [s["spec"] for s in demo["sets"]][: len(run["sets"])]
    assert {s["spec"] for s in synthetic_sets(marked=True)} <= {s["spec"] for s in demo["sets"]}


def test_make_demo_runs_every_command_on_the_demo_configuration() -> None:
    plan = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "demo"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    commands = [line for line in plan.splitlines() if "/oaiserver " in line]
    assert [c.split("demo.yaml ", 1)[-1].split()[0] for c in commands] == ["ingest", "synthetic", "serve"]
    assert all(c.startswith("OAI_STORAGE_URL= ") and "--config demo.yaml " in c for c in commands), commands


def test_pruning_the_seeds_leaves_synthetic_records_alone(demo_store: str) -> None:
    for args in (["synthetic", "50"], ["ingest", "seeds", "--prune"]):
        result = CliRunner().invoke(main, ["--config", str(DEMO), *args])
        assert result.exit_code == 0, result.output
    assert result.output.endswith(", 0 pruned\n")
    store = Store(demo_store)
    try:
        assert store.counts()["live"] == 1 + sum(not r.deleted for r in synthetic_records(50, "x.example.org"))
    finally:
        store.close()
