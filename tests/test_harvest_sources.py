"""Records are kept per source: two partners (or a partner and our own records) that share
identifiers are all stored; one is served, by priority (local first, then partners in
configuration order); the others are kept, counted and reported, and no run is partial for it.
On both backends, every response validated against OAI-PMH.xsd (the `oai` fixture)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from conftest import WITH_MARC, Clock, OAIClient, make_record, validate
from harvestkit import FAST_HARVEST, FakePartner, PagedPartner, harvester_cli, partners_config, record, xml
from harvestkit import oai as oai_response
from test_harvest_formats import TwoFormats
from werkzeug.wrappers import Response

from harvester import harvest, sweep
from oaiserver import create_app
from oaiserver.config import DeletionSweep, Partner, load
from oaiserver.records import format_datestamp
from oaiserver.store import Store, shadowed_counts

OAI = "{http://www.openarchives.org/OAI/2.0/}"
PROV = "{http://www.openarchives.org/OAI/2.0/provenance}"
SHARED = ["oai:shared:1", "oai:shared:2"]
# Partners in configuration order: p comes before q.
ORDER = replace(FAST_HARVEST, sources=("p", "q"))


def pages(name: str) -> list[list[str]]:
    """Each partner's list: the two shared records, with its own titles, and one of its own."""
    return [[record(i, f"{name}'s {i[-1]}") for i in SHARED] + [record(f"oai:{name}:own", f"{name}'s own")]]


def served_from(oai: OAIClient, identifier: str) -> tuple[str, str]:
    """(title, the baseURL of the provenance) of the record GetRecord serves."""
    got = oai(verb="GetRecord", identifier=identifier, metadataPrefix="oai_dc")
    title = got.findtext(".//{http://purl.org/dc/elements/1.1/}title")
    origin = got.findtext(f".//{PROV}originDescription/{PROV}baseURL")
    return title or "", origin or ""


def test_the_partner_first_in_the_configuration_is_served_whichever_is_harvested_first(
    store: Store, oai: OAIClient
) -> None:
    with FakePartner(PagedPartner(pages("p"))) as p_side, FakePartner(PagedPartner(pages("q"))) as q_side:
        p, q = Partner("p", p_side.url), Partner("q", q_side.url)
        first_q = harvest.run(store, q, settings=ORDER)
        first_p = harvest.run(store, p, settings=ORDER)
        assert [(r.outcome, r.counts.added, r.counts.changed, r.counts.shadowed) for r in (first_q, first_p)] == [
            ("success", 3, 0, 0),
            ("success", 3, 0, 0),
        ]
        assert shadowed_counts(store) == {"q": 2}
        assert served_from(oai, "oai:shared:1") == ("p's 1", p_side.url)
        assert served_from(oai, "oai:q:own") == ("q's own", q_side.url)
        # Again: nothing changes, and q is told what it does not serve.
        again_q = harvest.run(store, q, settings=ORDER)
        again_p = harvest.run(store, p, settings=ORDER)
    assert [
        (r.outcome, r.counts.added, r.counts.changed, r.counts.unchanged, r.counts.shadowed) for r in (again_q, again_p)
    ] == [
        ("success", 0, 0, 3, 2),
        ("success", 0, 0, 3, 0),
    ]
    assert again_q.failures == [] and "2 not served (another source first)" in harvest.describe(again_q)
    assert shadowed_counts(store) == {"q": 2}
    assert store.identifiers(source="p") == {*SHARED, "oai:p:own"}
    assert store.identifiers(source="q") == {"oai:q:own"}


def test_a_later_partner_never_takes_an_identifier_over(store: Store, oai: OAIClient) -> None:
    with FakePartner(PagedPartner(pages("p"))) as p_side, FakePartner(PagedPartner(pages("q"))) as q_side:
        harvest.run(store, Partner("p", p_side.url), settings=ORDER)
        report = harvest.run(store, Partner("q", q_side.url), settings=ORDER)
    assert (report.outcome, report.counts.added, report.counts.shadowed) == ("success", 3, 2)
    assert served_from(oai, "oai:shared:2") == ("p's 2", p_side.url)
    assert shadowed_counts(store) == {"q": 2}


def test_a_local_record_is_served_before_a_partners_and_the_partners_copy_is_kept(store: Store, oai: OAIClient) -> None:
    with FakePartner(PagedPartner(pages("p"))) as p_side:
        harvest.run(store, Partner("p", p_side.url), settings=ORDER)
        local = make_record("x", "Ours")
        local.identifier = "oai:shared:1"
        store.write([local])
        assert shadowed_counts(store) == {"p": 1}
        title, origin = served_from(oai, "oai:shared:1")
        assert (title, origin) == ("Ours", "")
        again = harvest.run(store, Partner("p", p_side.url), settings=ORDER)
    assert (again.outcome, again.counts.added, again.counts.changed, again.counts.shadowed) == ("success", 0, 0, 1)
    assert served_from(oai, "oai:shared:1") == ("Ours", "")


