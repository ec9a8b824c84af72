"""The record store: datestamps mean change, deletions are kept, stored text is always XML-safe."""

from __future__ import annotations

import gc
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import OAI, Clock, OAIClient, identifiers, make_record, pg_schema, stored

from oaiserver.records import MAX_IDENTIFIER_BYTES, DCValue, Record, parse_datestamp
from oaiserver.store import (
    ListQuery,
    Store,
    collector_paused,
    content_hash,
    records_held,
    shadowed_counts,
    write_harvested_in,
)

ID = "oai:test.example.org:1"


def test_unchanged_write_keeps_datestamp(store: Store, clock: Clock) -> None:
    assert store.write([make_record("1")]).added == 1
    stamp = stored(store, ID).datestamp
    clock.tick(100)
    result = store.write([make_record("1")])
    assert (result.added, result.changed, result.unchanged) == (0, 0, 1)
    assert stored(store, ID).datestamp == stamp


def test_the_content_hash_is_the_one_stores_already_hold() -> None:
    """Stored hashes decide whether a write changes a datestamp: the digest must stay what
    earlier versions stored (SHA-256 over the deleted flag, each set, each format's fragment),
    or reloading the same data would restamp every record."""
    record = make_record("1", "Zürich & <more>", sets=("b:c", "a", "b:c"))
    record.metadata["other"] = "<x>\u5317\u4eac</x>"
    expected = hashlib.sha256()
    expected.update(b"L")
    for spec in ("a", "b:c"):
        expected.update(b"\x00S" + spec.encode())
    for prefix in ("oai_dc", "other"):
        expected.update(b"\x00M" + prefix.encode() + b"\x00")
        expected.update(record.metadata[prefix].encode())
    assert content_hash(record) == expected.hexdigest()
    encoded = {p: x.encode() for p, x in record.metadata.items()}
    assert content_hash(record, encoded) == expected.hexdigest()
    record.deleted = True
    gone = hashlib.sha256(b"D\x00Sa\x00Sb:c\x00Moai_dc\x00\x00Mother\x00").hexdigest()
    assert content_hash(record) == gone


@pytest.mark.parametrize(
    "change",
    [
        lambda r: setattr(r, "metadata", {"oai_dc": r.metadata["oai_dc"].replace("A title", "B title")}),
        lambda r: setattr(r, "sets", ["a"]),
        lambda r: setattr(r, "deleted", True),
    ],
    ids=["metadata", "sets", "deleted flag"],
)
def test_changed_exposed_content_gets_new_datestamp(
    store: Store, clock: Clock, change: Callable[[Record], None]
) -> None:
    store.write([make_record("1")])
    before = stored(store, ID).datestamp
    assert before is not None
    clock.tick(100)
    record = make_record("1")
    change(record)
    assert store.write([record]).changed == 1
    assert stored(store, ID).datestamp == before + 100


def test_unexposed_change_keeps_datestamp(store: Store, clock: Clock) -> None:
    store.write([make_record("1")])
    before = stored(store, ID).datestamp
    clock.tick(100)
    record = make_record("1")
    record.fulltext = "now with its full text"
    assert store.write([record]).unchanged == 1
    assert stored(store, ID).datestamp == before
    assert stored(store, ID).fulltext == "now with its full text"


def test_delete_makes_a_tombstone_kept_forever(store: Store, clock: Clock) -> None:
    store.write([make_record("1", sets=("a",))])
    clock.tick(50)
    assert store.delete([ID]) == 1
    tomb = stored(store, ID)
    assert tomb.deleted and tomb.datestamp == clock.now and tomb.sets == ["a"]
    assert store.formats_of(ID) == ["oai_dc"]
    clock.tick(50)
    assert store.delete([ID]) == 0, "deleting a tombstone again changes nothing"
    assert stored(store, ID).datestamp == clock.now - 50
    assert store.counts() == {"live": 0, "deleted": 1}
    query = ListQuery("oai_dc", set_spec="a")
    assert [h.identifier for h in store.page_headers(query, None, 10, with_metadata=True)] == [ID]


def test_a_deleted_record_can_come_back(store: Store, clock: Clock) -> None:
    store.write([make_record("1")])
    store.delete([ID])
    clock.tick()
    assert store.write([make_record("1")]).changed == 1
    assert not stored(store, ID).deleted


