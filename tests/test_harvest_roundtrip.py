"""Harvesting our own oaiserver into a second store: the copy is exact, a second run brings
exactly the changes, a crash resumes from the checkpoint, an expired token restarts the
list, and the copy is served again with valid provenance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from conftest import NS, Clock, LiveServer, OAIClient, make_config, validate
from harvestkit import FAST_HARVEST, Switch, second_store

from harvester import harvest
from harvester.client import OAI_NS
from oaiserver import create_app, oai_dc
from oaiserver.config import Partner, partner_set
from oaiserver.records import DCValue, Header, Record, format_datestamp
from oaiserver.store import ListQuery, Store, harvest_history, harvest_state_of
from oaiserver.synthetic import synthetic_records, synthetic_sets

PAGE = 100


@pytest.fixture
def target_clock() -> Clock:
    return Clock(1_800_000_000)


@pytest.fixture
def target(store_url: str, tmp_path: Path, target_clock: Clock) -> Iterator[Store]:
    with second_store(store_url, tmp_path, target_clock) as s:
        yield s


def load(store: Store, n: int) -> None:
    store.write(synthetic_records(n, "source.example.org"), keep_datestamps=True)


def source_app(source: Store, **overrides: Any) -> Any:
    return create_app(make_config(source.url, server__page_size=PAGE, sets=synthetic_sets(), **overrides), store=source)


def everything(store: Store) -> dict[str, Header]:
    """identifier -> header with its oai_dc fragment, for every record (deleted ones too)."""
    return {h.identifier: h for h in store.page_headers(ListQuery("oai_dc"), None, 10**6, with_metadata=True)}


def assert_mirrors(source: Store, target: Store, partner: str) -> None:
    theirs, ours = everything(source), everything(target)
    missing, extra = theirs.keys() - ours.keys(), ours.keys() - theirs.keys()
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    for identifier, h in theirs.items():
        mine = ours[identifier]
        assert (mine.deleted, mine.metadata) == (h.deleted, h.metadata), identifier
        # In the partner's set, and in ours for each of its own (the same specs, under partners:<name>).
        assert mine.sets == (partner_set(partner), *(f"{partner_set(partner)}:{spec}" for spec in h.sets))
    for identifier in sorted(theirs)[:: max(1, len(theirs) // 15)]:  # a sample, in full
        original, copy = source.get(identifier), target.get(identifier)
        assert original is not None and copy is not None
        served_dc = [] if original.deleted else [DCValue(v.element, v.value.strip(), v.lang) for v in original.dc]
        assert copy.dc == served_dc
        assert copy.source == partner
        assert copy.provenance is not None
        assert copy.provenance["identifier"] == identifier
        assert copy.provenance["datestamp"] == format_datestamp(original.datestamp or 0)
        # Kept byte for byte: the <record> element exactly as the source served it, with the
        # namespaces it inherits from the response's root declared on it.
        rendered = theirs[identifier].rendered
        assert rendered is not None
        served = rendered.decode().rstrip("\n")
        inherited = f'<record xmlns="{OAI_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        assert copy.raw_xml == served.replace("<record>", inherited, 1)
        assert (copy.about is None) == copy.deleted


def stamps(store: Store) -> dict[str, int]:
    return {i: h.datestamp for i, h in everything(store).items()}


def test_a_full_then_an_incremental_harvest_mirror_the_source(
    store: Store, clock: Clock, target: Store, target_clock: Clock
) -> None:
    load(store, 3000)
    switch = Switch(source_app(store))
    with LiveServer(switch) as live:
        partner = Partner("mirror", live.url)
        clock.tick()
        first = harvest.run(target, partner, settings=FAST_HARVEST)
        assert first.outcome == "success", first.reason
        live_count = len(store.identifiers(live_only=True))
        assert first.counts.received == 3000 and first.counts.added == 3000
        assert first.counts.deleted == 3000 - live_count and first.counts.pages == 3000 // PAGE
        assert first.next_from == format_datestamp(clock.now)
        assert_mirrors(store, target, "mirror")
        before = stamps(target)
        target_clock.tick(60)

        # At the source: 25 updates, 15 deletions, 10 new records.
        ids = sorted(store.identifiers(live_only=True))
        updated, deleted = ids[:25], ids[100:115]
        clock.tick(60)
        changes = []
        for identifier in updated:
            old = store.get(identifier)
            assert old is not None
            dc = [DCValue("title", f"Revised: {old.dc_values('title')[0]}"), *old.dc[1:]]
            changes.append(Record(identifier, dc=dc, sets=old.sets, metadata={"oai_dc": oai_dc.render(dc)}))
        new = list(synthetic_records(10, "new.example.org"))
        for r in new:
            r.datestamp = None
        store.write(changes + new)
        store.delete(deleted)
        clock.tick()
        switch.queries.clear()

        second = harvest.run(target, partner, settings=FAST_HARVEST)
        assert second.outcome == "success", second.reason
        sent = [dict(parse_qsl(q)) for q in switch.queries]
        assert sent[0] == {"verb": "Identify"}, "the granularity of `from` comes from Identify"
        assert sent[1] == {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": first.next_from}
        new_live = sum(1 for r in new if not r.deleted)
        assert second.counts.received == 25 + 15 + 10
        assert (second.counts.added, second.counts.changed, second.counts.unchanged) == (10, 40, 0)
        assert second.counts.deleted == 15 + (10 - new_live)
        assert_mirrors(store, target, "mirror")
        after = stamps(target)
        touched = set(updated) | set(deleted)
        assert all(after[i] == before[i] for i in before if i not in touched), "unchanged records keep datestamps"
        assert all(after[i] > before[i] for i in touched), "changed records get new datestamps"

        third = harvest.run(target, partner, settings=FAST_HARVEST)
        assert third.outcome == "success" and third.counts.received == 0
        assert stamps(target) == after

    target_clock.tick()
    # Republished: the copy is served, in the partner's set, with a valid provenance container.
    served = OAIClient(
        create_app(
            make_config(target.url, partners=[{"name": "mirror", "base_url": live.url}]), store=target
        ).test_client()
    )
    doc = served(verb="ListRecords", metadataPrefix="oai_dc", set="partners:mirror")
    records = doc.findall(".//oai:record", NS)
    assert len(records) == 10
    origin = doc.find(".//oai:about/prov:provenance/prov:originDescription", NS)
    assert origin is not None and origin.get("altered") == "true"
    assert origin.findtext("prov:baseURL", namespaces=NS) == live.url
    token = doc.findtext(".//oai:resumptionToken", namespaces=NS)
    validate(served.http.get(f"/oai?verb=ListRecords&resumptionToken={token}").data)


def test_a_partner_not_republished_is_stored_but_not_served(
    store: Store, clock: Clock, target: Store, target_clock: Clock
) -> None:
    load(store, 300)
    with LiveServer(source_app(store)) as live:
        partner = Partner("hidden", live.url, republish=False)
        clock.tick()
        report = harvest.run(target, partner, settings=FAST_HARVEST)
    assert report.outcome == "success" and report.counts.added == 300
    assert target.identifiers(source="hidden") == store.identifiers()
    copy = target.get(sorted(store.identifiers(live_only=True))[0])
    assert copy is not None and copy.metadata == {} and copy.dc and copy.raw_xml and copy.about is None
    target_clock.tick()
    served = OAIClient(
        create_app(
            make_config(target.url, partners=[{"name": "hidden", "base_url": live.url, "republish": False}]),
            store=target,
        ).test_client()
    )
    for verb in ("ListRecords", "ListIdentifiers"):
        doc = served(verb=verb, metadataPrefix="oai_dc")
        assert [e.get("code") for e in doc.iter(f"{{{NS['oai']}}}error")] == ["noRecordsMatch"]


class Crash(BaseException):
    """The process dies: nothing after this point runs (no run outcome is written)."""


def settle_prefetch() -> None:
    """Wait for the page a crashed run asked for ahead: its request must not land among the
    next run's, in a list of queries the test reads in order."""
    for thread in threading.enumerate():
        if thread.name == "oai-prefetch":
            thread.join(10)


