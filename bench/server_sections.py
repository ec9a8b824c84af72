"""The sections that measure the servers: the load, full harvests, page latency, GetRecord, crowds
of concurrent harvesters, memory."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import requests
from floor import floor_walk
from harness import log, median, percentile
from harvesters import pg_target
from load_reference import executemany_reference
from loading import REPO_ID, identifier, load, load_url
from marcxml import PREFIX, write_second_format
from oai_client import Crowd, Walk, crowd, fetch, first_page, full_harvest, warm_up
from search_bench import RUN_QUERIES, measure, timed
from sections import (
    LATENCY_SET,
    T_CPU,
    T_FIRST_PAGE,
    T_FLOOR,
    T_LOAD,
    T_LOAD_VS_EXECUTEMANY,
    T_RSS_MB,
    T_SECOND_FORMAT,
    T_VS_PEER_32,
    T_VS_PEER_CPU,
    Sections,
)
from servers import Server, pg_backend_cpu, start_ours

from oaiserver.store import Store
from oaiserver.store.search import COUNT_UP_TO
from oaiserver.synthetic import synthetic_records

PEER_NAMES = {"peer": "pyoai", "oairepo": "oai-repo"}


class ServerSections(Sections):
    """The data set and the servers under test, ours against the peer."""

    def section_load(self, db: Path) -> None:
        a = self.args
        log(f"loading {a.records:,} synthetic records into SQLite (Store.write, batch={a.load_batch})")
        r = load(db, a.records, a.load_batch)
        log("the same rows by a plain executemany into bare tables (the reference)")
        ref = executemany_reference(db, db.with_name("executemany.sqlite3"), a.load_batch)
        ratio = r["records_per_s"] / ref["records_per_s"]
        self.results["load"] = {**r, "executemany": ref, "vs_executemany": round(ratio, 2)}
        self.check(
            "load",
            "bulk load into SQLite (Store.write)",
            f"{r['records_per_s']:,.0f} records/s",
            f">= {T_LOAD:,} records/s",
            r["records_per_s"] >= T_LOAD,
            f"{r['records']:,} records in {r['write_seconds']} s; generating them took {r['generate_seconds']} s more",
        )
        self.check(
            "load",
            "bulk load / plain executemany of the same rows into bare tables",
            f"{ratio:.2f}x",
            f">= {T_LOAD_VS_EXECUTEMANY}x",
            ratio >= T_LOAD_VS_EXECUTEMANY,
            f"{r['records_per_s']:,.0f} against {ref['records_per_s']:,.0f} records/s; CPU a record"
            f" {r['write_cpu_us_per_record']} against {ref['cpu_us_per_record']} us",
        )

    def section_other_page_size(self, ours: Server, workdir: Path, db: Path) -> None:
        """The same full harvest from a second server configured with another page size,
        alternating with the first: how much of the CPU per record is the per-request cost
        (gunicorn's HTTP handling alone is about 0.5 ms a request)."""
        a = self.args
        size = a.other_page_size
        log(f"full ListRecords harvest with {size} records per page (a second server)")
        other_dir = workdir / f"pages-{size}"
        other_dir.mkdir(exist_ok=True)
        other = start_ours(other_dir, db, a.workers, size)
        try:
            warm_up(other, pages=5)
            main_walks, other_walks = [], []
            for _ in range(a.repeat):
                main_walks.append(full_harvest(ours))
                other_walks.append(full_harvest(other))
        finally:
            other.stop()
        cpu = {
            name: median([w.server_cpu * 1e6 / w.records for w in walks])
            for name, walks in (("main", main_walks), ("other", other_walks))
        }
        rate = median([w.records / w.seconds for w in other_walks])
        self.results["other_page_size"] = {
            "page_size": size,
            "records_per_s": round(rate, 1),
            "server_cpu_ms_per_1k": round(cpu["other"], 2),
            "same_run_main_cpu_ms_per_1k": round(cpu["main"], 2),
            "page_ms_p50": round(median([median(w.latencies) for w in other_walks]) * 1000, 2),
            "runs": [w.summary() for w in other_walks],
        }
        self.check(
            "full harvest",
            f"ours, {size} records per page: server CPU per 1,000 (gzip)",
            f"{cpu['other']:.1f} ms",
            note=f"{rate:,.0f} records/s, {self.results['other_page_size']['page_ms_p50']:.1f} ms a page; "
            f"alternating with page size {a.page_size} ({cpu['main']:.1f} ms), medians of {a.repeat}",
        )

    def section_full_harvest(self, ours: Server, peer: Server | None, oairepo: Server | None = None) -> dict[str, Walk]:
        a = self.args
        runs: dict[str, list[Walk]] = {"ours": [], "ours_identity": [], "peer": [], "oairepo": []}
        for rep in range(a.repeat):
            log(f"full ListRecords harvest, repetition {rep + 1} of {a.repeat}")
            runs["ours"].append(full_harvest(ours))
            for name, server in (("peer", peer), ("oairepo", oairepo)):
                if server is not None:
                    runs[name].append(full_harvest(server))
            if rep == 0:  # information only: what gzip costs; one run is enough
                runs["ours_identity"].append(full_harvest(ours, gzip=False))
            for name, walks in runs.items():
                if walks:
                    w = walks[-1]
                    log(f"  {name}: {w.records:,} records, {w.records / w.seconds:,.0f} records/s")
        out: dict[str, Any] = {}
        for name, walks in runs.items():
            if not walks:
                continue
            out[name] = {
                "records_per_s": round(median([w.records / w.seconds for w in walks]), 1),
                "server_cpu_ms_per_1k": round(median([w.server_cpu * 1e6 / w.records for w in walks]), 2),
                "client_cpu_ms_per_1k": round(median([w.client_cpu * 1e6 / w.records for w in walks]), 2),
                "others_cpu_pct": median([w.summary()["others_cpu_pct"] for w in walks]),
                "runs": [w.summary() for w in walks],
            }
        self.results["full_harvest"] = out
        o = out["ours"]
        expected = a.records
        complete = all(w.records == expected for w in runs["ours"] + runs["ours_identity"] + runs["peer"])
        self.check(
            "full harvest",
            "ours: records/s (1 client, gzip)",
            f"{o['records_per_s']:,.0f}",
            note=f"median of {a.repeat}; every run saw {expected:,} records: {'yes' if complete else 'NO'}; "
            f"others used {o['others_cpu_pct']:.0f} % of the CPUs meanwhile",
        )
        self.check(
            "full harvest",
            "ours: server CPU per 1,000 records (gzip)",
            f"{o['server_cpu_ms_per_1k']:.1f} ms",
            f"<= {T_CPU:g} ms",
            o["server_cpu_ms_per_1k"] <= T_CPU,
            "gunicorn master + workers, utime + stime from /proc",
        )
        oi = out["ours_identity"]
        self.check(
            "full harvest",
            "ours: records/s and CPU, identity encoding",
            f"{oi['records_per_s']:,.0f}/s, {oi['server_cpu_ms_per_1k']:.1f} ms",
            note="same loop, Accept-Encoding: identity (what gzip costs the server); one run",
        )
        self._peer_harvest_checks(out, runs)
        return {name: walks[0] for name, walks in runs.items() if walks}

    def section_floor(self, db: Path) -> None:
        """The floor under the server's CPU (bench/floor.py): the same rows, read from the same
        store in key order, a page at a time, and gzipped as the server does, with no HTTP;
        beside the server's CPU per 1,000 records of the full harvests just made."""
        a = self.args
        log(f"the floor: the same rows read and gzipped without HTTP, {a.repeat} times")
        walks = [floor_walk(db, a.page_size) for _ in range(a.repeat)]
        floor = median([w.ms_per_1k for w in walks])
        read = median([w.read_ms_per_1k for w in walks])
        ours = self.results["full_harvest"]["ours"]["server_cpu_ms_per_1k"]
        w = walks[0]
        self.results["floor"] = {
            "cpu_ms_per_1k": round(floor, 2),
            "read_ms_per_1k": round(read, 2),
            "records": w.records,
            "pages": w.pages,
            "raw_mb": round(w.raw_bytes / 2**20, 1),
            "gzip_mb": round(w.gzip_bytes / 2**20, 1),
            "server_over_floor": round(ours / floor, 2),
            "runs_ms_per_1k": [round(x.ms_per_1k, 2) for x in walks],
        }
        self.check(
            "full harvest",
            "ours: server CPU per 1,000 / the floor",
            f"{ours:.1f} / {floor:.1f} ms = {ours / floor:.2f}x",
            f"<= {T_FLOOR:g}x",
            ours / floor <= T_FLOOR,
            f"floor: {w.records:,} records in {w.pages:,} pages read from the store in key order "
            f"({read:.1f} ms/1k) and gzipped at level 1 ({w.raw_bytes / 2**20:.0f} -> "
            f"{w.gzip_bytes / 2**20:.0f} MB), no HTTP; median of {a.repeat}",
        )

    def _peer_harvest_checks(self, out: dict[str, Any], runs: dict[str, list[Walk]]) -> None:
        """The peers' full-harvest rows; ours must use 10x less CPU than the best of them."""
        o = out["ours"]
        live = self.results["load"]["live"]
        if "peer" in out:
            p = out["peer"]
            less = p["server_cpu_ms_per_1k"] / o["server_cpu_ms_per_1k"]
            self.check(
                "full harvest",
                "peer (pyoai): records/s, server CPU per 1,000",
                f"{p['records_per_s']:,.0f}/s, {p['server_cpu_ms_per_1k']:.1f} ms",
                f"ours >= {T_VS_PEER_CPU:g}x less CPU",
                less >= T_VS_PEER_CPU,
                f"ours/peer: {o['records_per_s'] / p['records_per_s']:.2f}x records/s, "
                f"{less:.2f}x less CPU (peer sends no gzip)",
            )
        if "oairepo" in out:
            r = out["oairepo"]
            seen = runs["oairepo"][0].records
            less = r["server_cpu_ms_per_1k"] / o["server_cpu_ms_per_1k"]
            self.check(
                "full harvest",
                "peer (oai-repo): records/s, server CPU per 1,000",
                f"{r['records_per_s']:,.0f}/s, {r['server_cpu_ms_per_1k']:.1f} ms",
                f"ours >= {T_VS_PEER_CPU:g}x less CPU",
                less >= T_VS_PEER_CPU,
                f"ours/oai-repo: {o['records_per_s'] / r['records_per_s']:.2f}x records/s, {less:.2f}x less CPU; "
                f"full harvest {median([w.seconds for w in runs['oairepo']]):.1f} s against ours "
                f"{median([w.seconds for w in runs['ours']]):.1f} s; it served {seen:,} records, the {live:,} "
                "live ones (oai-repo leaves out a record without metadata: no deleted ones; no gzip)",
            )

    def section_page_latency(self, ours: Server, peer: Server | None, walks: dict[str, Walk]) -> None:
        """The first page (a new list), the second (the first token), and the pages at 10, 50 and
        90 % of the list, re-requested with the tokens of the first walk; ours also for a set."""
        extra = {"set": LATENCY_SET}
        targets = [("ours", ours, walks["ours"], None), ("ours, set", ours, full_harvest(ours, extra=extra), extra)]
        if peer is not None and "peer" in walks:
            targets.append(("peer", peer, walks["peer"], None))
        self.results["page_latency"] = self._page_latency(targets)

    def _page_latency(self, targets: list[tuple[str, Server, Walk, dict[str, str] | None]]) -> dict[str, Any]:
        """Each target's (name, server, walk, extra first-page arguments) page latencies, positions
        and servers interleaved, medians; checked for ours: the first page, which freezes the list
        and reads its completeListSize, within T_FIRST_PAGE of the second and of the 90 % page."""
        a = self.args
        for name, _, walk, _ in targets:
            if walk.pages < 2:  # a list of one page has no later page to compare (a small --records)
                self.skipped[f"page latency: {name}"] = f"its list is {walk.pages} page(s)"
                log(f"page latency: {name} SKIPPED: its list is {walk.pages} page(s)")
        targets = [t for t in targets if t[2].pages >= 2]
        positions: tuple[int | str, ...] = (0, "p2", 10, 50, 90)
        samples: dict[str, dict[int | str, list[float]]] = {t[0]: {p: [] for p in positions} for t in targets}
        session = requests.Session()
        log(
            f"page latency: first and second page, 10, 50, 90 % of {', '.join(t[0] for t in targets)},"
            f" {a.latency_reps} times each"
        )
        for _ in range(a.latency_reps):
            for p in positions:
                for name, server, walk, extra in targets:
                    page = 1 if p == "p2" else (int(p) * walk.pages) // 100
                    params = (
                        first_page(extra)
                        if page == 0
                        else {"verb": "ListRecords", "resumptionToken": walk.tokens[page - 1]}
                    )
                    _, elapsed = fetch(session, server.url, params)
                    samples[name][p].append(elapsed)
        label = {0: "first", "p2": "second", 10: "10%", 50: "50%", 90: "90%"}
        for name, _, walk, _ in targets:
            m = {p: median(samples[name][p]) * 1000 for p in positions}
            ours = name.startswith("ours")
            worst = max(m[0] / m["p2"], m[0] / m[90])
            self.check(
                "page latency",
                f"{name}: first, 2nd, 10/50/90 % page (ms)",
                " / ".join(f"{m[p]:.1f}" for p in positions),
                f"first <= {T_FIRST_PAGE:g}x 2nd and 90 %" if ours else "",
                worst <= T_FIRST_PAGE if ours else None,
                f"first/2nd = {m[0] / m['p2']:.2f}, first/90 % = {m[0] / m[90]:.2f}, 90 %/2nd = "
                f"{m[90] / m['p2']:.2f}; {walk.records:,} records; median of {a.latency_reps}"
                + ("; the first page freezes the list and reads its kept count" if ours else ""),
            )
        return {
            name: {
                label[p]: {"median_ms": round(median(v) * 1000, 2), "samples_ms": [round(x * 1000, 2) for x in v]}
                for p, v in per.items()
            }
            for name, per in samples.items()
        }

    def section_get_record(self, ours: Server, peer: Server | None, oairepo: Server | None = None) -> None:
        a = self.args
        rng = random.Random(6)
        ids = [identifier(rng.randrange(a.records)) for _ in range(a.get_records)]
        targets = [("ours", ours)] + [(name, s) for name, s in (("peer", peer), ("oairepo", oairepo)) if s is not None]
        samples: dict[str, list[float]] = {name: [] for name, _ in targets}
        log(f"GetRecord of {len(ids)} random identifiers")
        session = requests.Session()
        for ident in ids:
            for name, server in targets:
                params = {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": ident}
                _, elapsed = fetch(session, server.url, params)
                samples[name].append(elapsed)
        out = {}
        for name, v in samples.items():
            out[name] = {
                "requests": len(v),
                "p50_ms": round(median(v) * 1000, 2),
                "p95_ms": round(percentile(v, 95) * 1000, 2),
            }
        self.results["get_record"] = out
        o = out["ours"]
        for name, v in samples.items():
            r = out[name]
            faster = name != "ours" and o["p50_ms"] <= r["p50_ms"]
            self.check(
                "GetRecord",
                f"{'ours' if name == 'ours' else 'peer (' + PEER_NAMES[name] + ')'}: p50 / p95",
                f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} ms",
                "" if name == "ours" else "ours p50 <= peer's",
                None if name == "ours" else faster,
                f"{len(v)} random identifiers, asked of each server in turn"
                + (
                    ""
                    if name == "ours"
                    else f"; ours/peer p50 {o['p50_ms'] / r['p50_ms']:.2f}x, p95 {o['p95_ms'] / r['p95_ms']:.2f}x"
                ),
            )

    def section_crowds(self, ours: Server, peer: Server | None) -> None:
        a = self.args
        out: dict[str, Any] = {}
        for level in (8, 32):
            runs: dict[str, list[Crowd]] = {"ours": [], "peer": []}
            for rep in range(a.repeat):
                for name, server in (("ours", ours), ("peer", peer)):
                    if server is None:
                        continue
                    log(f"{level} concurrent harvesters on {name}, {a.crowd_seconds:g} s (repetition {rep + 1})")
                    c = crowd(server, level, a.crowd_seconds, a.crowd_max_pages)
                    runs[name].append(c)
                    log(
                        f"  {c.records / c.seconds:,.0f} records/s, p95 {percentile(c.latencies, 95) * 1000:.0f} ms, "
                        f"{c.errors} errors"
                    )
            for name, crowds in runs.items():
                if not crowds:
                    continue
                out[f"{name}_{level}"] = {
                    "records_per_s": round(median([c.records / c.seconds for c in crowds]), 1),
                    "p95_ms": round(median([percentile(c.latencies, 95) * 1000 for c in crowds]), 1),
                    "errors": sum(c.errors for c in crowds),
                    "server_cpu_ms_per_1k": round(
                        median([c.server_cpu * 1e6 / c.records for c in crowds if c.records]), 2
                    ),
                    "others_cpu_pct": median([c.summary()["others_cpu_pct"] for c in crowds]),
                    "runs": [c.summary() for c in crowds],
                }
        self.results["concurrent"] = out
        for level in (8, 32):
            o = out[f"ours_{level}"]
            self.check(
                "concurrent",
                f"ours: {level} harvesters, aggregate / p95 / errors",
                f"{o['records_per_s']:,.0f}/s, {o['p95_ms']:.0f} ms, {o['errors']}",
                "0 errors",
                o["errors"] == 0,
                f"median of {a.repeat} x {a.crowd_seconds:g} s; server CPU {o['server_cpu_ms_per_1k']:.1f} ms/1k; "
                f"others used {o['others_cpu_pct']:.0f} % of the CPUs",
            )
            p = out.get(f"peer_{level}")
            if p is not None:
                ratio = o["records_per_s"] / p["records_per_s"] if p["records_per_s"] else float("inf")
                self.check(
                    "concurrent",
                    f"peer: {level} harvesters, aggregate / p95 / errors",
                    f"{p['records_per_s']:,.0f}/s, {p['p95_ms']:.0f} ms, {p['errors']}",
                    f"ours >= {T_VS_PEER_32:g}x peer" if level == 32 else "",
                    ratio >= T_VS_PEER_32 if level == 32 else None,
                    f"ours/peer = {ratio:.2f}x; peer CPU {p['server_cpu_ms_per_1k']:.1f} ms/1k; "
                    f"others used {p['others_cpu_pct']:.0f} % of the CPUs",
                )

    def section_postgres_server(self, ours: Server, workdir: Path) -> None:
        """Our server on PostgreSQL (the same data set loaded into a fresh schema) beside ours on
        SQLite: full harvests and 32 concurrent harvesters, alternating. The PostgreSQL server's
        CPU includes its backends' (found by application_name in pg_stat_activity, read from /proc),
        where its queries run; SQLite runs inside the workers."""
        a = self.args
        if a.skip_pg or not a.pg_url:
            self.skipped["server on PostgreSQL"] = "--skip-pg"
            return
        app_name = f"oaibench{os.getpid()}"
        try:
            with pg_target(a.pg_url) as url:
                log(f"our server on PostgreSQL: loading {a.records:,} records into a fresh schema")
                loaded = load_url(f"{url}&application_name={app_name}", a.records, a.load_batch)
                analyze(url)
                pgdir = workdir / "postgres"
                pgdir.mkdir(exist_ok=True)
                server = start_ours(pgdir, f"{url}&application_name={app_name}", a.workers, a.page_size)
                server.extra_cpu = pg_backend_cpu(a.pg_url, app_name)
                try:
                    warm_up(server)
                    out = self._sqlite_against_pg(ours, server)
                    extra = {"set": LATENCY_SET}
                    out["page_latency"] = self._page_latency(
                        [
                            ("ours on PostgreSQL", server, full_harvest(server), None),
                            ("ours on PostgreSQL, set", server, full_harvest(server, extra=extra), extra),
                        ]
                    )
                finally:
                    server.stop()
        except Exception as exc:  # PostgreSQL unreachable or restarted by others: say so, go on
            self.skipped["server on PostgreSQL"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(self.skipped["server on PostgreSQL"])
            return
        out["load_records_per_s"] = loaded["records_per_s"]
        self.results["server_postgres"] = out
        sq, pg = out["sqlite"], out["postgres"]
        self.check(
            "PostgreSQL",
            "ours on PostgreSQL / SQLite: server CPU per 1,000",
            f"{pg['server_cpu_ms_per_1k']:.1f} / {sq['server_cpu_ms_per_1k']:.1f} ms",
            note=f"full harvests alternating, medians of {a.repeat}; {pg['records_per_s']:,.0f} against "
            f"{sq['records_per_s']:,.0f} records/s; PostgreSQL's CPU includes its backends'",
        )
        self.check(
            "PostgreSQL",
            "ours on PostgreSQL / SQLite: 32 harvesters",
            f"{pg['crowd_32_records_per_s']:,.0f} / {sq['crowd_32_records_per_s']:,.0f} records/s",
            "0 errors",
            pg["crowd_32_errors"] == 0,
            f"p95 {pg['crowd_32_p95_ms']:.0f} / {sq['crowd_32_p95_ms']:.0f} ms; errors {pg['crowd_32_errors']} / "
            f"{sq['crowd_32_errors']}; CPU {pg['crowd_32_cpu_ms_per_1k']:.1f} / {sq['crowd_32_cpu_ms_per_1k']:.1f} "
            f"ms/1k; median of {a.repeat} x {a.crowd_seconds:g} s",
        )

    def _sqlite_against_pg(self, ours: Server, pg: Server) -> dict[str, Any]:
        a = self.args
        walks: dict[str, list[Walk]] = {"sqlite": [], "postgres": []}
        crowds: dict[str, list[Crowd]] = {"sqlite": [], "postgres": []}
        for rep in range(a.repeat):
            log(f"full harvest and 32 harvesters, SQLite and PostgreSQL (repetition {rep + 1})")
            for name, server in (("sqlite", ours), ("postgres", pg)):
                walks[name].append(full_harvest(server))
                crowds[name].append(crowd(server, 32, a.crowd_seconds, a.crowd_max_pages))
        return {
            name: {
                "records_per_s": round(median([w.records / w.seconds for w in walks[name]]), 1),
                "server_cpu_ms_per_1k": round(median([w.server_cpu * 1e6 / w.records for w in walks[name]]), 2),
                "crowd_32_records_per_s": round(median([c.records / c.seconds for c in crowds[name]]), 1),
                "crowd_32_p95_ms": round(median([percentile(c.latencies, 95) * 1000 for c in crowds[name]]), 1),
                "crowd_32_errors": sum(c.errors for c in crowds[name]),
                "crowd_32_cpu_ms_per_1k": round(
                    median([c.server_cpu * 1e6 / c.records for c in crowds[name] if c.records]), 2
                ),
            }
            for name in walks
        }

    def section_memory(self, ours: Server, peer: Server | None) -> None:
        out = {"ours": ours.memory()}
        if peer is not None:
            out["peer"] = peer.memory()
        self.results["memory"] = out
        hwm = max(out["ours"]["worker_hwm_mb"] or [0])
        at = self.args.records
        self.check(
            "memory",
            "ours: peak RSS per worker (VmHWM)",
            f"{hwm:.0f} MB",
            f"<= {T_RSS_MB:g} MB at 1M",
            hwm <= T_RSS_MB,
            f"at N={at:,}"
            + ("" if at >= 1_000_000 else " (run `make bench N=1000000` for the target's N)")
            + f"; workers: {', '.join(f'{x:.0f}' for x in out['ours']['worker_hwm_mb'])} MB",
        )
        if peer is not None:
            self.check(
                "memory", "peer: peak RSS per worker (VmHWM)", f"{max(out['peer']['worker_hwm_mb'] or [0]):.0f} MB"
            )


def _ratio(value: float, base: float) -> float:
    """value / base; NaN (a check that fails) when a tiny run measured no CPU at all (/proc
    counts in 10 ms ticks)."""
    return value / base if base else float("nan")


COPY = "oai_dc_copy"  # oai_dc's rows again, as a harvested format: a second format of equal bytes


def copy_as_harvested_format(db: Path, prefix: str) -> None:
    """Every record's oai_dc row again under `prefix`, declared as a harvested format: served
    as a partner's further format is (the stored `<record>` joined), with oai_dc's very bytes,
    so a list in it shows what a harvested format costs a record apart from its size."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(
                "INSERT INTO harvested_formats (prefix, schema, namespace, source) VALUES (?, ?, ?, 'local')",
                (
                    prefix,
                    "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
                    "http://www.openarchives.org/OAI/2.0/oai_dc/",
                ),
            )
            conn.execute(
                "INSERT INTO formats (record_id, prefix, record, datestamp)"
                " SELECT record_id, ?, record, datestamp FROM formats WHERE prefix = 'oai_dc'",
                (prefix,),
            )
    finally:
        conn.close()


def analyze(url: str) -> None:
    """ANALYZE a freshly loaded PostgreSQL schema, as autovacuum does a little later: without
    statistics the planner sorts the whole list for every page (a full harvest of 20,000
    records took 2.8 s before, 0.2 s after)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    engine.dispose()


class FormatSections(Sections):
    """The data set's second format (bench/marcxml.py) against oai_dc, and the staff views' search."""

    def section_second_format_load(self, db: Path) -> None:
        """Every record again in MARC21 slim, by the harvester's store API, after every other
        section has measured oai_dc alone: a record first served in a further format is stamped
        anew, in every format, as a harvest of the format stamps it."""
        a = self.args
        if a.skip_second_format:
            self.skipped["second format"] = "--skip-second-format"
            return
        log(f"writing the {a.records:,} records in {PREFIX} too (write_native_in, batch={a.load_batch})")
        r = write_second_format(f"sqlite:///{db}", synthetic_records(a.records, REPO_ID), a.load_batch)
        copy_as_harvested_format(db, COPY)
        self.results["second_format_load"] = r
        self.check(
            "second format",
            f"{PREFIX} written by write_native_in (the harvester's)",
            f"{r['records_per_s']:,.0f} records/s",
            note=f"{r['records']:,} records in {r['write_seconds']} s inside write_native_in (making their XML is "
            "not counted; first served in it, each record is stamped anew, in every format); after every other "
            "section, whose figures are oai_dc's alone",
        )

    def section_second_format(self, ours: Server, db: Path) -> None:
        """Full ListRecords walks in the second format and in oai_dc, alternating (which goes
        first alternates too), then their first page and the page at 90 % of the list, interleaved.
        The target compares server CPU per byte served when the two formats' records differ in
        size by more than 10 %, per record otherwise (see bench/README.md)."""
        a = self.args
        if "second_format_load" not in self.results:
            return
        order = ["oai_dc", PREFIX, COPY]
        walks: dict[str, list[Walk]] = {p: [] for p in order}
        for rep in range(a.repeat):
            log(f"full ListRecords harvest in oai_dc, {PREFIX} and {COPY}, repetition {rep + 1} of {a.repeat}")
            for p in order if rep % 2 == 0 else order[::-1]:
                walks[p].append(full_harvest(ours, prefix=p))
        positions = (0, 90)
        samples: dict[str, dict[int, list[float]]] = {p: {pos: [] for pos in positions} for p in order}
        session = requests.Session()
        log(f"page latency in {', '.join(order)}: first page, 90 % of the list, {a.latency_reps} times each")
        for _ in range(a.latency_reps):
            for pos in positions:
                for p in order:
                    walk = walks[p][0]
                    page = pos * walk.pages // 100
                    params = (
                        first_page(prefix=p)
                        if page == 0
                        else {"verb": "ListRecords", "resumptionToken": walk.tokens[page - 1]}
                    )
                    samples[p][pos].append(fetch(session, ours.url, params)[1])
        session.close()
        log(f"the floor in {', '.join(order)}, alternating, {a.repeat} times")
        floors: dict[str, list[float]] = {p: [] for p in order}
        for _ in range(a.repeat):
            for p in order:
                floors[p].append(floor_walk(db, a.page_size, p).ms_per_1k)
        out: dict[str, Any] = {}
        for p, ws in walks.items():
            out[p] = {
                "records_per_s": round(median([w.records / w.seconds for w in ws]), 1),
                "server_cpu_ms_per_1k": round(median([w.server_cpu * 1e6 / w.records for w in ws]), 2),
                "server_cpu_us_per_kb": round(median([w.server_cpu * 1e6 * 1024 / w.served_bytes for w in ws]), 3),
                "bytes_per_record": round(median([w.served_bytes / w.records for w in ws]), 1),
                "first_page_ms": round(median(samples[p][0]) * 1000, 2),
                "page_90_ms": round(median(samples[p][90]) * 1000, 2),
                "floor_cpu_ms_per_1k": round(median(floors[p]), 2),
                "runs": [w.summary() | {"served_bytes": w.served_bytes} for w in ws],
            }
        dc, nf = out["oai_dc"], out[PREFIX]
        per_record = _ratio(nf["server_cpu_ms_per_1k"], dc["server_cpu_ms_per_1k"])
        per_byte = _ratio(nf["server_cpu_us_per_kb"], dc["server_cpu_us_per_kb"])
        size = nf["bytes_per_record"] / dc["bytes_per_record"]
        floor = _ratio(nf["floor_cpu_ms_per_1k"], dc["floor_cpu_ms_per_1k"])
        by_byte = abs(size - 1) > 0.1
        ratio = per_byte if by_byte else per_record
        out["per_record_ratio"], out["per_byte_ratio"] = round(per_record, 3), round(per_byte, 3)
        out["size_ratio"], out["target_uses"] = round(size, 3), "per byte" if by_byte else "per record"
        out["floor_per_record_ratio"] = round(floor, 3)
        self.results["second_format"] = out
        complete = all(w.records == a.records for ws in walks.values() for w in ws)
        self.check(
            "second format",
            f"{PREFIX}: server CPU per 1,000 records / per MB served",
            f"{nf['server_cpu_ms_per_1k']:.1f} ms / {nf['server_cpu_us_per_kb'] * 1.024:.1f} ms",
            note=f"oai_dc alternating: {dc['server_cpu_ms_per_1k']:.1f} ms / "
            f"{dc['server_cpu_us_per_kb'] * 1.024:.1f} ms; "
            f"{nf['records_per_s']:,.0f} against {dc['records_per_s']:,.0f} records/s; {nf['bytes_per_record']:,.0f} "
            f"against {dc['bytes_per_record']:,.0f} bytes a record served; medians of {a.repeat}; "
            f"every run saw {a.records:,} records: {'yes' if complete else 'NO'}",
        )
        self.check(
            "second format",
            f"{PREFIX} / oai_dc: server CPU per {'byte' if by_byte else 'record'}",
            f"{ratio:.2f}x",
            f"<= {T_SECOND_FORMAT:g}x per {'byte' if by_byte else 'record'}",
            ratio <= T_SECOND_FORMAT and complete,
            f"per record {per_record:.2f}x, per byte {per_byte:.2f}x; its records are {size:.2f}x the bytes of oai_dc's"
            + (", so the target is per byte" if by_byte else "")
            + f"; the floor (the same rows read and gzipped, no HTTP) per record: {floor:.2f}x",
        )
        same = _ratio(out[COPY]["server_cpu_ms_per_1k"], dc["server_cpu_ms_per_1k"])
        out["same_bytes_per_record_ratio"] = round(same, 3)
        self.check(
            "second format",
            f"{COPY} (oai_dc's bytes as a harvested format) / oai_dc: server CPU per record",
            f"{same:.2f}x",
            f"<= {T_SECOND_FORMAT:g}x",
            same <= T_SECOND_FORMAT and complete,
            f"{out[COPY]['server_cpu_ms_per_1k']:.1f} against {dc['server_cpu_ms_per_1k']:.1f} ms per 1,000 records, "
            f"walks alternating, medians of {a.repeat}: what serving a format harvested natively costs a record "
            "beyond oai_dc, bytes equal",
        )
        first = nf["first_page_ms"] / nf["page_90_ms"]
        self.check(
            "second format",
            f"{PREFIX}: first / 90 % page (ms)",
            f"{nf['first_page_ms']:.1f} / {nf['page_90_ms']:.1f}",
            f"first <= {T_FIRST_PAGE:g}x 90 %",
            first <= T_FIRST_PAGE,
            f"oai_dc interleaved: {dc['first_page_ms']:.1f} / {dc['page_90_ms']:.1f}; first/90 % = {first:.2f}; "
            f"median of {a.latency_reps}",
        )

    def section_search(self, ours: Server, db: Path) -> None:
        """The staff views' search at the run's N (bench/search_bench.py at 1,000,000): the store's
        first page and bounded count of a rare word, a common word and a prefix, and the /search page
        itself from our server, `--latency-reps` x 3 times each."""
        a = self.args
        reps = a.latency_reps * 3
        log(f"search: a rare word, a common word, a prefix; {reps} times each")
        store = Store(f"sqlite:///{db}")
        try:
            rows = measure(store, RUN_QUERIES, reps)
        finally:
            store.close()
        session = requests.Session()
        view = ours.url.removesuffix("/oai") + "/search"
        for row in rows:

            def page(text: str = row["query"]) -> int:
                response = session.get(view, params={"q": text}, timeout=60)
                response.raise_for_status()
                return len(response.content)

            row["http_first_page"], _ = timed(page, reps)
            self.check(
                "search",
                f"/search, {row['what'].split(' (')[0]} {row['query']!r}: page p50 / p95",
                f"{row['http_first_page']['p50_ms']:.1f} / {row['http_first_page']['p95_ms']:.1f} ms",
                note=f"{row['hits_counted'] if row['hits_counted'] <= COUNT_UP_TO else f'> {COUNT_UP_TO}'} hits; "
                f"in the store (p50): first page {row['first_page']['p50_ms']:.2f} ms, "
                f"count {row['count']['p50_ms']:.2f} ms; N={a.records:,}"
                + ("" if a.records >= 1_000_000 else " (bench/search_bench.py --records 1000000 for 1M)"),
            )
        session.close()
        self.results["search"] = {"records": a.records, "repeat": reps, "queries": rows}
