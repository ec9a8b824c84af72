"""A deterministic synthetic data set, for tests, demos and benchmarks.

Records look like catalogue records: a title (some with `& < "` and non-ASCII text), two
creators, three subjects, a description of about 500 characters, a date, type,
identifier, rights and language; datestamps spread over 20 years; 8 sets; 2% deleted.

Marked (`marked=True`, what `oaiserver synthetic` loads for demonstrations), they cannot be
taken for real records: identifiers `oai:<id>:synthetic-…`, titles starting "[synthetic]",
every set under `synthetic`, and source `synthetic` (seeds are `local`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from oaiserver import formats
from oaiserver.records import DCValue, Record

SYNTHETIC_SET = "synthetic"
TITLE_MARK = "[synthetic] "
SETS = ("history", "politics", "economy", "science", "culture", "law", "military", "diplomacy")
START = 946_684_800  # 2000-01-01T00:00:00Z
SPAN = 20 * 365 * 86400
_WORDS = (
    "archive",
    "border",
    "treaty",
    "ministry",
    "cable",
    "embassy",
    "report",
    "memorandum",
    "conference",
    "delegation",
    "trade",
    "alliance",
    "council",
    "summit",
    "envoy",
    "minister",
    "telegram",
    "negotiation",
    "accord",
    "frontier",
    "Zürich",
    "Kraków",
    "São",
    "Paulo",
    "Москва",
    "北京",
    "Ελλάδα",
)
_TRICKY = ("Trade & Tariffs <draft>", 'The "Long" Telegram', "Émigré letters, Zürich", "北京 talks: 会谈")


def synthetic_records(
    n: int,
    repository_identifier: str = "synthetic.example.org",
    *,
    seed: int = 1,
    base_url: str = "http://127.0.0.1:5000",
    marked: bool = False,
) -> Iterator[Record]:
    """`n` records with datestamps already assigned (load them with keep_datestamps=True).

    `base_url` is the site's root: each record's dc:identifier is its landing page there.
    """
    rng = random.Random(seed)
    stamps = sorted(START + rng.randrange(SPAN) for _ in range(n))
    local, mark, under = ("synthetic", TITLE_MARK, f"{SYNTHETIC_SET}:") if marked else ("rec", "", "")
    for i in range(n):
        identifier = f"oai:{repository_identifier}:{local}-{i:07d}"
        words = [rng.choice(_WORDS) for _ in range(6)]
        title = mark + (_TRICKY[i % len(_TRICKY)] + f" {i}" if i % 50 == 0 else " ".join(words).capitalize())
        description = " ".join(rng.choice(_WORDS) for _ in range(70))[:500]
        dc = [
            DCValue("title", title),
            DCValue("creator", f"Author {rng.randrange(1000)}, A."),
            DCValue("creator", f"Writer {rng.randrange(1000)}, B."),
            *(DCValue("subject", rng.choice(_WORDS)) for _ in range(3)),
            DCValue("description", description),
            DCValue("date", f"{1945 + rng.randrange(50)}-{1 + rng.randrange(12):02d}-{1 + rng.randrange(28):02d}"),
            DCValue("type", "Text"),
            DCValue("identifier", f"{base_url}/records/{identifier}"),
            DCValue("language", "en"),
            DCValue("rights", "Free to reuse for research and education."),
        ]
        sets = [under + SETS[i % len(SETS)]]
        if i % 3 == 0:
            sets.append(under + SETS[(i // 3) % len(SETS)] + ":sub")
        deleted = rng.random() < 0.02
        yield Record(
            identifier=identifier,
            dc=dc,
            sets=sets,
            deleted=deleted,
            source=SYNTHETIC_SET if marked else "local",  # so `ingest --prune` leaves them alone
            datestamp=stamps[i],
            metadata=formats.rendered(dc, deleted=deleted),
        )


def synthetic_sets(marked: bool = False) -> list[dict[str, str]]:
    """Set definitions (config.yaml shape) covering every spec the records carry (and, marked,
    the `synthetic` set above them all)."""
    under, mark = (f"{SYNTHETIC_SET}:", TITLE_MARK) if marked else ("", "")
    specs: list[dict[str, str]] = []
    if marked:
        specs.append({"spec": SYNTHETIC_SET, "name": f"{mark}Synthetic records, for demonstrations"})
    for name in SETS:
        specs.append({"spec": f"{under}{name}", "name": f"{mark}{name.capitalize()}"})
        specs.append({"spec": f"{under}{name}:sub", "name": f"{mark}{name.capitalize()}, selected"})
    return specs