def test_forbidden_characters_are_removed_and_logged(
    store: Store, clock: Clock, oai: OAIClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Record(
        identifier="oai:test.example.org:ctl",
        dc=[DCValue("title", "bell\x07 and nul\x00 and \ufffe")],
        metadata={
            "oai_dc": '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>bell\x07</dc:title></oai_dc:dc>'
        },
        fulltext="tab\tand\x0bvertical tab",
    )
    with caplog.at_level(logging.WARNING, logger="oaiserver.records"):
        store.write([bad])
    assert "removed" in caplog.text
    kept = stored(store, "oai:test.example.org:ctl")
    assert kept.dc[0].value == "bell and nul and "
    assert kept.fulltext == "tab\tandvertical tab"
    clock.tick()
    assert identifiers(oai(verb="ListRecords", metadataPrefix="oai_dc")) == ["oai:test.example.org:ctl"]


def test_a_forbidden_character_in_a_fragment_alone_is_removed_and_the_record_stays_put(
    store: Store, clock: Clock, oai: OAIClient
) -> None:
    """Only the metadata fragment is dirty (its Dublin Core is clean): the fragment is cleaned
    before it is served, and writing the same record again changes nothing."""

    def dirty() -> Record:
        record = make_record("ctl", "bell")
        record.metadata = {"oai_dc": record.metadata["oai_dc"].replace(">bell<", ">bell\x07\uffff<")}
        return record

    store.write([dirty()])
    stamp = stored(store, "oai:test.example.org:ctl").datestamp
    clock.tick(100)
    assert store.write([dirty()]).unchanged == 1
    assert stored(store, "oai:test.example.org:ctl").datestamp == stamp
    served = oai(verb="GetRecord", identifier="oai:test.example.org:ctl", metadataPrefix="oai_dc")
    assert served.findtext(".//{http://purl.org/dc/elements/1.1/}title") == "bell"


def test_repeated_and_nested_sets_are_each_listed_once(store: Store, clock: Clock, oai: OAIClient) -> None:
    store.write([make_record("1", sets=("b:c", "a", "b:c")), make_record("2", sets=("a", "a"))])
    clock.tick()
    for spec, expected in (("a", ["1", "2"]), ("b", ["1"]), ("b:c", ["1"])):
        listed = identifiers(oai(verb="ListIdentifiers", metadataPrefix="oai_dc", set=spec))
        assert listed == [f"oai:test.example.org:{i}" for i in expected], spec
    header = oai(verb="GetRecord", identifier="oai:test.example.org:1", metadataPrefix="oai_dc")
    assert [s.text for s in header.iter(f"{OAI}setSpec")] == ["b:c", "a"]


def test_a_batch_larger_than_one_insert_statement_writes_every_row(store: Store, clock: Clock) -> None:
    """Formats and set memberships go to the database a few hundred rows to a statement: a batch
    that spans statements loses and doubles nothing."""
    batch = []
    for i in range(263):
        record = make_record(f"{i:03d}", sets=("x:y",))
        record.metadata["other"] = f"<o>{i}</o>"
        batch.append(record)
    assert store.write(batch, batch=263).added == 263
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), count(DISTINCT record_id) FROM formats").one() == (526, 263)
        members = conn.exec_driver_sql("SELECT spec, count(*) FROM set_members GROUP BY spec ORDER BY spec").all()
    assert [tuple(m) for m in members] == [("x", 263), ("x:y", 263)]
    assert store.count(ListQuery("other", set_spec="x")) == 263


def test_keyset_pages_follow_datestamp_then_identifier(store: Store, clock: Clock) -> None:
    store.write([make_record(x) for x in ("b", "a", "c")])
    clock.tick()
    store.write([make_record("0")])
    query = ListQuery("oai_dc")
    first = store.page_headers(query, None, 2, with_metadata=False)
    assert [h.identifier[-1] for h in first] == ["a", "b"]
    rest = store.page_headers(query, (first[-1].datestamp, first[-1].identifier), 10, with_metadata=False)
    assert [h.identifier[-1] for h in rest] == ["c", "0"]


