"""The partner's sets survive: a republished record is in `partners:<name>` and in
`partners:<name>:<the partner's setSpec>` for each of its setSpecs, hierarchy kept, every
setSpec valid for the schema; ListSets lists those sets with the names the partner's ListSets
gives them, read once a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NS, Clock, OAIClient, make_config
from harvestkit import FAST_HARVEST, FakePartner, PagedPartner, record, second_store
from lxml import etree

from harvester import harvest
from oaiserver import create_app
from oaiserver.config import MAX_SET_SPEC, SPEC_RE, Partner, partner_subset

PARTNER_SETS = [
    ("a", "Archive"),
    ("a:b", "Archive: books"),
    ("a:b:c", "Archive: books: Chinese"),
    ("x y", "Spaced"),
    ("unused", "A set we hold no record of"),
]


@pytest.mark.parametrize(
    ("spec", "ours"),
    [
        ("physics", "partners:p:physics"),
        ("a:b:c", "partners:p:a:b:c"),  # the hierarchy is kept
        ("col_1.(x)!*'~", "partners:p:col_1.(x)!*'~7E"),  # `~` escapes, so it is escaped itself
        ("x y/z", "partners:p:x~20y~2Fz"),
        ("Åbo", "partners:p:~C3~85bo"),  # UTF-8 bytes
        ("a::b", "partners:p:a:~:b"),  # an empty part
        (":a", "partners:p:~:a"),
        ("  a  ", "partners:p:a"),
        ("", None),
        ("   ", None),
        ("x" * (MAX_SET_SPEC - len("partners:p:")), "partners:p:" + "x" * (MAX_SET_SPEC - len("partners:p:"))),
        ("x" * (MAX_SET_SPEC - len("partners:p:") + 1), None),  # too long to store
    ],
)
def test_a_partner_setspec_becomes_a_valid_one_of_ours(spec: str, ours: str | None) -> None:
    assert partner_subset("p", spec) == ours
    assert ours is None or SPEC_RE.fullmatch(ours)


def specs_of(doc: etree._Element, identifier: str) -> list[str | None]:
    """The setSpecs of the header of `identifier` in a list."""
    headers = doc.iterfind(".//oai:header", NS)
    header = next(h for h in headers if h.findtext("oai:identifier", namespaces=NS) == identifier)
    return [s.text for s in header.iterfind("oai:setSpec", NS)]


def test_the_partners_nested_sets_are_listed_and_hold_its_records(store_url: str, tmp_path: Path, clock: Clock) -> None:
    pages = [
        [record("oai:n:1", "One", sets=("a", "a:b:c")), record("oai:n:2", "Two", sets=("x y", "a:b"))],
        [record("oai:n:3", "Three"), record("oai:n:4", deleted=True, sets=("a",))],
    ]
    fake_partner = PagedPartner(pages, sets=PARTNER_SETS)
    with FakePartner(fake_partner) as fake, second_store(store_url, tmp_path, clock) as target:
        partner = Partner("nested", fake.url)
        first = harvest.run(target, partner, settings=FAST_HARVEST)
        assert (first.outcome, first.counts.added) == ("success", 4)
        clock.tick()
        again = harvest.run(target, partner, settings=FAST_HARVEST)
        assert (again.outcome, again.counts.unchanged, again.counts.changed) == ("success", 4, 0)
        assert [r.get("verb") for r in fake.requests].count("ListSets") == 2  # once a run
        clock.tick()
        config = make_config(target.url, partners=[{"name": "nested", "base_url": fake.url}])
        served = OAIClient(create_app(config, store=target).test_client())
        listed = served(verb="ListSets")  # schema-valid: every setSpec fits setSpecType
        assert [
            (s.findtext("oai:setSpec", namespaces=NS), s.findtext("oai:setName", namespaces=NS))
            for s in listed.iterfind(".//oai:set", NS)
        ] == [
            ("a", "Set A"),
            ("a:b", "Set A:B"),
            ("c", "Set C"),
            ("partners", "Records harvested from partner repositories"),
            ("partners:nested", "Records harvested from nested"),
            ("partners:nested:a", "Archive"),
            ("partners:nested:a:b", "Archive: books"),
            ("partners:nested:a:b:c", "Archive: books: Chinese"),
            ("partners:nested:x~20y", "Spaced"),
        ]
        everything = served(verb="ListIdentifiers", metadataPrefix="oai_dc", set="partners:nested")
        assert specs_of(everything, "oai:n:1") == ["partners:nested", "partners:nested:a", "partners:nested:a:b:c"]
        assert specs_of(everything, "oai:n:2") == ["partners:nested", "partners:nested:x~20y", "partners:nested:a:b"]
        assert specs_of(everything, "oai:n:3") == ["partners:nested"]
        assert specs_of(everything, "oai:n:4") == ["partners:nested", "partners:nested:a"]  # the tombstone too
        members = {
            spec: [
                i.text
                for i in served(verb="ListIdentifiers", metadataPrefix="oai_dc", set=spec).iterfind(
                    ".//oai:identifier", NS
                )
            ]
            for spec in ("partners:nested:a", "partners:nested:a:b", "partners:nested:a:b:c", "partners:nested:x~20y")
        }
        assert members == {
            "partners:nested:a": ["oai:n:1", "oai:n:2", "oai:n:4"],  # a:b and a:b:c are in a
            "partners:nested:a:b": ["oai:n:1", "oai:n:2"],
            "partners:nested:a:b:c": ["oai:n:1"],
            "partners:nested:x~20y": ["oai:n:2"],
        }


def test_a_partner_without_sets_is_not_asked_for_them(store_url: str, tmp_path: Path, clock: Clock) -> None:
    with FakePartner(PagedPartner([[record("oai:f:1")]])) as fake, second_store(store_url, tmp_path, clock) as target:
        assert harvest.run(target, Partner("flat", fake.url), settings=FAST_HARVEST).outcome == "success"
        assert [r.get("verb") for r in fake.requests] == ["ListRecords"]


def test_a_failing_listsets_leaves_the_sets_unnamed_and_the_run_a_success(
    store_url: str, tmp_path: Path, clock: Clock
) -> None:
    pages = [[record("oai:u:1", sets=("s:t",))]]
    with FakePartner(PagedPartner(pages)) as fake, second_store(store_url, tmp_path, clock) as target:
        assert harvest.run(target, Partner("unnamed", fake.url), settings=FAST_HARVEST).outcome == "success"
        config = make_config(target.url, sets=[], partners=[{"name": "unnamed", "base_url": fake.url}])
        listed = OAIClient(create_app(config, store=target).test_client())(verb="ListSets")
        assert [
            (s.findtext("oai:setSpec", namespaces=NS), s.findtext("oai:setName", namespaces=NS))
            for s in listed.iterfind(".//oai:set", NS)
        ][2:] == [("partners:unnamed:s", "s"), ("partners:unnamed:s:t", "s:t")]
