"""How many records each list holds, kept by the database as records are written, so that a
list's first page reads its completeListSize instead of counting the whole list.

`list_counts` holds, per (prefix, spec), the number of `formats` rows of that prefix (spec '':
the whole list) and of (`formats`, `set_members`) pairs of one record (a set's list). Triggers
keep it in the transaction of every write, cascades included: a row is counted when it is
inserted, a pair when the second of its two rows is, and each is uncounted when the first of its
rows is deleted. A list frozen at `end` then holds `n` less the rows stamped after `end`, read
in one statement, so one snapshot (`count_sql`).

Writers never wait for one another on a counter. SQLite has one writer at a time, so one row
per list (`part` 0). PostgreSQL's writers run at once (they share the write clock lock): each
backend adds to its own row (`part` = its pid), so no two transactions ever update the same row
(a shared row would queue every writer of a list behind the one in flight, and two writers of
two sets in opposite orders would deadlock). `fold` adds the backends' rows into `part` 0 now
and then, skipping those a writer holds, so a count reads a few rows, however many backends
have written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

FEW = 10_000  # rows after a list's end taken off its kept count; beyond, the list is counted
FOLD_AT = 64  # rows of one list a count reads before they are folded into one (PostgreSQL)

_SQLITE_TRIGGERS = (
    # A formats row: counted in the whole list of its prefix and in each set its record is in.
    """CREATE TRIGGER IF NOT EXISTS list_counts_formats_insert AFTER INSERT ON formats BEGIN
  INSERT INTO list_counts (prefix, spec, part, n) VALUES (NEW.prefix, '', 0, 1)
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = n + 1;
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT NEW.prefix, m.spec, 0, 1 FROM set_members m WHERE m.record_id = NEW.record_id
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = n + 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS list_counts_formats_delete AFTER DELETE ON formats BEGIN
  UPDATE list_counts SET n = n - 1 WHERE part = 0 AND prefix = OLD.prefix AND spec = '';
  UPDATE list_counts SET n = n - 1 WHERE part = 0 AND prefix = OLD.prefix
    AND spec IN (SELECT m.spec FROM set_members m WHERE m.record_id = OLD.record_id);
END""",
    # A set membership: counted in the set's list of each format its record has.
    """CREATE TRIGGER IF NOT EXISTS list_counts_members_insert AFTER INSERT ON set_members BEGIN
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT f.prefix, NEW.spec, 0, 1 FROM formats f WHERE f.record_id = NEW.record_id
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = n + 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS list_counts_members_delete AFTER DELETE ON set_members BEGIN
  UPDATE list_counts SET n = n - 1 WHERE part = 0 AND spec = OLD.spec
    AND prefix IN (SELECT f.prefix FROM formats f WHERE f.record_id = OLD.record_id);
END""",
)

# PostgreSQL: inserts are counted once a statement, from its rows (a transition table): a bulk
# load writes a few hundred rows a statement, so one upsert a list instead of one a row. Each
# added row finds its pairs by the index on record_id (a LATERAL subquery, kept apart from the
# join by OFFSET 0): a transition table has no statistics, and planned as a join, the pairs were
# found by a scan of the whole other table, a statement's cost growing with the store (a load
# of 100,000 records slowed from 3,273 to 1,936 records/s by its end; 3,277 without triggers). Deletes
# are counted a row at a time BEFORE it goes: AFTER triggers fire at the end of their statement,
# and a cascade from `records` would have deleted both rows of a pair by then.
_PG_FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION list_counts_formats_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT a.prefix, '', pg_backend_pid(), count(*) FROM added a GROUP BY a.prefix
    UNION ALL
    SELECT a.prefix, m.spec, pg_backend_pid(), count(*) FROM added a
    CROSS JOIN LATERAL (SELECT m.spec FROM set_members m WHERE m.record_id = a.record_id OFFSET 0) m
    GROUP BY a.prefix, m.spec
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = list_counts.n + excluded.n;
  RETURN NULL;
END $$""",
    """CREATE OR REPLACE FUNCTION list_counts_members_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT f.prefix, a.spec, pg_backend_pid(), count(*) FROM added a
    CROSS JOIN LATERAL (SELECT f.prefix FROM formats f WHERE f.record_id = a.record_id OFFSET 0) f
    GROUP BY f.prefix, a.spec
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = list_counts.n + excluded.n;
  RETURN NULL;
END $$""",
    """CREATE OR REPLACE FUNCTION list_counts_formats_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT OLD.prefix, s.spec, pg_backend_pid(), -count(*)
    FROM (SELECT '' AS spec UNION ALL SELECT m.spec FROM set_members m WHERE m.record_id = OLD.record_id) s
    GROUP BY s.spec
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = list_counts.n + excluded.n;
  RETURN OLD;
END $$""",
    """CREATE OR REPLACE FUNCTION list_counts_members_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO list_counts (prefix, spec, part, n)
    SELECT f.prefix, OLD.spec, pg_backend_pid(), -count(*) FROM formats f WHERE f.record_id = OLD.record_id
    GROUP BY f.prefix
    ON CONFLICT (prefix, spec, part) DO UPDATE SET n = list_counts.n + excluded.n;
  RETURN OLD;
END $$""",
)

