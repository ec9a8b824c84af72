"""Behind a reverse proxy: a `base_url` with a path prefix is where every link of every page
points, and the log names the client behind the proxies the configuration trusts.

The proxy here is a real one, small: it serves `/repo/` only, forwards to the server over
HTTP (with or without the prefix, as nginx does with or without a URI on `proxy_pass`) and
appends the address of its peer to X-Forwarded-For.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import lxml.html
import pytest
import requests
from conftest import NS, Clock, LiveServer, Threaded, make_config, validate
from lxml import etree

from oaiserver import create_app, proxy
from oaiserver.config import ConfigError
from oaiserver.ingest import ingest
from oaiserver.store import Store

SEEDS = Path(__file__).parent.parent / "seeds"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ReverseProxy(Threaded):
    """`/repo/...` on its own port, forwarded to a backend; anything else is a 404, as from a
    proxy that serves the repository under one location only."""

    def __init__(self, *, strip: bool, client_as: str | None = None) -> None:
        self.backend_port = 0
        self.strip = strip
        self.client_as = client_as  # the address it reports for its peer (its clients are all 127.0.0.1)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _forward(self, body: bytes | None) -> None:
                if not (self.path == "/repo" or self.path.startswith("/repo/")):
                    self.send_error(404, "not proxied")
                    return
                path = (self.path[len("/repo") :] or "/") if outer.strip else self.path
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                peer = outer.client_as or self.client_address[0]
                sent = self.headers.get("X-Forwarded-For")
                headers["X-Forwarded-For"] = f"{sent}, {peer}" if sent else peer
                conn = http.client.HTTPConnection("127.0.0.1", outer.backend_port, timeout=30)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.port = self.server.server_address[1]


@dataclass
class Site:
    root: str  # the public root, http://127.0.0.1:<proxy>/repo
    backend: str  # the server itself, http://127.0.0.1:<port>
    proxy: ReverseProxy


def serve_behind_proxy(tmp: Path, *, strip: bool, client_as: str | None = None, **config: object) -> Iterator[Site]:
    """A real server whose base_url is the proxy's `/repo/oai`, over a store of ingested seeds
    (one withdrawn, for a 410 landing page)."""
    url = f"sqlite:///{tmp / 'store.sqlite3'}"
    clock = Clock()
    store = Store(url, clock=clock)
    seeds = tmp / "seeds"
    seeds.mkdir()
    for name in ("kept", "gone"):
        shutil.copy(next(SEEDS.glob("*.txt")), seeds / f"{name}.txt")
    with ReverseProxy(strip=strip, client_as=client_as) as rp, LiveServer(None) as server:
        rp.backend_port = server.port
        cfg = make_config(url, repository__base_url=f"http://127.0.0.1:{rp.port}/repo/oai", **config)
        assert ingest(cfg, store, seeds).written.added == 2
        clock.tick()
        store.delete(["oai:test.example.org:gone"])
        server.server.app = create_app(cfg, store=store)
        yield Site(f"http://127.0.0.1:{rp.port}/repo", f"http://127.0.0.1:{server.port}", rp)
    store.close()


@pytest.fixture(params=["prefix stripped", "prefix kept"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    yield from serve_behind_proxy(tmp_path, strip=request.param == "prefix stripped")


def links(page: str, html: str) -> set[str]:
    """Every href, src and action of an HTML page, made absolute."""
    doc = lxml.html.fromstring(html)
    return {urljoin(page, v) for el in doc.iter() for k, v in el.attrib.items() if k in ("href", "src", "action")}


PAGES = [
    ("/", 200),
    ("/oai/view?verb=Identify", 200),
    ("/oai/view?verb=ListSets", 200),
    ("/oai/view?verb=ListMetadataFormats", 200),
    ("/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 200),
    ("/oai/view?verb=ListIdentifiers&metadataPrefix=oai_dc", 200),
    ("/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:kept", 200),
    ("/oai/view?verb=Bogus", 200),  # an OAI-PMH error, shown as a page
    ("/records/oai:test.example.org:kept", 200),
    ("/records/oai:test.example.org:gone", 410),
]


def test_every_link_of_every_page_resolves_through_the_prefix(site: Site) -> None:
    """Pages, error pages and landing pages link only under base_url's prefix, and every link
    answers through the proxy (nothing outside /repo/ is proxied)."""
    seen: set[str] = set()
    for path, status in PAGES:
        page = site.root + path
        response = requests.get(page, timeout=30)
        assert response.status_code == status, (path, response.status_code)
        found = links(page, response.text)
        assert any("style.css" in link for link in found), path
        assert all(link.startswith(site.root + "/") for link in found), (path, sorted(found))
        seen |= found
    for link in sorted(seen):
        answer = requests.get(link, timeout=30)
        assert answer.status_code in (200, 410), (link, answer.status_code)


def test_the_xml_stylesheet_and_landing_urls_resolve_through_the_prefix(site: Site) -> None:
    response = requests.get(f"{site.root}/oai", params={"verb": "ListRecords", "metadataPrefix": "oai_dc"}, timeout=30)
    doc = validate(response.content)
    stylesheet = re.search(rb'<\?xml-stylesheet type="text/xsl" href="([^"]+)"\?>', response.content)
    assert stylesheet is not None
    xsl = stylesheet.group(1).decode()
    assert xsl == f"{site.root}/static/oai2.xsl"
    transform = requests.get(xsl, timeout=30)
    assert transform.status_code == 200
    # The stylesheet's own links are relative to the document it renders (…/repo/oai).
    xsl_links = etree.fromstring(transform.content).xpath("//@href")
    for link in {urljoin(f"{site.root}/oai", v) for v in xsl_links if not v.startswith("?")}:
        assert link.startswith(site.root + "/") and requests.get(link, timeout=30).status_code == 200, link
    landing = doc.xpath("//dc:identifier/text()", namespaces=NS)
    assert landing == [f"{site.root}/records/oai:test.example.org:kept"]
    assert requests.get(landing[0], timeout=30).status_code == 200


def test_not_found_names_the_public_paths(site: Site) -> None:
    response = requests.get(f"{site.root}/nowhere", timeout=30)
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/html")
    said = " ".join(lxml.html.fromstring(response.content).text_content().split())
    assert "The OAI-PMH interface is at /repo/oai; people start at /repo/" in said


def test_the_server_answers_without_the_proxy_too(site: Site) -> None:
    """Probes and operators on the host reach the server directly, without the prefix."""
    assert requests.get(f"{site.backend}/healthz", timeout=30).status_code == 200
    direct = requests.get(f"{site.backend}/oai", params={"verb": "Identify"}, timeout=30)
    assert validate(direct.content).xpath("//oai:baseURL/text()", namespaces=NS) == [f"{site.root}/oai"]


def test_a_local_base_url_changes_no_link(tmp_path: Path) -> None:
    """The default base_url (http://127.0.0.1:5000/oai) has no prefix: links are as they were."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    store = Store(url)
    try:
        app = create_app(make_config(url, repository__base_url="http://127.0.0.1:5000/oai"), store=store)
        page = app.test_client().get("/").get_data(as_text=True)
        found = links("http://127.0.0.1:5000/", page)
        assert "http://127.0.0.1:5000/static/style.css" in found
        assert "http://127.0.0.1:5000/oai/view?verb=Identify" in found
    finally:
        store.close()


# ---- the client address and the log line ---------------------------------------------------------

NETS = proxy.networks(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "client"),
    [
        # Nobody trusted (the default): the peer, whatever the header says.
        ("203.0.113.5", "198.51.100.1", (), "203.0.113.5"),
        ("127.0.0.1", "198.51.100.1", (), "127.0.0.1"),
        # A peer that is not a trusted proxy: its header is not believed.
        ("203.0.113.5", "198.51.100.1", NETS, "203.0.113.5"),
        # A trusted proxy: the rightmost address that is not a trusted proxy.
        ("127.0.0.1", "198.51.100.1", NETS, "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.9", NETS, "203.0.113.9"),  # the first is the client's claim
        ("127.0.0.1", "203.0.113.9, 10.1.2.3", NETS, "203.0.113.9"),  # through two trusted proxies
        ("10.9.9.9", " 203.0.113.9 ,10.1.2.3 ,  ", NETS, "203.0.113.9"),
        ("127.0.0.1", "2001:db8::1, 2001:db9::7", NETS, "2001:db9::7"),
        ("127.0.0.1", "203.0.113.9:5123", NETS, "203.0.113.9"),  # with a port, as some proxies send
        ("127.0.0.1", "[2001:db9::7]:443", NETS, "2001:db9::7"),
        # Only trusted addresses: the farthest one.
        ("127.0.0.1", "10.0.0.1, 10.0.0.2", NETS, "10.0.0.1"),
        ("127.0.0.1", None, NETS, "127.0.0.1"),
        ("127.0.0.1", "", NETS, "127.0.0.1"),
        # What is not an address is reported as it is (the log quotes it).
        ("127.0.0.1", "unknown", NETS, "unknown"),
        (None, "198.51.100.1", NETS, "-"),
    ],
)
def test_the_client_is_the_rightmost_address_not_of_a_trusted_proxy(
    peer: str | None, forwarded_for: str | None, trusted: tuple[ipaddress.IPv4Network, ...], client: str
) -> None:
    assert proxy.client_address(peer, forwarded_for, trusted) == client


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("curl/8.5.0", '"curl/8.5.0"'),
        (None, "-"),
        ('a" client=1.2.3.4 verb=Identify', r'"a\" client=1.2.3.4 verb=Identify"'),
        ("line\nforged oai client=x\r\x1b[31m", r'"line\nforged oai client=x\r\u001b[31m"'),
        ("back\\slash é", r'"back\\slash \u00e9"'),
        ("x" * 1000, '"' + "x" * proxy.LOG_TEXT_LIMIT + '..."'),
    ],
)
def test_a_log_field_is_one_quoted_line_and_capped(value: str | None, field: str) -> None:
    assert proxy.log_text(value) == field


