"""Seed documents to records: the plain-text layout parser and the Dublin Core it yields.

The layout, line by line: a date, a title, a funding note, `[…]`, the document's text
(often ending in a signature and a date), `[…]`, a one-line summary, then the labelled
sections `Author(s):`, `Associated Places`, `Document Information`, `Source`,
`Original Archive` and `Rights`, each possibly empty.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from oaiserver import formats, landing
from oaiserver.config import Config
from oaiserver.records import DCValue, Record
from oaiserver.store import Store, WriteResult

log = logging.getLogger(__name__)

ELLIPSES = {"[…]", "[...]"}
SECTIONS = ("Author(s):", "Associated Places", "Document Information", "Source", "Original Archive", "Rights")
DATE_FORMATS = ("%B %d, %Y", "%d %B %Y", "%B %Y", "%Y-%m-%d", "%Y")
IDENTIFIER_SAFE = "-_.!~*'();/?:@&=+$,"


class SeedError(ValueError):
    """A seed document that does not follow the layout; the message says where."""


@dataclass
class Seed:
    """A parsed seed document."""

    date: str  # ISO 8601 (YYYY, YYYY-MM or YYYY-MM-DD)
    title: str
    note: str
    text: str
    summary: str
    sections: dict[str, list[str]] = field(default_factory=dict)

    def signature(self) -> str | None:
        """The signing body: the line before a closing date, as in '…\\nMinistry of X\\n21 April 1962'."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        if len(lines) >= 2 and parse_date(lines[-1]) is not None:
            candidate = lines[-2].strip()
            if len(candidate) <= 120 and not candidate.endswith((".", ":", ";", ",")):
                return candidate
        return None


def parse_date(value: str) -> str | None:
    value = value.strip()
    for fmt in DATE_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if fmt == "%Y":
            return f"{parsed.year:04d}"
        if fmt == "%B %Y":
            return f"{parsed.year:04d}-{parsed.month:02d}"
        return parsed.date().isoformat()
    return None


