"""Hostile partners at the transport: a gzip bomb, a huge page, an endless stream, a drip, and
redirects elsewhere. Each ends its page with a clear reason within the request's deadline, memory
stays bounded, and the next run resumes at the checkpoint."""

from __future__ import annotations

import functools
import itertools
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG
from harvestkit import (
    FAST,
    FAST_HARVEST,
    FakePartner,
    PagedPartner,
    Raw,
    RawPartner,
    Streamed,
    list_records,
    oai,
    record,
    xml,
)
from werkzeug.wrappers import Response

from harvester import client as client_module
from harvester import errors as err
from harvester import harvest, pipeline
from harvester.client import Client, Page, settings_for
from harvester.transport import redirect_allowed
from oaiserver.config import ConfigError, Partner, from_mapping
from oaiserver.store import Store, harvest_state_of

ROOT = Path(__file__).parent.parent
MB = 2**20
PAGE_1 = [record(f"oai:p:{i}") for i in range(3)]
PAGE_2 = [record(f"oai:p:{i}") for i in range(3, 6)]
# In-process runs: a cap of 1 MB and a deadline of 3 s stand for the defaults.
SMALL = replace(FAST, max_page_bytes=MB, deadline=3.0, timeout=1.0)
SMALL_HARVEST = replace(FAST_HARVEST, client=SMALL, worker_process=False)


def head() -> bytes:
    """The start of a ListRecords page that never ends."""
    return oai("<ListRecords>").removesuffix("</OAI-PMH>").encode()


def endless() -> Iterator[bytes]:
    """Records for ever, 64 KB at a time."""
    chunk = ("".join(record(f"oai:p:{i}") for i in range(200)) * 2).encode()[: 64 * 1024]
    yield head()
    while True:
        yield chunk


def header_drip(interval: float) -> Iterator[bytes]:
    """A status line, then a header that never ends, one byte each `interval` seconds."""
    yield b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nX-Slow: "
    while True:
        time.sleep(interval)
        yield b"a"


def drip(interval: float) -> Iterator[bytes]:
    """One byte each `interval` seconds, for ever: every read gets something well within its
    timeout, so only a deadline for the whole response ends it."""
    for byte in itertools.cycle(list(oai("").encode())):
        time.sleep(interval)
        yield bytes([byte])


def gzip_drip(interval: float) -> Iterator[bytes]:
    """A gzip stream that inflates to nothing, for ever: empty stored blocks, one each `interval`
    seconds (a decoder reading on until it has output would never return)."""
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # the gzip header
    while True:
        time.sleep(interval)
        yield b"\x00\x00\x00\xff\xff"  # a stored block of no bytes, not the last


