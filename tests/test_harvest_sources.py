"""Records are kept per source: two partners (or a partner and our own records) that share
identifiers are all stored; one is served, by priority (local first, then partners in
configuration order); the others are kept, counted and reported, and no run is partial for it.
On both backends, every response validated against OAI-PMH.xsd (the `oai` fixture)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from conftest import OAIClient, make_record
from harvestkit import FAST_HARVEST, FakePartner, PagedPartner, harvester_cli, partners_config, record

from harvester import harvest
from oaiserver import create_app
from oaiserver.config import Partner, load
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
