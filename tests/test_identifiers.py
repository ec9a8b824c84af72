"""Identifiers at the limit: what is listed can be fetched, by GetRecord and by its landing page,
through the server operators run (gunicorn, whose request line holds at most 4,094 bytes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import requests
from conftest import error_codes, identifiers, make_record, validate
from loadkit import Gunicorn

from oaiserver.config import load
from oaiserver.records import MAX_IDENTIFIER_BYTES, identifier_problem
from oaiserver.store import Store

# Every byte of these escapes in a URL (%XX): the longest URLs an identifier can make.
LONGEST = "oai:test.example.org:" + "€" * 334 + "a"
SLASHES = "oai:test.example.org:" + "/" * (MAX_IDENTIFIER_BYTES - 21)


def test_the_limit_is_on_utf8_bytes() -> None:
    assert identifier_problem(LONGEST) is None and identifier_problem(SLASHES) is None
    assert identifier_problem(LONGEST + "a") == "the identifier is longer than 1024 bytes in UTF-8 (1025)"
    assert identifier_problem("a b") == "the identifier is not a URI (xs:anyURI)"


def test_the_longest_identifiers_can_be_fetched_through_gunicorn(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    # Stamped in the past: a list ends before the second it is asked in, and gunicorn may be up within it.
    store = Store(url, clock=lambda: 1_700_000_000)
    try:
        written = store.write([replace(make_record(str(i)), identifier=i) for i in (LONGEST, SLASHES)])
        assert written.added == 2
    finally:
        store.close()
    with Gunicorn(tmp_path, url, workers=1) as server:
        listed = validate(
            requests.get(
                server.base, params={"verb": "ListIdentifiers", "metadataPrefix": "oai_dc"}, timeout=60
            ).content
        )
        assert sorted(identifiers(listed)) == sorted([LONGEST, SLASHES])
        for identifier in (LONGEST, SLASHES):
            query = f"verb=GetRecord&metadataPrefix=oai_dc&identifier={quote(identifier, safe='')}"
            response = requests.get(f"{server.base}?{query}", timeout=60)
            assert response.status_code == 200, response.status_code
            doc = validate(response.content)
            assert error_codes(doc) == [] and identifiers(doc) == [identifier]
            landing = load(server.config).landing_url(identifier)  # what a record's dc:identifier holds
            assert len(landing) > 3000
            page = requests.get(landing, timeout=60)
            assert page.status_code == 200, (page.status_code, len(landing))