_PG_TRIGGERS = (
    (
        "list_counts_formats_insert",
        "formats",
        "AFTER INSERT",
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT",
        "list_counts_formats_added",
    ),
    ("list_counts_formats_delete", "formats", "BEFORE DELETE", "FOR EACH ROW", "list_counts_formats_gone"),
    (
        "list_counts_members_insert",
        "set_members",
        "AFTER INSERT",
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT",
        "list_counts_members_added",
    ),
    ("list_counts_members_delete", "set_members", "BEFORE DELETE", "FOR EACH ROW", "list_counts_members_gone"),
)


def create_triggers(conn: Connection) -> None:
    """The triggers that keep `list_counts` (the table itself is in `schema.meta`)."""
    if conn.dialect.name == "sqlite":
        for ddl in _SQLITE_TRIGGERS:
            conn.exec_driver_sql(ddl)
        return
    for ddl in _PG_FUNCTIONS:
        conn.exec_driver_sql(ddl)
    for name, table, when, each, function in _PG_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {when} ON {table} {each} EXECUTE FUNCTION {function}()")


def fill(conn: Connection) -> None:
    """Count the lists of the records already stored (after `create_triggers`: on PostgreSQL the
    triggers' lock on the tables keeps writers out until this transaction commits)."""
    conn.exec_driver_sql("DELETE FROM list_counts")
    conn.exec_driver_sql(
        "INSERT INTO list_counts (prefix, spec, part, n) SELECT prefix, '', 0, count(*) FROM formats GROUP BY prefix"
    )
    conn.exec_driver_sql(
        "INSERT INTO list_counts (prefix, spec, part, n) SELECT f.prefix, m.spec, 0, count(*)"
        " FROM set_members m JOIN formats f ON f.record_id = m.record_id GROUP BY f.prefix, m.spec"
    )


def count_sql(prefix: str, spec: str | None, end: int | None) -> tuple[str, list[Any]]:
    """One statement (one snapshot): the list's size up to `end` (inclusive), and how many
    counter rows it read. The rows stamped after `end` are few when `end` is a list's frozen
    moment (written since): they are counted in the index and taken off."""
    total = "SELECT coalesce(sum(n), 0) AS n, count(*) AS parts FROM list_counts WHERE prefix = ? AND spec = ?"
    params: list[Any] = [prefix, spec or ""]
    if end is None:
        return f"SELECT c.n, c.parts FROM ({total}) c", params
    if spec is None:
        later = "SELECT count(*) AS n FROM formats WHERE prefix = ? AND datestamp > ?"
        params += [prefix, end]
    else:
        later = (
            "SELECT count(*) AS n FROM set_members m JOIN formats f ON f.record_id = m.record_id AND f.prefix = ?"
            " WHERE m.spec = ? AND m.datestamp > ?"
        )
        params += [prefix, spec, end]
    return f"SELECT c.n - l.n, c.parts FROM ({total}) c, ({later}) l", params


def after_sql(prefix: str, spec: str | None, end: int) -> tuple[str, list[Any]]:
    """How many rows of the prefix (or members of the set) are stamped after `end`, up to FEW:
    whether taking them off the kept count is cheaper than counting the list."""
    if spec is None:
        rows, params = "SELECT 1 FROM formats WHERE prefix = ?", [prefix]
    else:
        rows, params = "SELECT 1 FROM set_members WHERE spec = ?", [spec]
    return f"SELECT count(*) FROM ({rows} AND datestamp > ? LIMIT ?) t", [*params, end, FEW]


# PostgreSQL: the backends' rows of one list added into its row 0, in one statement. A row a
# writer holds (its transaction still open) is skipped, never waited for: it is folded next time.
FOLD_SQL = """WITH gone AS (
  DELETE FROM list_counts WHERE ctid IN (
    SELECT ctid FROM list_counts WHERE prefix = %s AND spec = %s AND part <> 0 FOR UPDATE SKIP LOCKED)
  RETURNING n)
INSERT INTO list_counts (prefix, spec, part, n) SELECT %s, %s, 0, coalesce(sum(n), 0) FROM gone
ON CONFLICT (prefix, spec, part) DO UPDATE SET n = list_counts.n + excluded.n"""


def fold(engine: sa.Engine, prefix: str, spec: str | None) -> None:
    """Fold one list's backend rows into its row 0 (PostgreSQL; SQLite has only row 0)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(FOLD_SQL, (prefix, spec or "", prefix, spec or ""))