@pytest.mark.parametrize("set_spec", [None, "a"])
def test_a_list_reads_as_served_elements_or_as_headers_one_type_each(store: Store, set_spec: str | None) -> None:
    """The same records, in the same order: `*_rendered` as the stored elements a list serves,
    `*_headers` as Header fields (people's views); a record's row alike, each of one type."""
    store.write([make_record(x, sets=("a",)) for x in ("b", "a")])
    query = ListQuery("oai_dc", set_spec=set_spec)
    served = store.page_rendered(query, None, 10, with_metadata=True)
    bare = store.page_rendered(query, None, 10, with_metadata=False)
    headers = store.page_headers(query, None, 10, with_metadata=True)
    assert [type(r).__name__ for r in served + bare] == ["Rendered"] * 4
    assert [type(h).__name__ for h in headers] == ["Header"] * 2
    assert [(r.datestamp, r.identifier) for r in served] == [(h.datestamp, h.identifier) for h in headers]
    assert [r.xml for r in served] == [h.rendered for h in headers]
    assert [r.xml for r in bare] == [h.xml.encode() + b"\n" for h in headers]
    assert headers[0].metadata and "<dc:title>" in headers[0].metadata and headers[0].sets == ("a",)
    b = headers[1].identifier
    assert store.row_rendered(query, b, with_metadata=True) == served[1:]
    assert store.row_headers(query, b, with_metadata=False)[0].xml == headers[1].xml
    assert store.row_headers(ListQuery("oai_dc", set_spec="z"), b, with_metadata=True) == []


def test_count_matches_the_selection(store: Store, clock: Clock) -> None:
    store.write([make_record(str(i), sets=("a:b",) if i % 2 else ()) for i in range(9)])
    assert store.count(ListQuery("oai_dc")) == 9
    assert store.count(ListQuery("oai_dc", set_spec="a")) == 4
    assert store.count(ListQuery("oai_dc", set_spec="a:b")) == 4
    assert store.count(ListQuery("marc21")) == 0
    assert store.count(ListQuery("oai_dc", start=clock.now + 1)) == 0


def test_settings_are_kept_once(store: Store) -> None:
    assert store.ensure_setting("token_secret", "first") == "first"
    assert store.ensure_setting("token_secret", "second") == "first"
    assert store.setting("token_secret") == "first"


def test_freeze_waits_for_writers(store_url: str) -> None:
    """A list frozen while a write is in flight returns only after that write commits: it
    then sees what was written."""
    import time

    store = Store(store_url)
    try:
        store.freeze()  # create nothing, warm the pool
        entered = threading.Event()

        def writer() -> None:
            with store.writing() as (conn, stamp):
                entered.set()
                time.sleep(0.5)
                store.write_in(conn, stamp, [make_record("slow")])

        thread = threading.Thread(target=writer)
        thread.start()
        assert entered.wait(60)
        store.freeze()
        assert store.get("oai:test.example.org:slow") is not None
        thread.join(60)
    finally:
        store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_list_on_one_store_does_not_wait_for_a_write_to_another_in_the_same_database(store: Store) -> None:
    """Each store's write clock is its own: a store in another schema of the database freezes
    a list while this one's write is open (a shared clock made it wait, and queued this store's
    next writers behind it)."""
    with pg_schema() as other_url:
        other = Store(other_url)
        try:
            froze = threading.Event()

            def list_on_the_other() -> None:
                other.freeze()
                froze.set()

            thread = threading.Thread(target=list_on_the_other)
            with store.writing():
                thread.start()
                assert froze.wait(60), "the other store's list waited for this store's write"
            thread.join(60)
        finally:
            other.close()


@pytest.mark.parametrize("identifier", ["a b", "0:x", "x#y#z", "%zz", ""])
def test_identifiers_that_are_not_uris_are_refused(store: Store, identifier: str) -> None:
    """GetRecord could never ask for them, so they are not listed either."""
    record = make_record("ok")
    bad = make_record("x")
    bad.identifier = identifier
    result = store.write([record, bad])
    assert result.added == 1 and [i for i, _ in result.rejected] == [identifier]
    assert "not a URI" in result.rejected[0][1]
    assert store.identifiers() == {"oai:test.example.org:ok"}


# 1,024 bytes in UTF-8, each of which a URL escapes: the longest identifier, and the longest URL.
LONGEST = "oai:test.example.org:" + "€" * 334 + "a"