def test_an_address_is_logged_bare_and_anything_else_quoted() -> None:
    assert proxy.log_address("203.0.113.9") == "203.0.113.9"
    assert proxy.log_address("2001:db8::1") == "2001:db8::1"
    assert proxy.log_address("evil verb=ListRecords") == '"evil verb=ListRecords"'


@pytest.mark.parametrize(
    ("trusted", "client"), [(None, "127.0.0.1"), (["127.0.0.1"], "203.0.113.9"), (["10.0.0.0/8"], "127.0.0.1")]
)
def test_the_log_names_the_client_behind_a_trusted_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trusted: list[str] | None, client: str
) -> None:
    """The proxy reports its client as 203.0.113.9; that client claims to be 198.51.100.66. Only
    a trusted proxy's word is taken, and only for the hop it adds."""
    extra = {} if trusted is None else {"server__trusted_proxies": trusted}
    for s in serve_behind_proxy(tmp_path, strip=True, client_as="203.0.113.9", **extra):
        caplog.set_level(logging.INFO, logger="oaiserver.web")
        headers = {"X-Forwarded-For": "198.51.100.66", "User-Agent": 'Harvester/1.0 "quoted" ' + "x" * 500}
        assert requests.get(f"{s.root}/oai?verb=Identify", headers=headers, timeout=30).status_code == 200
        assert requests.get(f"{s.root}/", headers=headers, timeout=30).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "oaiserver.web"]
    sent = 'Harvester/1.0 "quoted" '
    ua = r'ua="Harvester/1.0 \"quoted\" ' + "x" * (proxy.LOG_TEXT_LIMIT - len(sent)) + '..."'
    oai_lines = [line for line in lines if line.startswith("oai ")]
    page_lines = [line for line in lines if line.startswith("http ")]
    assert len(oai_lines) == 1 and len(page_lines) == 1, lines
    assert oai_lines[0].startswith(f"oai client={client} verb=Identify ") and oai_lines[0].endswith(" " + ua)
    assert page_lines[0].startswith(f"http client={client} GET / status=200 ") and page_lines[0].endswith(" " + ua)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["10.0.0.0/33"], "server.trusted_proxies: '10.0.0.0/33' is not an IP address or network"),
        (["proxy.example.org"], "server.trusted_proxies: 'proxy.example.org' is not an IP address or network"),
        ([7], "server.trusted_proxies: 7 is not an IP address or network"),
        ({"a": 1}, "server.trusted_proxies: expected list or str"),
        (["127.0.0.1"] * 101, "server.trusted_proxies: at most 100 items, got 101"),
    ],
)
def test_trusted_proxies_are_checked_when_the_configuration_loads(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config("sqlite://", server__trusted_proxies=value)
    assert str(caught.value).startswith(message), caught.value


def test_trusted_proxies_default_to_none_and_take_one_address_or_a_list() -> None:
    assert make_config("sqlite://").trusted_proxies == ()
    assert make_config("sqlite://", server__trusted_proxies="127.0.0.1").trusted_proxies == NETS[:1]
    one = make_config("sqlite://", server__trusted_proxies=["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert one.trusted_proxies == NETS


def test_a_public_url_with_a_port_only_is_no_prefix() -> None:
    assert proxy.prefix_of("http://127.0.0.1:5000") == ""
    assert proxy.prefix_of("https://example.org/repo") == "/repo"
    assert proxy.prefix_of("https://example.org/a/b%20c") == "/a/b c"
    assert urlsplit(make_config("sqlite://").site_url).path == ""