def test_what_is_not_served_is_reported_in_status_the_metrics_and_the_partners_page(
    store_url: str, tmp_path: Path
) -> None:
    """`harvester run` harvests by configuration order; `status`, `/metrics` and the partner's
    page say how many of q's records are kept but not served."""
    with FakePartner(PagedPartner(pages("p"))) as p_side, FakePartner(PagedPartner(pages("q"))) as q_side:
        config_file = partners_config(tmp_path, store_url, {"p": p_side.url, "q": q_side.url})
        assert harvester_cli(config_file, "run", "q").exit_code == 0
        ran = harvester_cli(config_file, "run", "p")
        assert ran.exit_code == 0, ran.output
        again = harvester_cli(config_file, "run", "q")
    assert again.exit_code == 0
    assert "q: success: 1 page(s), 3 record(s): 3 unchanged, 2 not served (another source first)" in again.stdout
    status = json.loads(harvester_cli(config_file, "status", "--json").stdout)["partners"]
    assert [(s["name"], s["shadowed"], s["records"]["live"]) for s in status] == [("p", 0, 3), ("q", 2, 1)]
    assert (
        "  records: 1 live, 0 deleted, 2 not served (another source first)"
        in harvester_cli(config_file, "status").stdout.splitlines()
    )
    config = load(config_file)
    store = Store(config.storage_url)
    try:
        client = create_app(config, store=store).test_client()
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'harvest_shadowed_records{partner="q"} 2.0' in metrics.splitlines()
        assert 'harvest_shadowed_records{partner="p"} 0.0' in metrics.splitlines()
        shown = client.get("/partners/q").get_data(as_text=True)
    finally:
        store.close()
    assert "<div><b>2</b> not served</div>" in shown
    assert "2 of its records are kept but not served" in shown


class Sweepable(PagedPartner):
    """A one-page partner whose ListIdentifiers (what a deletion sweep lists) lists the headers
    of the records its list holds now."""

    def __call__(self, params: dict[str, str], n: int) -> Response:
        if params.get("verb") != "ListIdentifiers":
            return super().__call__(params, n)
        headers = "".join(re.findall(r"<header>.*?</header>", "".join(self.pages[0])))
        return xml(oai_response(f"<ListIdentifiers>{headers}</ListIdentifiers>"))


def datestamp_of(oai: OAIClient, identifier: str) -> str:
    got = oai(verb="GetRecord", identifier=identifier, metadataPrefix="oai_dc")
    return got.findtext(f".//{OAI}header/{OAI}datestamp") or ""


def test_a_kept_copy_is_served_once_the_record_served_is_deleted_or_swept(
    store: Store, oai: OAIClient, clock: Clock
) -> None:
    """What is served under an identifier is one record, local first then partners in
    configuration order; once the served copy goes (its partner deletes it, or a deletion
    sweep finds it gone), another partner's live copy is served, with a new datestamp, and no
    tombstone; it gives way again when the first partner has the record once more."""
    p_side, q_side = Sweepable(pages("p")), PagedPartner(pages("q"))
    with FakePartner(p_side) as p_fake, FakePartner(q_side) as q_fake:
        p = Partner("p", p_fake.url, deletion_sweep=DeletionSweep(None, max_drop=0.9))
        q = Partner("q", q_fake.url)
        settings = replace(ORDER, partners=(p, q))
        harvest.run(store, q, settings=settings)
        harvest.run(store, p, settings=settings)
        assert served_from(oai, "oai:shared:1") == ("p's 1", p_fake.url)
        clock.tick(60)
        before = datestamp_of(oai, "oai:shared:1")
        # p deletes oai:shared:1; its list says so.
        p_side.pages = [[record("oai:shared:1", deleted=True), *pages("p")[0][1:]]]
        deleted = harvest.run(store, p, settings=settings)
        assert (deleted.outcome, deleted.counts.changed) == ("success", 1)
        clock.tick()
        assert served_from(oai, "oai:shared:1") == ("q's 1", q_fake.url)
        assert datestamp_of(oai, "oai:shared:1") > before
        since = oai(verb="ListIdentifiers", metadataPrefix="oai_dc", **{"from": format_datestamp(int(clock()) - 1)})
        assert [h.get("status") for h in since.iter(f"{OAI}header")] == [None]
        assert shadowed_counts(store) == {"q": 1, "p": 1}
        # p's list no longer has oai:shared:2 at all: its sweep turns it into a tombstone.
        p_side.pages = [[record("oai:shared:1", deleted=True), record("oai:p:own", "p's own")]]
        clock.tick(60)
        report = harvest.run(store, p, settings=settings)
        swept = sweep.after_run(store, p, report, settings=settings, forced=True, clock=clock)
        assert swept is not None and swept.swept == 1
        clock.tick()
        assert served_from(oai, "oai:shared:2") == ("q's 2", q_fake.url)
        assert store.identifiers(source="q") == {*SHARED, "oai:q:own"}
        # p has oai:shared:1 again: it comes first.
        p_side.pages = [pages("p")[0]]
        harvest.run(store, p, settings=settings)
    assert served_from(oai, "oai:shared:1") == ("p's 1", p_fake.url)
    assert served_from(oai, "oai:shared:2") == ("p's 2", p_fake.url)
    assert shadowed_counts(store) == {"q": 2}


