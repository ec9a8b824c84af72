"""Headers that keep people's pages safe to show harvested text, and the XML still readable in
browsers that apply its stylesheet."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import Clock, OAIClient, make_record, validate

from oaiserver.store import Store

PAGES = [
    ("/", 200),
    ("/oai/view?verb=Identify", 200),
    ("/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 200),
    ("/oai/view?verb=Nonsense", 200),
    ("/records/oai:test.example.org:1", 200),
    ("/records/oai:test.example.org:2", 410),
    ("/records/oai:test.example.org:unknown", 404),
    ("/no/such/page", 404),
]


@pytest.fixture
def site(oai: OAIClient, store: Store, clock: Clock) -> Any:
    store.write([make_record("1", "<script>alert(1)</script>"), make_record("2")])
    clock.tick()
    store.delete(["oai:test.example.org:2"])
    clock.tick()
    return oai.http


def csp(response: Any) -> dict[str, str]:
    policy = response.headers.get("Content-Security-Policy", "")
    return {d.split()[0]: d.strip() for d in policy.split(";") if d.strip()}


@pytest.mark.parametrize(("path", "status"), PAGES)
def test_pages_for_people_send_the_safety_headers(site: Any, path: str, status: int) -> None:
    response = site.get(path)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    policy = csp(response)
    assert policy["default-src"] == "default-src 'none'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert policy["style-src"] == "style-src 'self'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("path", "status"), [p for p in PAGES if p[0].startswith(("/oai", "/records"))][:6])
def test_pages_need_nothing_the_policy_blocks(site: Any, path: str, status: int) -> None:
    """No inline script or style, and stylesheets from the site itself only: the policy
    breaks nothing on the page."""
    html = site.get(path).data.decode()
    assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)
    for href in re.findall(r'<link[^>]+href="([^"]+)"', html):
        assert href.startswith("/") and not href.startswith("//"), href


def test_the_xml_keeps_its_stylesheet_loadable(site: Any) -> None:
    """/oai carries the xml-stylesheet instruction, and no policy that would stop a browser
    from loading /static/oai2.xsl (and the CSS it links) to render it."""
    response = site.get("/oai?verb=ListRecords&metadataPrefix=oai_dc")
    assert response.status_code == 200
    validate(response.data)
    assert b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:5000/static/oai2.xsl"?>' in response.data
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = csp(response)
    assert "default-src" not in policy and "script-src" not in policy and "style-src" not in policy, policy
    # With nosniff, a browser takes a stylesheet only if it is served as what it is.
    for path, types in (
        ("/static/oai2.xsl", ("application/xslt+xml", "text/xsl", "application/xml", "text/xml")),
        ("/static/style.css", ("text/css",)),
    ):
        with site.get(path) as served:
            assert served.status_code == 200
            assert served.mimetype in types, (path, served.mimetype)
