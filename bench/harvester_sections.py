"""The section that compares the project's harvester with a plain Sickle loop, into SQLite and
PostgreSQL."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness import log, median
from harvesters import harvester_api, pg_target, run_harvester, sickle_loop, wait_for_pg
from sections import T_HARVESTER_CPU_VS_SICKLE, T_HARVESTER_VS_SICKLE, T_PG_VS_SQLITE, Sections
from servers import Server


class HarvesterSections(Sections):
    """harvest.run against a plain Sickle loop, harvesting our server."""

    def section_harvester(self, ours: Server, workdir: Path) -> None:
        a = self.args
        out: dict[str, Any] = {}
        if a.skip_harvester:
            self.skipped["harvester"] = "--skip-harvester"
            return
        api = harvester_api()
        if isinstance(api, str):
            self.skipped["harvester"] = api
            log(f"harvester: SKIPPED: {api}")
        sickle_runs: list[dict[str, Any]] = []
        sqlite_runs: list[dict[str, Any]] = []
        pg_runs: list[dict[str, Any]] = []
        with_pg = not (a.skip_pg or not a.pg_url)
        if not with_pg:
            self.skipped["harvester_pg"] = "--skip-pg"
        # Interleaved, one of each per repetition: the ratios compare runs made side by side.
        for rep in range(a.harvest_repeat):
            if not isinstance(api, str):
                sqlite_runs.append(self._harvester_into_sqlite(api, ours, workdir, rep))
            sickle_runs.append(self._sickle_into_sqlite(ours, workdir, rep))
            if with_pg and not isinstance(api, str) and "harvester_pg" not in self.skipped:
                pg_run = self._harvester_into_pg(api, ours)
                if pg_run is not None:
                    pg_runs.append(pg_run)
        out["sickle"] = self._check_sickle(sickle_runs)
        if sqlite_runs and not isinstance(api, str):  # runs only with the harvester's API at hand
            out["sqlite"] = self._check_harvester(sqlite_runs, sickle_runs, out["sickle"]["records_per_s"])
            if pg_runs:
                out["postgresql"] = self._check_pg(pg_runs, out["sqlite"]["records_per_s"])
        self.results["harvester"] = out

    def _harvester_into_sqlite(self, api: Callable[..., Any], ours: Server, workdir: Path, rep: int) -> dict[str, Any]:
        log(f"harvester into SQLite (repetition {rep + 1} of {self.args.harvest_repeat})")
        target = workdir / f"harvested-{rep}.sqlite3"
        try:
            r = run_harvester(api, ours, f"sqlite:///{target}")
        except Exception as exc:
            r = {
                "outcome": "error",
                "reason": f"{type(exc).__name__}: {exc}",
                "records_per_s": 0.0,
                "records": 0,
            }
            traceback.print_exc()
        log(f"  {r['outcome']}: {r['records']:,} records, {r['records_per_s']:,.0f} records/s")
        _remove_sqlite(target)
        return r

    def _sickle_into_sqlite(self, ours: Server, workdir: Path, rep: int) -> dict[str, Any]:
        log(f"plain Sickle loop into SQLite (repetition {rep + 1} of {self.args.harvest_repeat})")
        target = workdir / f"sickle-{rep}.sqlite3"
        s = sickle_loop(ours, target)
        log(f"  {s['records']:,} records, {s['records_per_s']:,.0f} records/s")
        _remove_sqlite(target)
        return s

    def _check_sickle(self, sickle_runs: list[dict[str, Any]]) -> dict[str, Any]:
        sickle_rate = median([s["records_per_s"] for s in sickle_runs])
        self.check(
            "harvester",
            "plain Sickle loop into SQLite",
            f"{sickle_rate:,.0f} records/s",
            note=f"raw XML, executemany in batches of 500; median of {len(sickle_runs)}; "
            f"client CPU {median([r['client_cpu_ms_per_1k'] or 0 for r in sickle_runs]):.0f} ms/1k; "
            f"others used {median([r['others_cpu_pct'] for r in sickle_runs]):.0f} % of the CPUs",
        )
        return {"records_per_s": sickle_rate, "runs": sickle_runs}

    def _check_runs(self, figure: str, runs: list[dict[str, Any]], what: str, more: str) -> float:
        """The harvester's runs into one store, checked whole (every record, each time); their
        median rate."""
        rate = median([r["records_per_s"] for r in runs])
        ok = all(r["outcome"] == "success" and r["records"] == self.args.records for r in runs)
        self.check(
            "harvester",
            figure,
            f"{rate:,.0f} records/s",
            "every record",
            ok,
            f"{what}; outcome {'success, every record' if ok else 'NOT COMPLETE'}; median of {len(runs)}; "
            f"harvester CPU (with its worker process) "
            f"{median([r.get('harvester_cpu_ms_per_1k') or 0 for r in runs]):.0f} ms/1k; {more}; "
            f"others used {median([r.get('others_cpu_pct') or 0 for r in runs]):.0f} % of the CPUs",
        )
        return rate

    def _check_harvester(
        self, sqlite_runs: list[dict[str, Any]], sickle_runs: list[dict[str, Any]], sickle_rate: float
    ) -> dict[str, Any]:
        rate = self._check_runs(
            "harvester into SQLite",
            sqlite_runs,
            "harvest.run, default settings",
            f"server CPU {median([r.get('server_cpu_ms_per_1k') or 0 for r in sqlite_runs]):.0f} ms/1k",
        )
        ratio = rate / sickle_rate if sickle_rate else float("inf")
        h_cpu = median([r.get("harvester_cpu_ms_per_1k") or 0 for r in sqlite_runs])
        s_cpu = median([r["client_cpu_ms_per_1k"] or 0 for r in sickle_runs]) or float("nan")
        self.check(
            "harvester",
            "harvester / plain Sickle loop: records/s",
            f"{ratio:.2f}x",
            f">= {T_HARVESTER_VS_SICKLE:g}x",
            ratio >= T_HARVESTER_VS_SICKLE,
            f"medians of runs made alternately; {rate:,.0f} against {sickle_rate:,.0f} records/s",
        )
        cpu_ratio = h_cpu / s_cpu
        self.check(
            "harvester",
            "harvester / plain Sickle loop: CPU per record",
            f"{cpu_ratio:.2f}x",
            f"<= {T_HARVESTER_CPU_VS_SICKLE:g}x",
            cpu_ratio <= T_HARVESTER_CPU_VS_SICKLE,
            f"client CPU (the harvester with its worker process): {h_cpu:.0f} against {s_cpu:.0f} ms/1k",
        )
        return {"records_per_s": rate, "cpu_ratio_vs_sickle": cpu_ratio, "runs": sqlite_runs}

    def _check_pg(self, pg_runs: list[dict[str, Any]], sqlite_rate: float) -> dict[str, Any]:
        """The harvester into PostgreSQL, against its own rate into SQLite in the same repetitions."""
        rate = self._check_runs(
            "harvester into PostgreSQL",
            pg_runs,
            self.args.pg_url.split("@")[-1],
            "the database server among the others",
        )
        ratio = rate / sqlite_rate if sqlite_rate else 0.0
        self.check(
            "harvester",
            "harvester into PostgreSQL / into SQLite",
            f"{ratio:.2f}x",
            f">= {T_PG_VS_SQLITE:g}x",
            ratio >= T_PG_VS_SQLITE,
            f"records/s, medians of runs made alternately: {rate:,.0f} against {sqlite_rate:,.0f}",
        )
        return {"records_per_s": rate, "ratio_vs_sqlite": ratio, "runs": pg_runs}

    def _harvester_into_pg(self, api: Callable[..., Any], ours: Server) -> dict[str, Any] | None:
        """A run into a fresh PostgreSQL schema, checked; None (and why, in `skipped`) if the
        server fails it twice."""
        a = self.args
        log("harvester into PostgreSQL (a fresh schema)")
        pg_run: dict[str, Any] | None = None
        for attempt in (1, 2):  # the shared server may be restarted under us: then once more
            try:
                with pg_target(a.pg_url) as url:
                    pg_run = run_harvester(api, ours, url)
                break
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                why = f"PostgreSQL at {a.pg_url}: {type(exc).__name__}: {first}"
                log(f"harvester into PostgreSQL failed (attempt {attempt}): {why}")
                if attempt == 2 or not wait_for_pg(a.pg_url, 90):
                    self.skipped["harvester_pg"] = why
                    break
        if pg_run is not None:
            log(f"  {pg_run['outcome']}: {pg_run['records']:,} records, {pg_run['records_per_s']:,.0f} records/s")
        return pg_run


def _remove_sqlite(target: Path) -> None:
    """A SQLite database and its journal files."""
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            Path(f"{target}{suffix}").unlink()
