"""`harvester probe URL`: what a new partner's configuration needs, found within a few requests.

Probed: our own repository (24 records in sets, 5 to a page) behind `faultyrepo.FaultyRepository`, as
is and with its granularity broken; scripted partners for Windows-1252 bytes and for a URL that is
no OAI-PMH at all. Every server is on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from click.testing import CliRunner, Result
from conftest import LiveServer, make_config
from faultyrepo import (
    DAY_GRANULARITY,
    Exchange,
    Fault,
    FaultyRepository,
    day_granularity,
    seeded_store,
)
from harvestkit import FakePartner, Switch, error, identify, oai, xml
from werkzeug.wrappers import Response

from harvester import probe as probe_mod
from harvester.cli import main
from oaiserver import config as config_mod
from oaiserver import create_app


def refuse_times(ex: Exchange) -> None:
    """A time in from or until is answered badArgument, as a repository that stores days does."""
    if any(k in ("from", "until") and "T" in v for k, v in ex.pairs):
        ex.rewrite([(k, "never" if k in ("from", "until") else v) for k, v in ex.pairs])


# Identify declares seconds, but only days are taken: the harvester must use days.
TIMES_REFUSED = Fault("times-refused", "seconds declared, times refused", {}, before=refuse_times)
# Days declared and kept to: a time in from is refused, as the protocol says.
DAYS_ONLY = Fault("days-only", "day granularity, times refused", {}, before=refuse_times, after=day_granularity)

Start = Callable[[Fault | None], tuple[str, Switch]]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    """start(fault) -> (base URL, the switch that keeps each request's query string); one server a fault."""
    url = f"sqlite:///{tmp_path_factory.mktemp('probe')}/store.db"
    store = seeded_store(url)
    servers: dict[str | None, tuple[LiveServer, Switch]] = {}

    def start(fault: Fault | None) -> tuple[str, Switch]:
        key = fault.name if fault else None
        if key not in servers:
            live = LiveServer(None)
            config = make_config(url, repository__base_url=live.url, server__page_size=5, server__sets_page_size=2)
            switch = Switch(FaultyRepository(create_app(config, store=store), fault))
            live.server.app = switch
            live.thread = threading.Thread(
                target=live.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            servers[key] = (live.__enter__(), switch)
        live, switch = servers[key]
        switch.queries.clear()
        return live.url, switch

    yield start
    for live, _ in servers.values():
        live.__exit__(None, None, None)
    store.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["probe", *args])


def as_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def pasted_entry(output: str) -> str:
    """The YAML the text output offers to paste."""
    return output.split("Paste under partners: in config.yaml:\n", 1)[1].lstrip("\n")


def test_our_repository_probed_within_thirty_requests(repository: Start, tmp_path: Path) -> None:
    url, switch = repository(None)
    result = run(url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert len(switch.queries) <= probe_mod.MAX_REQUESTS
    for expected in (
        "name:              Test Repository",
        "admin email:       admin@test.example.org",
        "granularity:       YYYY-MM-DDThh:mm:ssZ",
        "earliestDatestamp: 2023-11-14T22:13:20Z",
        "deletedRecord:     persistent",
        "oai_dc  http://www.openarchives.org/OAI/2.0/oai_dc/  http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
        "Sets: 3 (a hierarchy 2 levels deep)",
        "Sample page: ListRecords oai_dc p1: 5 records (0 deleted) in ",
        "Volume: 24 records (completeListSize of ListRecords)",
        "granularity:    seconds, honoured",
        "token lifetime: ",
        "gzip:           served when asked; declared in Identify",
        "encoding:       declared UTF-8, valid UTF-8",
        "XML faults:     none",
        " 0 failed, 0 warnings,",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    assert "not announced" not in out.split("token lifetime:", 1)[1].split("\n", 1)[0]
    # The printed entry, pasted into a config file of its own, loads.
    path = tmp_path / "config.yaml"
    path.write_text(pasted_entry(out), encoding="utf-8")
    partner = config_mod.load(path).partners[0]
    assert (partner.base_url, partner.metadata_prefix) == (url, "oai_dc")
    assert partner.name == f"127.0.0.1-{url.split(':')[2].split('/')[0]}"
    assert set(partner.schedule) == {"cron"} and not partner.quirks


def test_the_rules_are_the_validators_and_the_cap_is_kept(repository: Start) -> None:
    url, switch = repository(None)
    doc = as_json(url, "--max-requests", "8")
    assert len(switch.queries) <= 8 and doc["requests"] <= 8
    results = {r["name"]: r for r in doc["results"]}
    assert set(results) == set(probe_mod.rule_names())
    assert results["identify.required"]["status"] == "PASS"
    assert results["error.bad-verb"]["status"] == "SKIP"
    assert "--max-requests=8" in results["error.bad-verb"]["reason"]
    assert doc["counts"]["FAIL"] == 0
    assert "--max-requests=8 left out:" in doc["not_checked"]


def test_seconds_declared_but_times_refused_means_days(repository: Start, tmp_path: Path) -> None:
    url, switch = repository(TIMES_REFUSED)
    doc = as_json(url)
    detected = doc["detected"]
    assert detected["times_refused"] is True
    assert detected["granularity"] == "YYYY-MM-DD"
    assert "badArgument" in detected["granularity_note"]
    assert any("from=" in q and "T" in dict(parse_qsl(q)).get("from", "") for q in switch.queries)
    assert "granularity: Identify declares seconds but a from with a time is refused" in doc["entry_yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(doc["entry_yaml"], encoding="utf-8")
    assert config_mod.load(path).partners[0].name == doc["entry"]["name"]


def test_a_partner_of_days_is_harvested_by_days_without_being_tried_in_seconds(repository: Start) -> None:
    url, switch = repository(DAYS_ONLY)
    doc = as_json(url)
    assert doc["identify"]["granularity"] == "YYYY-MM-DD"
    assert doc["detected"]["granularity"] == "YYYY-MM-DD"
    assert doc["detected"]["times_refused"] is False
    assert doc["detected"]["granularity_note"] == "days, as Identify declares"
    assert "granularity" not in doc["entry_yaml"].split("schedule:", 1)[1].split("\n", 2)[2]
    # The probe's own granularity request is not sent to a partner that declares days.
    firsts = [dict(parse_qsl(q)) for q in switch.queries[:6]]
    assert not any("T" in args.get("from", "") for args in firsts)


def test_day_granularity_as_is_gets_no_quirk(repository: Start) -> None:
    url, _ = repository(DAY_GRANULARITY)
    doc = as_json(url)
    assert (doc["detected"]["granularity"], doc["detected"]["times_refused"]) == ("YYYY-MM-DD", False)
    assert doc["counts"]["FAIL"] == 0


def test_a_url_that_is_no_oai_pmh_gets_one_line_and_exit_1() -> None:
    def html(params: dict[str, str], n: int) -> Response:
        return xml("<!doctype html><html><body>Welcome</body></html>", mimetype="text/html")

    with FakePartner(html) as partner:
        result = run(partner.url)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"{partner.url} is not an OAI-PMH base URL: verb=Identify answered HTTP 200 text/html"
    )
    assert len(partner.requests) == 1


def test_a_url_that_does_not_answer_gets_one_line_and_exit_1() -> None:
    with FakePartner(lambda params, n: xml(error("badVerb"))) as partner:
        url = partner.url
    result = run(url, "--timeout", "2")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{url} did not answer: no usable HTTP response")
    assert result.stderr.count("\n") == 1


DC_NS = 'xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
HEADER = "<header><identifier>oai:cp.example.org:1</identifier><datestamp>2024-04-01T10:00:00Z</datestamp></header>"


def partner_serving(page: Callable[[str], bytes]) -> Callable[[dict[str, str], int], Response]:
    """A small partner of one record, whose ListRecords page is `page(the record's title element)`."""

    def handler(params: dict[str, str], n: int) -> Response:
        return answer(params, page)

    return handler


def windows_1252(params: dict[str, str], n: int) -> Response:
    """A partner whose records are Windows-1252 bytes under an XML declaration of UTF-8."""
    return answer(params, lambda title: list_page(title).encode("cp1252"))


def list_page(title: str) -> str:
    record = f"<record>{HEADER}<metadata><oai_dc:dc {DC_NS}>{title}</oai_dc:dc></metadata></record>"
    return oai(f"<ListRecords>{record}</ListRecords>")


def answer(params: dict[str, str], page: Callable[[str], bytes]) -> Response:
    verb = params.get("verb")
    if verb == "Identify":
        return xml(identify())
    if verb == "ListMetadataFormats":
        return xml(
            oai(
                "<ListMetadataFormats><metadataFormat><metadataPrefix>oai_dc</metadataPrefix>"
                "<schema>http://www.openarchives.org/OAI/2.0/oai_dc.xsd</schema>"
                "<metadataNamespace>http://www.openarchives.org/OAI/2.0/oai_dc/</metadataNamespace>"
                "</metadataFormat></ListMetadataFormats>"
            )
        )
    if verb == "ListSets":
        return xml(error("noSetHierarchy"))
    listing = params.get("metadataPrefix") == "oai_dc" and "resumptionToken" not in params
    if verb == "ListIdentifiers" and listing:
        return xml(oai(f"<ListIdentifiers>{HEADER}</ListIdentifiers>"))
    if verb == "ListRecords" and listing:
        return xml(page("<dc:title>Caf\u00e9 society</dc:title>"))
    return xml(error("badArgument"))


def test_windows_1252_bytes_declared_utf8_are_named(tmp_path: Path) -> None:
    with FakePartner(windows_1252) as partner:
        doc = as_json(partner.url, "--name", "cafe")
        text = run(partner.url, "--name", "cafe").stdout
    detected = doc["detected"]
    assert detected["encoding_faults"] == ["declared UTF-8, bytes looks like Windows-1252: ListRecords p1"]
    assert "ListRecords p1: declared UTF-8, bytes looks like Windows-1252" in detected["xml_faults"]
    assert doc["sample"]["records"] == 1  # read as the bytes are, to count them
    assert doc["entry"]["name"] == "cafe" and "quirks" not in doc["entry"]
    assert "# encoding: declared UTF-8, bytes looks like Windows-1252" in doc["entry_yaml"]
    assert "declared UTF-8, bytes looks like Windows-1252: ListRecords p1" in text
    results = {r["name"]: r for r in doc["results"]}
    assert results["well-formed"]["status"] == "FAIL"  # the validator's own verdict stands
    path = tmp_path / "config.yaml"
    path.write_text(pasted_entry(text), encoding="utf-8")
    assert config_mod.load(path).partners[0].name == "cafe"


def test_characters_xml_forbids_on_the_sample_page_suggest_lenient_xml(tmp_path: Path) -> None:
    with FakePartner(partner_serving(lambda title: list_page(title + "<dc:subject>a\x0bb</dc:subject>").encode())) as p:
        doc = as_json(p.url)
    assert doc["detected"]["xml_faults"] == ["ListRecords p1: characters XML forbids (U+000B)"]
    assert doc["detected"]["encoding_faults"] == []
    assert doc["entry"]["quirks"] == {"lenient_xml": True}
    assert "# lenient_xml: the sample page is not well-formed (characters XML forbids (U+000B))" in doc["entry_yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(doc["entry_yaml"], encoding="utf-8")
    assert config_mod.load(path).partners[0].quirks == {"lenient_xml": True}


def test_a_doctype_is_named_and_gets_no_quirk() -> None:
    """The harvester refuses a DOCTYPE whatever the quirks: lenient_xml would not help."""

    def with_doctype(title: str) -> bytes:
        declaration, rest = list_page(title).split("\n", 1)
        return f'{declaration}\n<!DOCTYPE OAI-PMH [<!ENTITY e "x">]>\n{rest}'.encode()

    with FakePartner(partner_serving(with_doctype)) as p:
        doc = as_json(p.url)
    assert doc["detected"]["xml_faults"] == ["ListRecords p1: declares a DOCTYPE"]
    assert "quirks" not in doc["entry"]


def test_a_large_sample_page_raises_max_page_mb() -> None:
    report = probe_mod.ProbeReport("https://big.example.org/oai")
    report.sample.bytes = 5 * 2**20
    entry, _ = probe_mod.partner_entry(report, None)
    assert entry["max_page_mb"] == 10


def test_a_name_that_is_no_partner_name_is_refused() -> None:
    with FakePartner(windows_1252) as partner:
        result = run(partner.url, "--name", "no spaces please")
    assert result.exit_code == 2
    assert "--name" in result.stderr and "partners[0].name" in result.stderr


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://www.eprints.example.org/cgi/oai2", "eprints.example.org"),
        ("https://journals.example.org/index.php/abc/oai", "journals.example.org-abc"),
        ("https://dspace.example.edu/server/oai/request", "dspace.example.edu"),
        ("http://127.0.0.1:5000/oai", "127.0.0.1-5000"),
        ("https://example.org/oai?x=1", "example.org"),
    ],
)
def test_a_name_is_made_from_host_and_path(url: str, name: str) -> None:
    assert probe_mod.partner_name(url) == name


@pytest.mark.parametrize(
    ("prefixes", "best"),
    [(["marcxml", "oai_dc"], "oai_dc"), (["marcxml", "nsdl_dc"], "nsdl_dc"), (["mods"], "mods"), ([], "oai_dc")],
)
def test_the_format_chosen(prefixes: list[str], best: str) -> None:
    assert probe_mod.best_prefix([probe_mod.Format(p, "", "") for p in prefixes]) == best


def test_every_rule_the_probe_may_skip_is_one_of_the_validators() -> None:
    """LATER's rules are rule names; a renamed rule would leave the probe skipping a ghost."""
    names = set(probe_mod.rule_names())
    assert {rule for step in probe_mod.LATER for rule in step.rules} <= names