@pytest.mark.parametrize("length", [1025, 1100, 4097, 5000])
def test_an_identifier_over_the_limit_is_refused_with_a_reason(store: Store, length: int) -> None:
    """The same limit on SQLite (which has none) and PostgreSQL (whose VARCHAR(1024) used to
    fail the whole write): anything stored can be fetched by GetRecord and its landing page."""
    ok, long = make_record("ok"), make_record("x")
    long.identifier = "oai:test.example.org:" + "x" * (length - 21)
    result = store.write([ok, long])
    assert result.added == 1 and [i for i, _ in result.rejected] == [long.identifier]
    assert result.rejected[0][1] == f"the identifier is longer than 1024 bytes in UTF-8 ({length})"
    assert store.identifiers() == {ok.identifier}


def test_the_longest_identifier_is_stored(store: Store) -> None:
    assert len(LONGEST.encode()) == MAX_IDENTIFIER_BYTES == 1024
    assert store.write([replace(make_record("x"), identifier=LONGEST)]).added == 1
    fetched = store.get(LONGEST)
    assert fetched is not None and fetched.identifier == LONGEST


def test_an_unchanged_record_keeps_its_about(store: Store, clock: Clock) -> None:
    """What is served may not change under an old datestamp: `about` stays with the content."""
    record = make_record("1")
    record.about = "<p xmlns='urn:a'>first</p>"
    store.write([record])
    clock.tick(100)
    record = make_record("1")
    record.about = "<p xmlns='urn:a'>second</p>"
    assert store.write([record]).unchanged == 1
    assert stored(store, ID).about == "<p xmlns='urn:a'>first</p>"


def test_concurrent_inserts_of_one_new_identifier_both_land(store: Store, clock: Clock) -> None:
    """Two writers add the same new identifier at once (side by side on PostgreSQL): the one
    that commits second finds the row taken and updates it, instead of failing the batch."""
    import threading

    first_in = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with store.writing() as (conn, stamp):
                store.write_in(conn, stamp, [make_record("new", "First")])
                first_in.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            first_in.set()

    writer = threading.Thread(target=first)
    writer.start()
    assert first_in.wait(10)
    results = []

    def second() -> None:
        results.append(store.write([make_record("new", "Second")]))

    other = threading.Thread(target=second)
    other.start()
    other.join(0.5)  # it waits for the first transaction (row lock, or SQLite's write lock)
    release.set()
    writer.join(10)
    other.join(10)
    assert not errors and len(results) == 1
    assert (results[0].added, results[0].changed) == (0, 1)
    record = store.get("oai:test.example.org:new")
    assert record is not None and record.dc_values("title") == ["Second"]


@pytest.mark.parametrize("set_spec", [None, "a"])
@pytest.mark.parametrize("window", [(None, None), (100, None), (None, 2**40), (100, 2**40)])
@pytest.mark.parametrize("after", [None, (5, "oai:x")])
def test_a_list_page_is_an_index_range_scan_in_sqlite(
    tmp_path: Any, set_spec: str | None, window: tuple[int | None, int | None], after: tuple[int, str] | None
) -> None:
    """No page sorts the rest of its list: SQLite reads the keyed index in order (a plan that
    drove from the formats index instead once made every page cost the whole list)."""
    store = Store(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    try:
        store.write([make_record(str(i), sets=("a",)) for i in range(50)])
        query = ListQuery("oai_dc", window[0], window[1], set_spec)
        sql, params = store._list_sql(query, "f.record", after)
        key = "r" if set_spec is None else "m"
        sql += f" ORDER BY {key}.datestamp, {key}.identifier LIMIT ?"
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            steps = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (*params, 11))]
        assert steps[0].startswith(("SEARCH m ", "SEARCH r ", "SCAN r ")), steps  # the keyed table drives
        assert all("INDEX" in step or "PRIMARY KEY" in step for step in steps), steps
        assert not any("TEMP B-TREE" in step for step in steps), steps
    finally:
        store.close()