def test_a_tombstone_never_hides_another_partners_live_record(store: Store, oai: OAIClient, clock: Clock) -> None:
    """A partner first in the order that holds only a deletion does not hide the record another
    partner has, whichever is harvested first; the deletion is kept, not served."""
    p_side = PagedPartner([[record("oai:shared:1", deleted=True)]])
    with FakePartner(p_side) as p_fake, FakePartner(PagedPartner(pages("q"))) as q_fake:
        p, q = Partner("p", p_fake.url), Partner("q", q_fake.url)
        settings = replace(ORDER, partners=(p, q))
        harvest.run(store, p, settings=settings)
        clock.tick()
        q_run = harvest.run(store, q, settings=settings)
        clock.tick()
        again = harvest.run(store, p, settings=settings)
    assert (q_run.counts.added, q_run.counts.shadowed, again.counts.shadowed) == (3, 0, 1)
    assert served_from(oai, "oai:shared:1") == ("q's 1", q_fake.url)
    assert shadowed_counts(store) == {"p": 1}


def test_a_kept_copy_served_instead_is_served_in_its_further_formats_too(store: Store, oai: OAIClient) -> None:
    """q was harvested in oai_dc and marcxml while p served the identifier: once p deletes it,
    q's record is served in both, its MARC byte for byte as q sent it."""
    p_side = PagedPartner([[record("oai:shared:1", "p's 1")]])
    with FakePartner(p_side) as p_fake, FakePartner(TwoFormats({"oai:shared:1": "q's 1"})) as q_fake:
        p, q = Partner("p", p_fake.url), Partner("q", q_fake.url, formats=("oai_dc", "marcxml"))
        settings = replace(ORDER, partners=(p, q))
        harvest.run(store, p, settings=settings)
        harvest.run(store, q, settings=settings)
        not_yet = oai(verb="GetRecord", identifier="oai:shared:1", metadataPrefix="marcxml")
        assert [e.get("code") for e in not_yet.iter(f"{OAI}error")] == ["cannotDisseminateFormat"]
        p_side.pages = [[record("oai:shared:1", deleted=True)]]
        harvest.run(store, p, settings=settings)
    served = oai.http.get("/oai?verb=GetRecord&identifier=oai:shared:1&metadataPrefix=marcxml").data
    validate(served, WITH_MARC)
    assert b'<marc:subfield code="a">q\'s 1</marc:subfield>' in served
    assert served_from(oai, "oai:shared:1") == ("q's 1", q_fake.url)


def test_a_partner_removed_from_the_configuration_gives_way_at_the_next_run_of_another(
    store: Store, oai: OAIClient, clock: Clock
) -> None:
    """p is removed from the configuration: one of its records is deleted by hand (`oaiserver
    delete`), the other is left. q's next run, though q sends nothing new (it lists from its last
    run), serves q's copies of both, each with a new datestamp."""
    q_side = PagedPartner(pages("q"))
    with FakePartner(PagedPartner(pages("p"))) as p_fake, FakePartner(q_side) as q_fake:
        p, q = Partner("p", p_fake.url), Partner("q", q_fake.url)
        harvest.run(store, p, settings=replace(ORDER, partners=(p, q)))
        harvest.run(store, q, settings=replace(ORDER, partners=(p, q)))
        assert served_from(oai, "oai:shared:2") == ("p's 2", p_fake.url)
        clock.tick(60)
        assert store.delete(["oai:shared:1"]) == 1
        clock.tick(60)
        since = int(clock())
        q_side.pages = [[]]  # nothing changed at q since its last run: noRecordsMatch
        again = harvest.run(store, q, settings=replace(ORDER, sources=("q",), partners=(q,)))
    assert (again.outcome, again.counts.received) == ("success", 0)
    clock.tick()
    assert served_from(oai, "oai:shared:1") == ("q's 1", q_fake.url)
    assert served_from(oai, "oai:shared:2") == ("q's 2", q_fake.url)
    listed = oai(verb="ListIdentifiers", metadataPrefix="oai_dc", **{"from": format_datestamp(since)})
    assert sorted(h.findtext(f"{OAI}identifier") or "" for h in listed.iter(f"{OAI}header")) == SHARED