@functools.cache
def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of `inflated` bytes: the start of a page, then spaces (about 1/1000 the size)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [z.compress(head())]
    block = b" " * MB
    parts += [z.compress(block) for _ in range(inflated // MB)]
    parts.append(z.flush())
    return b"".join(parts)


HOSTILE: dict[str, Callable[[], Raw | Streamed]] = {
    "gzip-bomb": lambda: Streamed([gzip_bomb(64 * MB)], headers={"Content-Encoding": "gzip"}),
    "huge-page": lambda: Streamed(endless(), length=2 * 1024 * MB),
    "endless-chunked": lambda: Streamed(endless(), chunked=True),
    "drip": lambda: Streamed(drip(0.05), length=100_000),
    "header-drip": lambda: Streamed(header_drip(0.05), head=False),
    "gzip-drip": lambda: Streamed(gzip_drip(0.05), headers={"Content-Encoding": "gzip"}, length=1_000_000),
}


class Hostile:
    """A partner whose first page is fine (token t1) and whose second is hostile while `on`."""

    def __init__(self, case: str) -> None:
        self.case, self.on = case, True
        self.paged = PagedPartner([PAGE_1, PAGE_2])

    def __call__(self, params: dict[str, str], n: int) -> Raw | Streamed:
        if params.get("resumptionToken") == "t1" and self.on:
            return HOSTILE[self.case]()
        answer = self.paged(params, n)
        return Raw(answer.get_data(), status=answer.status_code)


def run_within(seconds: float, work: Callable[[], harvest.RunReport]) -> harvest.RunReport:
    """`work()` on a thread; the test fails (instead of hanging) when it has not ended in time."""
    done: list[harvest.RunReport] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"the run had not ended after {seconds} s"
    return done[0]


REASONS = {
    "gzip-bomb": r"larger than 1 MB .*max_page_mb",
    "huge-page": r"announces 2,048 MB, more than 1 MB .*max_page_mb",
    "endless-chunked": r"larger than 1 MB .*max_page_mb",
    "drip": r"did not complete within 3 s",
    "header-drip": r"did not complete within 3 s",
    "gzip-drip": r"did not complete within 3 s",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_page_ends_with_a_clear_reason_and_the_next_run_resumes(store: Store, case: str) -> None:
    gzip_bomb(64 * MB)  # made before the partner is asked for it: making it takes a while
    partner_handler = Hostile(case)
    with RawPartner(partner_handler) as partner:
        first = run_within(60, lambda: harvest.run(store, Partner("p", partner.url), settings=SMALL_HARVEST))
        assert first.outcome == "failed" and first.counts.pages == 1, first
        assert re.search(REASONS[case], first.reason or ""), first.reason
        checkpoint = harvest_state_of(store, "p").checkpoint
        assert checkpoint is not None and checkpoint["token"] == "t1"
        partner_handler.on = False
        partner.requests.clear()
        second = run_within(60, lambda: harvest.run(store, Partner("p", partner.url), settings=SMALL_HARVEST))
    assert second.outcome == "success" and second.resumed, second.reason
    assert [r.get("resumptionToken") for r in partner.requests] == ["t1"]
    assert store.identifiers(source="p") == {f"oai:p:{i}" for i in range(6)}


def test_a_page_under_the_cap_is_read_whole_gzip_or_not(store: Store) -> None:
    """The cap counts decompressed bytes; a real page (gzip-encoded by the server) passes."""
    big = [record(f"oai:p:{i}", "word " * 500) for i in range(300)]  # about 800 KB
    body = list_records(big).encode()
    gzipped = zlib.compressobj(6, zlib.DEFLATED, 31)
    wire = gzipped.compress(body) + gzipped.flush()
    with RawPartner(lambda params, n: Streamed([wire], headers={"Content-Encoding": "gzip"})) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=SMALL_HARVEST)
    assert report.outcome == "success" and report.counts.received == 300, report.reason


def test_a_page_of_more_records_than_its_size_allows_is_refused_before_conversion(store: Store) -> None:
    """320 records a megabyte of the cap: 3,840 by default, where real pages hold 100 to 1,000."""
    tiny = [record(f"oai:p:{i}") for i in range(321)]  # about 120 KB
    with FakePartner(lambda params, n: xml(list_records(tiny))) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=SMALL_HARVEST)
    assert report.outcome == "failed" and "holds 321 records, more than the 320" in (report.reason or "")
    assert store.identifiers(source="p") == set()


def test_a_page_with_more_markup_than_its_size_allows_is_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half a megabyte of `<a/>` is a tree of 100 MB: the page is refused unparsed."""
    body = oai("<ListRecords><record><metadata>" + "<a/>" * (MB // 8) + "</metadata></record></ListRecords>")

    def parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the page was parsed")

    monkeypatch.setattr(client_module, "xml_parser", parse)
    with (
        FakePartner(lambda params, n: xml(body)) as partner,
        Client(partner.url, SMALL) as client,
        pytest.raises(err.PageTooLargeError, match=r"tags and attributes"),
    ):
        client.request("ListRecords", metadataPrefix="oai_dc")


def test_the_cap_and_redirect_hosts_are_partner_settings() -> None:
    base = SMALL
    s = settings_for(Partner("p", "http://x/oai", max_page_mb=3, allow_redirects_to=("https://y:8443",)), base)
    assert s.max_page_bytes == 3 * MB and s.redirect_origins == ("https://y:8443",)
    assert settings_for(Partner("p", "http://x/oai"), base).max_page_bytes == MB


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "max_page_mb: expected a whole number of megabytes from 1 to 1024"),
        (2048, "max_page_mb: expected a whole number of megabytes from 1 to 1024"),
        ("big", "max_page_mb: expected a whole number of megabytes from 1 to 1024"),
        (True, "max_page_mb: expected a whole number of megabytes from 1 to 1024"),
    ],
)
def test_a_bad_page_cap_is_named_at_config_load(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"partners\.p\.{message}"):
        from_mapping({"partners": [{"name": "p", "base_url": "http://x/oai", "max_page_mb": value}]})


@pytest.mark.parametrize("value", ["mirror.example.org", ["ftp://m.example.org"], ["m.example.org/path"], [3]])
def test_bad_redirect_hosts_are_named_at_config_load(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"partners\.p\.allow_redirects_to: "):
        from_mapping({"partners": [{"name": "p", "base_url": "http://x/oai", "allow_redirects_to": value}]})


def test_the_config_keys_are_read() -> None:
    config = from_mapping(
        {
            "partners": [
                {
                    "name": "p",
                    "base_url": "http://x/oai",
                    "max_page_mb": 64,
                    "allow_redirects_to": ["mirror.example.org", "https://cdn.example.org:8443"],
                }
            ]
        }
    )
    partner = config.partners[0]
    assert partner.max_page_mb == 64
    assert partner.allow_redirects_to == ("mirror.example.org", "https://cdn.example.org:8443")


# ---- redirects ---------------------------------------------------------------------------------


def redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


def test_a_redirect_on_the_partners_own_host_and_port_is_followed() -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        return redirect("/oai?moved=1&verb=ListRecords") if "moved" not in params else xml(list_records(PAGE_1))

    with FakePartner(handler) as partner, Client(partner.url, SMALL) as client:
        page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert len(page.items) == 3 and len(partner.requests) == 2


def test_a_redirect_to_another_port_is_refused_unless_allowed() -> None:
    with (
        FakePartner(lambda params, n: xml(list_records(PAGE_1))) as elsewhere,
        FakePartner(lambda params, n: redirect(elsewhere.url + "?verb=ListRecords")) as partner,
    ):
        with Client(partner.url, SMALL) as client, pytest.raises(err.RedirectError, match=r"redirected to"):
            client.request("ListRecords", metadataPrefix="oai_dc")
        assert elsewhere.requests == []
        origin = elsewhere.url.rsplit("/", 1)[0]
        allowed = settings_for(Partner("p", partner.url, allow_redirects_to=(origin,)), SMALL)
        with Client(partner.url, allowed) as client:
            page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert len(page.items) == 3 and len(elsewhere.requests) == 1


def test_at_most_five_redirects_are_followed(store: Store) -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        return redirect(f"/oai?verb=ListRecords&hop={n + 1}")

    with FakePartner(handler) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=SMALL_HARVEST)
    assert report.outcome == "failed" and "more than 5 redirects" in (report.reason or ""), report.reason
    assert len(partner.requests) == 6


@pytest.mark.parametrize(
    ("target", "allowed", "ok"),
    [
        ("http://p.example.org/oai2?verb=Identify", (), True),
        ("http://P.EXAMPLE.ORG:80/x", (), True),
        ("https://p.example.org/oai", (), False),  # another scheme, even the safer one
        ("http://p.example.org:8080/oai", (), False),  # another port
        ("http://q.example.org/oai", (), False),  # another host
        ("http://q.example.org/oai", ("q.example.org",), True),  # a bare host: the partner's scheme
        ("https://q.example.org/oai", ("q.example.org",), False),
        ("https://q.example.org/oai", ("https://q.example.org",), True),
        ("https://q.example.org:8443/oai", ("https://q.example.org",), False),
        ("https://q.example.org:8443/oai", ("https://q.example.org:8443",), True),
        ("ftp://p.example.org/oai", (), False),
        ("http://user@p.example.org.evil.example/oai", (), False),
    ],
)
def test_where_a_redirect_may_go(target: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert redirect_allowed("http://p.example.org/oai", target, allowed) is ok


# ---- memory and time of `harvester run` against each hostile page (default cap) -------------------

# Runs the command given, watches its memory (killing it past GUARD MB, so a broken cap cannot
# take the machine down), and prints its exit code, the seconds it took and its peak RSS in MB;
# then the RSS of the process and of its worker every quarter of a second (`rss`, time of day,
# MB, MB: the clock its log lines are stamped with), and what it printed.
WATCH = """
import datetime, resource, subprocess, sys, time
GUARD = 600 * 1024
started = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # the outcome is on stdout
killed, workers, samples, sampled = False, {}, [], 0.0
def status(pid, key):
    try:
        return int(open(f"/proc/{pid}/status").read().split(key + ":")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0
while child.poll() is None:
    rss = status(child.pid, "VmRSS")
    if rss > GUARD and not killed:
        child.kill()
        killed = True
    try:
        pids = open(f"/proc/{child.pid}/task/{child.pid}/children").read().split()
    except OSError:
        pids = []
    for pid in pids:  # the worker process: its high-water mark, while it lives
        workers[pid] = max(workers.get(pid, 0), status(pid, "VmHWM"))
    if time.monotonic() - sampled >= 0.25:
        sampled = time.monotonic()
        when = datetime.datetime.now().strftime("%H:%M:%S,%f")[:12]
        samples.append(f"rss\t{when}\t{rss // 1024}\t{sum(status(pid, 'VmRSS') for pid in pids) // 1024}")
    time.sleep(0.02)
err = child.stdout.read().decode("utf-8", "replace")
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
worker = max(workers.values(), default=0) / 1024
row = (child.returncode, round(time.monotonic() - started, 1), round(peak), round(worker), "killed" if killed else "")
print(*row, sep="\t")
print(*samples, sep="\\n")
print(err[-3000:])
"""
_LOGGED = re.compile(r"\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d,\d{3}) (.*)")


def memory_story(output: str) -> str:
    """What WATCH printed, as one story in time order: the RSS of the harvest's process and of its
    worker, among the harvest's log lines (each page committed, the worker started...)."""
    events = []
    for line in output.splitlines()[1:]:
        if line.startswith("rss\t"):
            _, when, main, worker = line.split("\t")
            events.append((when, f"RSS {main} + {worker} = {int(main) + int(worker)} MB"))
        elif m := _LOGGED.match(line):
            events.append((m.group(1), "  " + m.group(2)[:240]))
    return "\n".join(f"{when} {what}" for when, what in sorted(events, key=lambda e: e[0]))


def watched_run(config: dict[str, Any], tmp_path: Path) -> tuple[str, str, int, int, str, str]:
    """`harvester run --timeout 5 --retries 0` under WATCH: exit code, seconds, peak RSS of the
    harvest's process and of its worker process in MB, "killed" or "", and what it printed."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "harvester.cli", "-c", str(path), "run", "--timeout", "5", "--retries", "0"]
    done = subprocess.run(
        [sys.executable, "-c", WATCH, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    status, seconds, peak, worker, killed = done.stdout.splitlines()[0].split("\t")
    return status, seconds, int(peak), int(worker), killed, done.stdout


FULL_HOSTILE: dict[str, Callable[[], Streamed]] = {
    "gzip-bomb": lambda: Streamed([gzip_bomb(1024 * MB)], headers={"Content-Encoding": "gzip"}),
    "huge-page": lambda: Streamed(endless(), length=2 * 1024 * MB),
    "endless-chunked": lambda: Streamed(endless(), chunked=True),
    "drip": lambda: Streamed(drip(1.0), length=4 * MB),
    "header-drip": lambda: Streamed(header_drip(1.0), head=False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FULL_HOSTILE))
def test_harvester_run_stays_small_and_ends_in_time_against_a_hostile_page(tmp_path: Path, case: str) -> None:
    """`harvester run --timeout 5 --retries 0` with the default cap: every hostile page ends the
    run with its reason (the subprocess's own timeout is a generous bound, not a measurement), and
    the process's peak memory stays under 400 MB. The figures are printed (pytest -s)."""
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"  # the transport's memory, not a store's
    if case == "gzip-bomb":
        gzip_bomb(1024 * MB)  # made before the partner is asked for it: making it takes seconds
    served = {"first": True}

    def handler(params: dict[str, str], n: int) -> Raw | Streamed:
        if params.get("verb") == "ListRecords" and served["first"]:
            served["first"] = False
            return FULL_HOSTILE[case]()
        return Raw(oai("<error code='badVerb'/>"))

    with RawPartner(handler) as partner:
        config = {**BASE_CONFIG, "storage": {"url": store_url}, "partners": [{"name": "p", "base_url": partner.url}]}
        status, seconds, peak, _, killed, output = watched_run(config, tmp_path)
    print(f"\n{case}: exit {status}, {seconds} s, peak RSS {peak} MB {killed}")
    assert not killed, f"{case}: the harvester passed 600 MB and was killed"
    assert peak < 400, f"{case}: peak RSS {peak} MB"
    assert status == "1", output
    reason = "did not complete within 20 s" if case in ("drip", "header-drip") else "max_page_mb"
    assert reason in output, output


@pytest.mark.parametrize(("budget", "asked"), [(pipeline.AHEAD_BUDGET, 3), (1, 1)], ids=["light", "heavy"])
def test_heavy_pages_are_not_asked_for_ahead(monkeypatch: pytest.MonkeyPatch, budget: int, asked: int) -> None:
    """Light pages are asked for two ahead; pages heavier than the budget only when the caller
    wants the next one, so that at most two are in memory at once."""
    monkeypatch.setattr(pipeline, "AHEAD_BUDGET", budget)

    def answer(params: dict[str, str], n: int) -> Response:
        return xml(list_records([record(f"oai:p:{n}")], f"t{n + 1}" if n < 5 else None))

    with FakePartner(answer) as partner, Client(partner.url, SMALL) as client:
        tokens: list[str | None] = []
        for page in ahead_of(client, 2):
            if not tokens:
                time.sleep(0.5)  # time enough for the pages ahead to be asked for, if they are
                assert len(partner.requests) == asked
            tokens.append(page.token)
    assert tokens == [f"t{n}" for n in range(1, 6)] + [None]


def ahead_of(client: Client, ahead: int) -> Iterator[Page]:
    """A list's pages asked for ahead, as a harvest asks for them (harvester.pipeline)."""
    return pipeline.fetched_ahead(
        lambda cancel: client.pages("ListRecords", cancel=cancel, metadataPrefix="oai_dc"),
        ahead=ahead,
        stop=client.stop,
        weight=lambda page: page.weight,
    )


def _urllib3_errors() -> list[type[BaseException]]:
    import inspect

    import urllib3.exceptions

    return [
        cls
        for _, cls in inspect.getmembers(urllib3.exceptions, inspect.isclass)
        if issubclass(cls, urllib3.exceptions.HTTPError)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["long values", "many elements"])
def test_the_heaviest_pages_the_default_caps_allow_keep_the_harvester_under_400_mb(tmp_path: Path, shape: str) -> None:
    """Five pages just under the default cap, each holding as many records as the cap allows,
    each record as large as fits, in long values or in as many elements as the markup cap allows:
    the heaviest a partner can send by default. The harvester is its process and its worker
    process together. Printed with pytest -s."""
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"  # the transport's and conversion's memory
    cap = client_module.DEFAULT_MAX_PAGE_MB * MB
    count = client_module.RECORDS_PER_MB * client_module.DEFAULT_MAX_PAGE_MB - 1
    empty = len(list_records([record("oai:p:PAGE-0", "A title " * 20, extra="<dc:description></dc:description>")], "T"))
    room = (cap - 64 * 1024) // count - empty  # bytes left in each record
    if shape == "long values":
        text = "<dc:description>" + "word " * (room // 5) + "</dc:description>"
    else:  # each <dc:subject>ab</dc:subject> is two of the markup cap's `<`, in 27 bytes
        most = cap // client_module.BYTES_PER_MARKUP // count // 2 - 12  # less the record's own
        text = "<dc:description></dc:description>" + "<dc:subject>ab</dc:subject>" * min(most, room // 27)
    template = list_records([record(f"oai:p:PAGE-{i}", "A title " * 20, extra=text) for i in range(count)], "TOKEN")
    assert len(template) < cap and (shape != "long values" or len(template) > cap * 0.9), (len(template), cap)

    def handler(params: dict[str, str], n: int) -> Response:
        token = params.get("resumptionToken")
        page = int(token[1:]) if token else 0
        following = f"t{page + 1}" if page < 4 else ""
        return xml(template.replace("PAGE", str(page)).replace("TOKEN", following))

    with FakePartner(handler) as partner:
        config = {**BASE_CONFIG, "storage": {"url": store_url}, "partners": [{"name": "p", "base_url": partner.url}]}
        status, seconds, peak, worker, killed, output = watched_run(config, tmp_path)
    story = (
        f"heaviest pages ({shape}: {count} records, {len(template):,} bytes, {template.count('<'):,} tags; pages "
        f"asked for ahead while those held weigh under {pipeline.AHEAD_BUDGET // MB} MB): exit {status}, "
        f"{seconds} s, peak RSS {peak} MB + worker {worker} MB = {peak + worker} MB {killed}\n{memory_story(output)}"
    )
    print("\n" + story)
    assert not killed and status == "0", output
    assert f"{5 * count} record(s)" in output.replace(",", ""), output
    assert peak + worker < 400, story


@pytest.mark.parametrize("exc_type", _urllib3_errors(), ids=lambda c: c.__name__)
def test_every_urllib3_error_while_reading_a_body_is_mapped(
    exc_type: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body is read from urllib3 directly: its errors come unwrapped by requests."""
    import urllib3.response

    response = SimpleNamespace(tell=lambda: 0, length_remaining=1)
    for attempt in (("boom",), (None, "boom"), (None, None, "boom"), (0, 10), (response, b"x")):
        try:
            made = exc_type(*attempt)
            str(made)
            break
        except (TypeError, AttributeError):
            continue
    else:
        raise AssertionError(f"cannot make a {exc_type.__name__}")

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise made

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read1", explode)
    with (
        FakePartner(lambda params, n: xml(list_records(PAGE_1))) as partner,
        Client(partner.url, replace(SMALL, retries=1)) as client,
        pytest.raises(err.TransportError, match=exc_type.__name__),
    ):
        client.request("ListRecords", metadataPrefix="oai_dc")


def test_the_connection_is_kept_alive_from_page_to_page() -> None:
    """A page read whole returns its connection to the pool: a partner over TLS is not shaken
    hands with anew for every page."""
    import http.server

    peers: list[tuple[str, int]] = []

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            peers.append(self.client_address)
            body = list_records(PAGE_1).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}/oai", SMALL) as client:
            for _ in range(3):
                assert len(client.request("ListRecords", metadataPrefix="oai_dc").items) == 3
    finally:
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1, peers


def test_a_stop_ends_a_page_that_is_still_arriving(store: Store) -> None:
    """SIGTERM while a partner drips a page: the run stops at once (not at the deadline), and
    the next run asks for the page again."""
    dripping, stop = threading.Event(), threading.Event()
    paged = PagedPartner([PAGE_1, PAGE_2])

    def slow() -> Iterator[bytes]:
        for byte in drip(0.05):
            dripping.set()
            yield byte

    def handler(params: dict[str, str], n: int) -> Raw | Streamed:
        if params.get("resumptionToken") == "t1":
            return Streamed(slow(), length=100_000)
        answer = paged(params, n)
        return Raw(answer.get_data(), status=answer.status_code)

    patient = replace(SMALL_HARVEST, client=replace(SMALL, deadline=120.0))
    result: list[harvest.RunReport] = []
    with RawPartner(handler) as partner:
        work = lambda: result.append(harvest.run(store, Partner("p", partner.url), settings=patient, stop=stop))  # noqa: E731
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        assert dripping.wait(60), "the partner never started its page"
        stop.set()
        thread.join(60)
    assert result, "the run did not stop while the page was arriving"
    assert result[0].outcome == "failed" and "stopped" in (result[0].reason or ""), result[0].reason
    checkpoint = harvest_state_of(store, "p").checkpoint
    assert checkpoint is not None and checkpoint["token"] == "t1"