@pytest.mark.parametrize("moment", ["before the batch reads the row", "between the batch's read and its update"])
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # SQLite serializes writers
def test_a_harvest_does_not_overwrite_a_record_another_source_took_meanwhile(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """While a harvest batch's transaction is open, a local write takes the identifier over
    (PostgreSQL runs writers side by side; SQLite's BEGIN IMMEDIATE rules this out). The
    harvest's update must not land: its record is kept beside the local one, not served."""
    from oaiserver import rows  # where a write's records are prepared, and hashed

    harvested = make_record("x", "From the partner")
    harvested.source = "partner"
    store.write([harvested])
    clock.tick(10)
    taken = threading.Event()
    landed = threading.Event()

    def local_write() -> None:
        store.write([make_record("x", "Local now")])
        landed.set()

    def interleave() -> None:
        taken.set()
        thread = threading.Thread(target=local_write)
        thread.start()
        thread.join(300)  # a deadline against a hang, not a speed: a busy machine is slow
        assert landed.is_set(), "the local write did not land while the harvest's batch was open"

    if moment == "before the batch reads the row":
        real_hash = rows.content_hash

        def hash_then_interleave(record: Record, encoded: dict[str, bytes] | None = None) -> str:
            if record.source == "partner" and not taken.is_set():
                interleave()
            return real_hash(record, encoded)

        monkeypatch.setattr(rows, "content_hash", hash_then_interleave)
    else:
        real_stored = store._stored

        def read_then_interleave(cur: Any, idents: list[str]) -> Any:
            existing = real_stored(cur, idents)  # the batch has read the row: source "partner"
            if not taken.is_set() and threading.current_thread() is threading.main_thread():
                assert existing["oai:test.example.org:x"].source == "partner"
                interleave()
            return existing

        monkeypatch.setattr(store, "_stored", read_then_interleave)
    again = make_record("x", "From the partner, changed")
    again.source = "partner"
    with store.writing() as (conn, stamp):
        result = store.write_in(conn, stamp, [again], guard_source=True)
    assert taken.is_set()
    # The partner's copy the local write set aside is the one this write changes: kept, not served.
    assert result.shadowed == [("oai:test.example.org:x", "local")] and result.changed == 1
    assert shadowed_counts(store) == {"partner": 1}
    record = store.get("oai:test.example.org:x")
    assert record is not None and record.source == "local" and record.dc_values("title") == ["Local now"]


def test_a_fragment_is_kept_once_and_read_back_exactly(store: Store) -> None:
    """A format's metadata is stored only inside the served `<record>`, and read back out of it
    byte for byte, whatever the fragment and the `<about>` after it hold."""
    fragment = '<x:r xmlns:x="urn:x"><metadata>inner &amp; <x:metadata/></metadata></x:r>'
    about = '<p xmlns="urn:p"><metadata>about it</metadata></p>'
    record = make_record("1", "Zürich & <Bern>")
    record.metadata["x"] = fragment
    record.about = about
    store.write([record, make_record("2")])
    got = store.get("oai:test.example.org:1")
    assert got is not None and got.metadata == record.metadata and got.about == about
    header = store.header("oai:test.example.org:1", "x")
    assert header is not None and header.metadata == fragment
    listed = store.page_headers(ListQuery("x"), None, 10, with_metadata=True)
    assert [h.metadata for h in listed] == [fragment]
    with store.engine.connect() as conn:  # no column but `record` holds it
        columns = {c["name"] for c in sa.inspect(conn).get_columns("formats")}
    assert columns == {"record_id", "prefix", "record", "datestamp"}
    store.delete(["oai:test.example.org:1"])
    header = store.header("oai:test.example.org:1", "x")
    assert header is not None and header.deleted and header.metadata is None


def test_a_datestamp_before_the_year_1000_is_served_with_four_digits(store: Store, oai: OAIClient) -> None:
    """A record loaded with its own datestamp (from a dump, say) in year 999: the header and
    Identify's earliestDatestamp keep the four-digit year the schema requires."""
    record = make_record("old")
    record.datestamp = parse_datestamp("0999-05-06T07:08:09Z")[0]
    store.write([record], keep_datestamps=True)
    got = oai(verb="GetRecord", identifier="oai:test.example.org:old", metadataPrefix="oai_dc")  # validated
    assert got.findtext(f"{OAI}GetRecord/{OAI}record/{OAI}header/{OAI}datestamp") == "0999-05-06T07:08:09Z"
    assert oai(verb="Identify").findtext(f"{OAI}Identify/{OAI}earliestDatestamp") == "0999-05-06T07:08:09Z"


def test_a_batch_size_below_one_still_writes_every_record(store: Store) -> None:
    assert store.write([make_record("1"), make_record("2")], batch=0).added == 2
    assert store.counts()["live"] == 2


def test_a_write_holds_the_cyclic_collector_off_and_then_restores_it(store: Store) -> None:
    """Collections during a write walk every object alive (the caller's batch included):
    none runs while a batch is written, and the collector is on again afterwards."""
    batch = [make_record(str(i), sets=("a:b",)) for i in range(2000)]  # allocations enough for dozens
    assert gc.isenabled()
    seen: list[bool] = []
    with store.writing() as (conn, stamp):
        gc.collect()  # the count towards the next collection starts at zero
        before = sum(s["collections"] for s in gc.get_stats())
        assert store.write_in(conn, stamp, batch).added == 2000
        collections = sum(s["collections"] for s in gc.get_stats()) - before
        seen.append(gc.isenabled())
    assert collections <= 1  # the young objects' one, as the collector comes back (23 without the pause)
    assert seen == [True] and gc.isenabled()


def test_the_collector_pause_is_counted_across_threads_and_leaves_an_off_collector_off() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    states: dict[str, bool] = {}

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_in.wait(5)
        states["after first"] = gc.isenabled()  # the second writer is still writing
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with collector_paused():
            second_in.set()
            first_out.wait(5)
            states["second, first gone"] = gc.isenabled()
        states["after both"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert states == {"after first": False, "second, first gone": False, "after both": True}
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: the pause does not turn it on
    finally:
        gc.enable()


def test_values_bound_as_they_are_keep_a_process_s_own_sqlite_adapter(tmp_path: Any) -> None:
    """The store's as-is adapters (None, bool, bytes) change nothing that is stored, and never
    replace an adapter the process registered itself."""
    key = (bytes, sqlite3.PrepareProtocol)
    own = sqlite3.adapters.pop(key, None)

    def mine(value: bytes) -> bytes:
        return value

    sqlite3.register_adapter(bytes, mine)
    try:
        s = Store(f"sqlite:///{tmp_path / 'adapters.sqlite3'}")
        assert sqlite3.adapters[key] is mine
        s.write([make_record("1", sets=("a",))])
        s.delete([ID])
        with s.engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT deleted, typeof(deleted), fulltext, typeof(fulltext) FROM records").one()
            kinds = conn.exec_driver_sql("SELECT DISTINCT typeof(record) FROM formats").scalars().all()
        assert tuple(row) == (1, "integer", None, "null")
        assert kinds == ["blob"]
        s.close()
    finally:
        sqlite3.adapters.pop(key, None)
        if own is not None:
            sqlite3.adapters[key] = own


def test_a_connection_in_use_when_the_store_closes_is_closed_when_given_back(store: Store) -> None:
    """A server that stops lets its last requests finish after the store is closed: their
    connections are closed as they are given back, not left to the garbage collector (which
    closes a PostgreSQL one at some later moment, with a ResourceWarning: under `-W error` a
    failure of whatever test runs then). The store can still be used afterwards."""
    with store.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        driver = conn.connection.dbapi_connection
        store.close()
        store.close()  # twice is once
        assert conn.exec_driver_sql("SELECT 2").scalar_one() == 2  # the request in flight finishes
    assert driver is not None
    with pytest.raises(store.engine.dialect.loaded_dbapi.Error, match="closed"):
        driver.cursor().execute("SELECT 3")
    assert store.get("oai:test.example.org:none") is None


def test_a_batch_of_shadowed_and_taken_records_larger_than_one_in_list_is_kept_whole(
    store: Store, clock: Clock
) -> None:
    """A batch's shadowed copies are read and written a statement per table, by IN lists of 500
    identifiers: a batch of 600 crosses into a second list, and every record of it is kept."""
    n = 600

    def batch(source: str, title: str) -> list[Record]:
        return [replace(make_record(f"r{i:04d}", f"{title} {i}"), source=source) for i in range(n)]

    def harvested(records: list[Record]) -> Any:
        with store.writing() as (conn, stamp):
            return write_harvested_in(store, conn, stamp, records, priority=("p", "q"))

    harvested(batch("q", "q's"))
    clock.tick()
    taken = harvested(batch("p", "p's"))  # p comes first: it takes every identifier over, q's copies kept
    assert (taken.added, taken.shadowed) == (n, [])
    assert shadowed_counts(store) == {"q": n}
    assert records_held(store, ["p", "q"]) == {"p": (n, 0)}
    clock.tick()
    changed = harvested(batch("q", "q's new"))  # every copy found (taken above) and replaced
    assert (changed.added, changed.changed, len(changed.shadowed)) == (0, n, n)
    clock.tick()
    again = harvested(batch("q", "q's new"))  # every copy replaced above: nothing changes
    assert (again.added, again.changed, again.unchanged, len(again.shadowed)) == (0, 0, n, n)
    assert shadowed_counts(store) == {"q": n}
