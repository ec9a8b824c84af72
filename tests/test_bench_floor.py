"""bench/floor.py, the floor under the server's CPU, reads exactly the rows a full ListRecords
harvest serves: every record's stored `<record>` element for oai_dc, deleted ones included, in
key order, a page at a time, and gzips each page's bytes. A check of what it reads, not a timing."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import make_config, token_of, validate

from oaiserver import create_app
from oaiserver.store import Store
from oaiserver.synthetic import synthetic_records

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # bench/ is not a package
from floor import floor_walk


def test_the_floor_reads_what_a_full_harvest_serves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oai.sqlite3'}"
    store = Store(url)
    store.write(list(synthetic_records(1_200, "test.example.org")), keep_datestamps=True)
    client = create_app(make_config(url, server__page_size=500), store=store).test_client()
    served, pages = b"", 0
    query = "verb=ListRecords&metadataPrefix=oai_dc"
    while True:
        body = client.get(f"/oai?{query}", headers={"Accept-Encoding": "identity"}).data
        validate(body)
        served += body[body.index(b"<record>") : body.rindex(b"</record>\n") + len(b"</record>\n")]
        pages += 1
        token = token_of(validate(body))
        if token is None or not token.text:
            break
        query = f"verb=ListRecords&resumptionToken={token.text}"
    store.close()

    floor = floor_walk(tmp_path / "oai.sqlite3", 500)

    assert (floor.records, floor.pages) == (1_200, pages) == (1_200, 3)
    assert floor.raw_bytes == len(served)  # the same <record> elements, byte for byte
    assert 0 < floor.gzip_bytes < floor.raw_bytes / 3
