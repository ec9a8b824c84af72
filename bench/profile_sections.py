"""The section that profiles where the CPU time goes (--profile): server, harvester, load."""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from cpu_profiles import merge_stacks, sampling, start_profiled_server, summarize_profile
from harness import log
from harvesters import harvester_api, run_harvester
from loading import REPO_ID, identifier
from oai_client import fetch, full_harvest, warm_up
from sections import Sections
from servers import Server


class ProfileSections(Sections):
    """CPU-time profiles, sampled outside the measured runs."""

    def section_profiles(self, ours: Server, workdir: Path) -> None:
        """Where the CPU time goes, sampled outside the measured runs (bench/profiling.py)."""
        a = self.args
        outdir = Path(a.json).parent
        outdir.mkdir(parents=True, exist_ok=True)
        profiles: dict[str, Any] = {}

        def keep(name: str, path: Path, what: str) -> None:
            profiles[name] = {"what": what, "file": str(path), **summarize_profile(path)}

        def server_profile(name: str, what: str, drive: Callable[[Server], None]) -> None:
            profdir = workdir / f"profile-{name}"
            server = start_profiled_server(workdir, a.workers, profdir)
            try:
                warm_up(server)
                drive(server)
            finally:
                server.stop()
            path = outdir / f"profile-{name}.txt"
            merge_stacks(sorted(profdir.glob("worker-*.txt")), path)
            keep(name, path, what)

        pages = min(300, a.records // a.page_size)

        def list_records(s: Server) -> None:
            full_harvest(s, max_pages=pages)

        log(f"profile: server, ListRecords ({pages} pages)")
        server_profile("server-listrecords", f"gunicorn workers, {pages} ListRecords pages (gzip)", list_records)

        def get_records(s: Server) -> None:
            rng = random.Random(7)
            session = requests.Session()
            for _ in range(500):
                params = {"verb": "GetRecord", "metadataPrefix": "oai_dc"}
                fetch(session, s.url, {**params, "identifier": identifier(rng.randrange(a.records))})

        log("profile: server, GetRecord (500 requests)")
        server_profile("server-getrecord", "gunicorn workers, 500 GetRecord requests + warm-up", get_records)

        api = harvester_api() if not a.skip_harvester else "--skip-harvester"
        if not isinstance(api, str):
            log("profile: harvester into SQLite (stopped after 20 s)")
            path = outdir / "profile-harvester.txt"
            stop = threading.Event()
            timer = threading.Timer(20.0, stop.set)
            kwargs: dict[str, Any] = {"stop": stop} if "stop" in inspect.signature(api).parameters else {}
            timer.start()
            quiet = logging.getLogger("harvester")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the run ends "failed: stopped", as asked
            try:
                with sampling(path):
                    run_harvester(api, ours, f"sqlite:///{workdir / 'profile-harvest.sqlite3'}", **kwargs)
            finally:
                timer.cancel()
                quiet.setLevel(level)
            keep("harvester", path, "the benchmark process running harvest.run into SQLite")

        from oaiserver.store import Store
        from oaiserver.synthetic import synthetic_records

        n = min(a.records, 20_000)
        log(f"profile: loading {n:,} records (Store.write, batch={a.load_batch}; generated beforehand)")
        records = list(synthetic_records(n, REPO_ID))
        store = Store(f"sqlite:///{workdir / 'profile-load.sqlite3'}")
        path = outdir / "profile-load.txt"
        with sampling(path):
            store.write(records, keep_datestamps=True, batch=a.load_batch)
        store.close()
        keep("load", path, f"the benchmark process in Store.write of {n:,} records")
        self.results["profiles"] = profiles
