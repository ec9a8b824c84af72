"""Seed documents: the layout parser, the Dublin Core it yields, and `oaiserver ingest/delete`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import HERE, make_config, stored

from oaiserver.cli import main
from oaiserver.ingest import SeedError, parse_seed, seed_record
from oaiserver.store import Store

SEEDS = HERE.parent / "seeds"
FULL = """\
March 3, 1953
Telegram from the Soviet Embassy in Beijing, 'On the Death of Stalin'
This document was made possible with support from a foundation
[…]
On the Death of Stalin
To the Ministry of Foreign Affairs:
Reactions in Beijing were as follows.
Ambassador Kuznetsov
3 March 1953
[…]
The embassy reports Chinese reactions to Stalin's death.
Author(s):
Kuznetsov, Vasily
Panyushkin, Alexander
Associated Places
China
Soviet Union
Document Information
Translated by someone
Source
Archive of Foreign Policy, Russian Federation
Original Archive
AVPRF, fond 0100, opis 46
Rights
Reuse welcome.
Second paragraph.
"""


def dc(record_dc: list, element: str) -> list[str]:
    return [v.value for v in record_dc if v.element == element]


def test_the_shipped_seed_parses() -> None:
    cfg = make_config("sqlite://", repository__publisher="Digital Archive")
    record = seed_record(cfg, SEEDS / "000_44774e4221cac103.txt")
    assert record.identifier == "oai:test.example.org:000_44774e4221cac103"
    assert dc(record.dc, "title") == [
        "Cable from the Chinese Foreign Ministry, 'Handling the Issue of Border Residents Fleeing "
        "from Yili and Tacheng to the Soviet Union'"
    ]
    assert dc(record.dc, "date") == ["1962-04-21"]
    assert dc(record.dc, "creator") == ["Ministry of Foreign Affairs"], "the signature stands in for Author(s)"
    assert dc(record.dc, "description") == [
        "The Chinese Foreign Ministry directs border guards in Xinjiang to interface with Soviet counterparts."
    ]
    assert dc(record.dc, "type") == ["Text"] and dc(record.dc, "language") == ["en"]
    assert dc(record.dc, "publisher") == ["Digital Archive"]
    assert dc(record.dc, "identifier") == ["http://127.0.0.1:5000/records/oai:test.example.org:000_44774e4221cac103"]
    assert dc(record.dc, "rights")[0].startswith("The History and Public Policy Program welcomes reuse")
    for empty in ("coverage", "source", "relation"):
        assert dc(record.dc, empty) == [], "an empty section yields no element"
    assert "<dc:coverage" not in record.metadata["oai_dc"]
    assert record.fulltext is not None
    assert record.fulltext.startswith("Handling the Issue of Border Residents")
    assert record.fulltext.endswith("21 April 1962")


def test_every_section_maps(tmp_path: Path) -> None:
    path = tmp_path / "stalin.txt"
    path.write_text(FULL, encoding="utf-8")
    record = seed_record(make_config("sqlite://"), path)
    assert dc(record.dc, "creator") == ["Kuznetsov, Vasily", "Panyushkin, Alexander"]
    assert dc(record.dc, "coverage") == ["China", "Soviet Union"]
    assert dc(record.dc, "source") == ["AVPRF, fond 0100, opis 46"]
    assert dc(record.dc, "relation") == ["Archive of Foreign Policy, Russian Federation"]
    assert dc(record.dc, "rights") == ["Reuse welcome. Second paragraph."]
    assert dc(record.dc, "date") == ["1953-03-03"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "too short"),
        ("Sometime in spring\nTitle\n[…]\ntext\n[…]\nsummary\nRights\n", "is not a date"),
        ("April 21, 1962\n\n[…]\ntext\n[…]\nsummary\nRights\n", "title is empty"),
        ("April 21, 1962\nTitle\nno markers at all\n", "two '[…]' lines"),
        ("April 21, 1962\nTitle\n[…]\ntext\n[…]\nsummary\nmore prose\n", "unexpected line"),
        ("April 21, 1962\nTitle\n[…]\ntext\n[…]\nsummary\n", "no labelled sections"),
    ],
)
def test_bad_layout_is_named(text: str, reason: str) -> None:
    with pytest.raises(SeedError, match=re.escape(reason)):
        parse_seed(text)


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> tuple[Path, Path, str]:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "000_44774e4221cac103.txt").write_bytes((SEEDS / "000_44774e4221cac103.txt").read_bytes())
    (seeds / "stalin.txt").write_text(FULL, encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "repository": {"identifier": "test.example.org", "base_url": "http://127.0.0.1:5000/oai"},
                "storage": {"url": store_url},
                "sets": [{"spec": "asia", "name": "Asia", "match": {"field": "coverage", "pattern": "China"}}],
            }
        )
    )
    return cfg, seeds, store_url


def run(cfg: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(cfg), *args])
    return result.exit_code, result.output


def test_ingest_is_idempotent_and_reports(project: tuple[Path, Path, str]) -> None:
    cfg, seeds, url = project
    code, out = run(cfg, "ingest", str(seeds))
    assert code == 0 and "2 added" in out
    store = Store(url)
    try:
        first = stored(store, "oai:test.example.org:stalin")
        assert first.sets == ["asia"]
        code, out = run(cfg, "ingest", str(seeds))
        assert code == 0 and "0 added, 0 changed, 2 unchanged" in out
        assert stored(store, "oai:test.example.org:stalin").datestamp == first.datestamp
    finally:
        store.close()


def test_ingest_reports_bad_files_and_keeps_the_rest(project: tuple[Path, Path, str]) -> None:
    cfg, seeds, _ = project
    (seeds / "broken.txt").write_text("not a seed document\nat all\n")
    (seeds / "latin1.txt").write_bytes("April 21, 1962\nCaf\xe9\n".encode("latin-1"))
    code, out = run(cfg, "ingest", str(seeds))
    assert code == 1
    assert "2 added" in out and "2 failed" in out
    assert "broken.txt: line 1: 'not a seed document' is not a date" in out
    assert "latin1.txt: not UTF-8 text" in out


def test_ingest_one_file_and_changes(project: tuple[Path, Path, str]) -> None:
    cfg, seeds, url = project
    assert run(cfg, "ingest", str(seeds / "stalin.txt"))[0] == 0
    store = Store(url)
    try:
        (seeds / "stalin.txt").write_text(FULL.replace("Reuse welcome.", "Reuse very welcome."), encoding="utf-8")
        code, out = run(cfg, "ingest", str(seeds / "stalin.txt"))
        assert code == 0 and "1 changed" in out
        assert "Reuse very welcome." in stored(store, "oai:test.example.org:stalin").metadata["oai_dc"]
    finally:
        store.close()


def test_prune_turns_vanished_files_into_tombstones(project: tuple[Path, Path, str]) -> None:
    cfg, seeds, url = project
    run(cfg, "ingest", str(seeds))
    (seeds / "stalin.txt").unlink()
    _, out = run(cfg, "ingest", str(seeds))
    assert "0 pruned" in out, "without --prune nothing is deleted"
    code, out = run(cfg, "ingest", "--prune", "--yes", str(seeds))
    assert code == 0 and "1 pruned" in out
    store = Store(url)
    try:
        assert stored(store, "oai:test.example.org:stalin").deleted
        assert not stored(store, "oai:test.example.org:000_44774e4221cac103").deleted
    finally:
        store.close()


def test_delete_command(project: tuple[Path, Path, str]) -> None:
    cfg, seeds, _ = project
    run(cfg, "ingest", str(seeds))
    code, out = run(cfg, "delete", "oai:test.example.org:stalin", "oai:test.example.org:nope")
    assert code == 1
    assert "1 record(s) deleted" in out and "unknown identifier: oai:test.example.org:nope" in out
    code, out = run(cfg, "stats")
    assert "1 live, 1 deleted" in out


def test_bad_configuration_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  page_size: many\n")
    code, out = run(cfg, "stats")
    assert code == 1 and "server.page_size: expected int, got 'many'" in out


def test_a_seed_whose_identifier_is_too_long_is_reported_by_file(
    project: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file fails, by name and with the store's reason; the rest go in. (File names cannot
    make such an identifier today: 255 bytes escaped are 765 characters, and the repository
    identifier has at most 255; the store's limit stands whatever makes one.)"""
    import oaiserver.ingest

    cfg, seeds, _ = project
    real = oaiserver.ingest.local_identifier
    monkeypatch.setattr(
        oaiserver.ingest, "local_identifier", lambda c, stem: real(c, stem * 300 if stem == "long" else stem)
    )
    (seeds / "long.txt").write_text(FULL, encoding="utf-8")
    code, out = run(cfg, "ingest", str(seeds))
    assert code == 1 and "2 added" in out and "1 failed" in out
    assert f"failed: {seeds / 'long.txt'}: the identifier is longer than 1024 bytes in UTF-8 (" in out