def crash_after(pages: int) -> Any:
    def on_page(partner: str, counts: harvest.Counts, page: Any) -> None:
        if counts.pages == pages:
            raise Crash

    return on_page


def test_a_crash_resumes_from_the_checkpoint(store: Store, clock: Clock, target: Store) -> None:
    load(store, 1000)
    switch = Switch(source_app(store))
    with LiveServer(switch) as live:
        partner = Partner("mirror", live.url)
        clock.tick()
        with pytest.raises(Crash):
            harvest.run(target, partner, settings=FAST_HARVEST, on_page=crash_after(4))
        state = harvest_state_of(target, "mirror")
        assert state.checkpoint is not None and state.checkpoint["token"]
        assert state.checkpoint["counts"]["received"] == 4 * PAGE
        assert len(target.identifiers()) == 4 * PAGE, "the committed pages are kept"
        assert state.next_from is None
        assert harvest_history(target, "mirror")[0].outcome == "running"
        settle_prefetch()
        switch.queries.clear()

        report = harvest.run(target, partner, settings=FAST_HARVEST)
    assert report.outcome == "success" and report.resumed
    assert "resumptionToken=" in switch.queries[0], "the first request continues the list"
    assert report.counts.received == 1000 - 4 * PAGE and report.window.received == 1000
    assert report.next_from == format_datestamp(clock.now), "the window's first responseDate"
    assert_mirrors(store, target, "mirror")
    history = harvest_history(target, "mirror")
    assert [r.outcome for r in history] == ["success", "failed"]
    assert "interrupted" in (history[1].reason or "")
    assert harvest_state_of(target, "mirror").checkpoint is None


def test_an_expired_token_restarts_the_window_from_the_runs_from(store: Store, clock: Clock, target: Store) -> None:
    load(store, 1000)
    switch = Switch(source_app(store, server__secret="first-secret"))
    with LiveServer(switch) as live:
        partner = Partner("mirror", live.url)
        clock.tick()
        with pytest.raises(Crash):
            harvest.run(target, partner, settings=FAST_HARVEST, on_page=crash_after(3))
        # The partner restarts with another secret: every token it issued is now rejected.
        switch.app = source_app(store, server__secret="second-secret")
        settle_prefetch()
        switch.queries.clear()
        report = harvest.run(target, partner, settings=FAST_HARVEST)
    assert report.outcome == "success", report.reason
    assert report.counts.restarts == 1
    assert "resumptionToken=" in switch.queries[0] and "metadataPrefix=oai_dc" in switch.queries[1]
    assert "from=" not in switch.queries[1], "the run's from: none, as the first run takes everything"
    assert report.counts.received == 1000 and report.counts.added == 1000 - 3 * PAGE
    assert report.counts.unchanged == 3 * PAGE, "harvesting a page twice changes nothing"
    assert_mirrors(store, target, "mirror")