def parse_seed(content: str) -> Seed:
    lines = [line.rstrip() for line in content.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    date, title = _seed_head(lines)
    marks = [i for i, line in enumerate(lines) if line.strip() in ELLIPSES]
    if len(marks) < 2:
        raise SeedError("expected two '[…]' lines around the document's text")
    first, second = marks[0], marks[1]
    note = " ".join(line.strip() for line in lines[2:first] if line.strip())
    text = "\n".join(lines[first + 1 : second]).strip("\n")
    summary, sections = _seed_tail(lines[second + 1 :])
    return Seed(date, title, note, text, summary, sections)


def _seed_head(lines: list[str]) -> tuple[str, str]:
    """A seed's first two lines: its date and its title."""
    if len(lines) < 2:
        raise SeedError("too short: expected a date line and a title line")
    date = parse_date(lines[0])
    if date is None:
        raise SeedError(f"line 1: {lines[0]!r} is not a date such as 'April 21, 1962'")
    title = lines[1].strip()
    if not title:
        raise SeedError("line 2: the title is empty")
    return date, title


def _seed_tail(rest: list[str]) -> tuple[str, dict[str, list[str]]]:
    """What follows the document's text: a one-line summary, then labelled sections."""
    summary = ""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in rest:
        stripped = line.strip()
        if stripped in SECTIONS:
            current = stripped
            sections.setdefault(current, [])
        elif current is not None:
            if stripped:
                sections[current].append(stripped)
        elif stripped and summary:
            raise SeedError(f"unexpected line before 'Author(s):': {stripped[:60]!r}")
        elif stripped:
            summary = stripped
    if "Rights" not in sections and "Author(s):" not in sections:
        raise SeedError("no labelled sections (Author(s):, …, Rights) after the summary")
    return summary, sections


def local_identifier(cfg: Config, stem: str) -> str:
    return f"oai:{cfg.repository_identifier}:{quote(stem, safe=IDENTIFIER_SAFE)}"


def to_dublin_core(seed: Seed, cfg: Config, identifier: str) -> list[DCValue]:
    s = seed.sections
    dc = [DCValue("title", seed.title)]
    creators = s.get("Author(s):") or []
    if not creators and (signature := seed.signature()):
        creators = [signature]
    dc += [DCValue("creator", c) for c in creators]
    if seed.summary:
        dc.append(DCValue("description", seed.summary))
    if cfg.publisher:
        dc.append(DCValue("publisher", cfg.publisher))
    dc.append(DCValue("date", seed.date))
    dc.append(DCValue("type", "Text"))
    dc.append(DCValue("identifier", cfg.landing_url(identifier)))
    dc += [DCValue("source", v) for v in s.get("Original Archive", [])]
    dc += [DCValue("relation", v) for v in s.get("Source", [])]
    dc.append(DCValue("language", "en"))
    dc += [DCValue("coverage", v) for v in s.get("Associated Places", [])]
    if rights := s.get("Rights"):
        dc.append(DCValue("rights", " ".join(rights)))
    return dc


def set_specs(cfg: Config, dc: Iterable[DCValue], source: str) -> list[str]:
    values: dict[str, list[str]] = {"source": [source]}
    for v in dc:
        values.setdefault(v.element, []).append(v.value)
    return [rule.spec for rule in cfg.sets if rule.matches(values)]


def seed_record(cfg: Config, path: Path) -> Record:
    """Parse one file into a Record; SeedError names what is wrong."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SeedError(f"not UTF-8 text (byte {exc.start})") from None
    seed = parse_seed(content)
    identifier = local_identifier(cfg, path.stem)
    dc = to_dublin_core(seed, cfg, identifier)
    return Record(
        identifier=identifier,
        dc=dc,
        sets=set_specs(cfg, dc, "local"),
        source="local",
        metadata=formats.rendered(dc),
        fulltext=seed.text,
    )


def seed_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".txt")
    return [path]


@dataclass
class IngestReport:
    files: int = 0
    written: WriteResult = field(default_factory=WriteResult)
    failed: dict[str, str] = field(default_factory=dict)
    pruned: int = 0
    relocated: int = 0  # records whose landing URL moved to the configured site (datestamps kept)


class _DryRun(Exception):
    """Raised inside a dry run's transaction so that it rolls back."""


def vanished(cfg: Config, store: Store, path: Path) -> list[str]:
    """Local live records whose seed file is not in `path`: what `--prune` would make tombstones of."""
    present = {local_identifier(cfg, f.stem) for f in seed_files(path)}
    return sorted(store.identifiers(source="local", live_only=True) - present)


def ingest(cfg: Config, store: Store, path: Path, *, prune: bool = False, dry_run: bool = False) -> IngestReport:
    """Ingest a folder or a file. Bad files are reported, the rest still go in.

    `dry_run`: the records are written in one transaction that is rolled back, so the report
    says exactly what would be added, changed or left alone, and nothing (no datestamp) changes.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = seed_files(path)
    report = IngestReport(files=len(files), relocated=landing.follow(cfg, store))

    files_of: dict[str, str] = {}  # identifier -> file, to name a file whose record the store refuses

    def parsed() -> Iterator[Record]:
        for f in files:
            try:
                record = seed_record(cfg, f)
            except (SeedError, OSError) as exc:
                report.failed[str(f)] = str(exc)
                log.error("%s: %s", f, exc)
                continue
            files_of[record.identifier] = str(f)
            yield record

    gone = vanished(cfg, store, path) if prune else []
    if dry_run:
        try:
            with store.writing() as (conn, stamp):
                records = parsed()
                while chunk := list(itertools.islice(records, 500)):
                    report.written += store.write_in(conn, stamp, chunk)
                raise _DryRun
        except _DryRun:
            pass
    else:
        report.written = store.write(parsed())
    for identifier, why in report.written.rejected:
        report.failed[files_of.get(identifier, identifier)] = why
    report.pruned = len(gone) if dry_run else store.delete(gone)
    return report
