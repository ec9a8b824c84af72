"""`oaiserver`: load records, make tombstones, and serve the repository.

`oaiserver --help` is the reference; the README is tested against it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from oaiserver import config as config_mod
from oaiserver.store import Store, StoreUnavailable, open_store


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            try:
                self._config = config_mod.load(self.config_path)
            except config_mod.ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._config

    def store(self) -> Store:
        """The store, closed when the command ends; one line naming `storage.url` if it cannot
        be opened."""
        try:
            store = open_store(self.config.storage_url)
        except StoreUnavailable as exc:
            raise click.ClickException(f"configuration: {config_mod.storage_key()}: {exc}") from None
        click.get_current_context().call_on_close(store.close)
        return store

    def check_store(self) -> None:
        """Open the store once and close it (before gunicorn forks its workers, which open their own)."""
        self.store().close()


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar=config_mod.ENV_CONFIG,
    type=click.Path(dir_okay=False),
    help="Configuration file (default: ./config.yaml, or $OAI_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """An OAI-PMH 2.0 data provider over the shared record store."""
    setup_logging(verbose)
    ctx.obj = Context(config_path)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--prune", is_flag=True, help="Turn local records whose seed file has gone into deleted records.")
@pass_ctx
def ingest(ctx: Context, path: Path, prune: bool) -> None:
    """Ingest seed documents from PATH (a folder of .txt files, or one file).

    Unchanged files keep their datestamps. Exit code 1 if any file failed to parse
    (the others are still ingested).
    """
    from oaiserver.ingest import ingest as run_ingest

    store = ctx.store()
    report = run_ingest(ctx.config, store, path, prune=prune)
    w = report.written
    click.echo(
        f"{report.files} file(s): {w.added} added, {w.changed} changed, {w.unchanged} unchanged, "
        f"{len(report.failed)} failed, {report.pruned} pruned"
    )
    for name, reason in report.failed.items():
        click.echo(f"  failed: {name}: {reason}", err=True)
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("identifiers", nargs=-1, required=True)
@pass_ctx
def delete(ctx: Context, identifiers: tuple[str, ...]) -> None:
    """Make tombstones of IDENTIFIERS: they stay listed, with status="deleted"."""
    store = ctx.store()
    unknown = [i for i in identifiers if store.formats_of(i) is None]
    count = store.delete(i for i in identifiers if i not in unknown)
    click.echo(f"{count} record(s) deleted")
    for i in unknown:
        click.echo(f"  unknown identifier: {i}", err=True)
    if unknown:
        sys.exit(1)


@main.command()
@pass_ctx
def stats(ctx: Context) -> None:
    """Show record counts (live, deleted) and set sizes."""
    store = ctx.store()
    counts = store.counts()
    click.echo(f"records: {counts['live']} live, {counts['deleted']} deleted")
    for spec, n in sorted(store.set_counts().items()):
        click.echo(f"  set {spec}: {n}")


@main.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def export_cmd(ctx: Context, path: Path) -> None:
    """Write the whole store (records, tombstones, settings, harvest state) to PATH.

    JSON lines; gzip-compressed when PATH ends in .gz, with a last line that proves the file
    whole. The same store gives the same bytes. Exit code 1 if a record's stored content no
    longer matches its content hash (changed outside oaiserver): the file is written, but
    import refuses it.
    """
    from oaiserver.dump import export

    report = export(ctx.store(), path)
    click.echo(
        f"exported {report.records} record(s) ({report.deleted} deleted) and {report.rows} other row(s) to {path}"
    )
    if report.mismatched:
        click.echo(
            f"{len(report.mismatched)} record(s) whose stored content no longer matches its content hash "
            f"(changed outside oaiserver), e.g. {report.mismatched[0]}: import will refuse this file",
            err=True,
        )
        sys.exit(1)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def import_cmd(ctx: Context, path: Path) -> None:
    """Load an export into an empty store (SQLite or PostgreSQL), keeping every datestamp.

    All or nothing: one transaction. A file that is cut short, altered or malformed
    anywhere (a fragment that is not well-formed XML, a character XML forbids, a record whose
    content does not match its content hash) is refused with its line number, and the
    store is left as it was.
    """
    from oaiserver.dump import DumpError, load

    try:
        report = load(ctx.store(), path)
    except DumpError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"imported {report.records} record(s) ({report.deleted} deleted) and {report.rows} other row(s)")


def default_bind(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return f"{parts.hostname}:{parts.port or 80}"
    return "127.0.0.1:5000"


@main.command()
@click.option(
    "--bind", "-b", help="Address to listen on (default: host:port of baseURL if local, else 127.0.0.1:5000)."
)
@click.option("--workers", "-w", default=2, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads per worker answering requests (a request gets one only once it has arrived whole).",
)
@click.option(
    "--timeout",
    default=60,
    show_default=True,
    help="Seconds before a silent worker is restarted; also the longest an answer waits for a client to read it.",
)
@click.option(
    "--control-socket",
    type=click.Path(dir_okay=False),
    help="gunicorn's control socket (default: oaiserver-<bind>.ctl in $XDG_RUNTIME_DIR, else ~/.gunicorn).",
)
@click.option("--dev", is_flag=True, help="Use Flask's development server instead of gunicorn.")
@click.option(
    "--access-log",
    is_flag=True,
    help="Also write gunicorn's access log (every request already gets one log line of ours).",
)
@pass_ctx
def serve(
    ctx: Context,
    bind: str | None,
    workers: int,
    threads: int,
    timeout: int,
    control_socket: str | None,
    dev: bool,
    access_log: bool,
) -> None:
    """Serve the repository over OAI-PMH (gunicorn).

    A request is read whole by each worker's event loop before a thread answers it, so clients
    that stall or trickle hold no thread; one not received within server.request_timeout
    seconds is answered 408 and closed.
    """
    from oaiserver import create_app

    cfg = ctx.config
    ctx.check_store()
    bind = bind or default_bind(cfg.base_url)
    click.echo(f"serving {cfg.name!r} at {cfg.base_url} (listening on {bind})")
    if dev:
        host, _, port = bind.rpartition(":")
        create_app(cfg).run(host=host, port=int(port))
        return
    from oaiserver import serving

    serving.run(
        cfg,
        bind=bind,
        workers=workers,
        threads=threads,
        timeout=timeout,
        access_log=access_log,
        control_socket=control_socket,
    )


@main.command()
@click.argument("url")
@click.option(
    "--max-pages",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Follow the ListIdentifiers resumption chain for at most this many pages.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for each HTTP response.",
)
def validate(url: str, max_pages: int, timeout: float) -> None:
    """Check the OAI-PMH base URL URL (ours or a partner's) against OAI-PMH 2.0.

    Every response is parsed safely and validated against the official schemas (shipped
    with oaiserver, no network needed); Identify, datestamps, the ListIdentifiers resumption
    chain, ListRecords, GetRecord and the errors bad arguments must produce are checked.
    Prints one PASS/FAIL/WARN/SKIP line per rule and a summary; exit code 1 on any FAIL.
    """
    from oaiserver.validate import url_problem
    from oaiserver.validate import validate as run_validate

    problem = url_problem(url)
    if problem:
        raise click.BadParameter(problem, param_hint="URL")
    sys.exit(run_validate(url, max_pages=max_pages, timeout=timeout))


@main.command("synthetic")
@click.argument("count", type=click.IntRange(min=0, max=1_000_000))
@pass_ctx
def synthetic_cmd(ctx: Context, count: int) -> None:
    """Add COUNT synthetic records, for demonstrations (`make demo`).

    Marked so that no one takes them for real: identifiers oai:<id>:synthetic-…, titles
    starting "[synthetic]", every one in set `synthetic` (and a subset such as
    synthetic:history); 2% are deleted records. The same COUNT again changes nothing.
    Load them into a store of their own (demo.yaml's), not the repository's.
    """
    from oaiserver.synthetic import SYNTHETIC_SET, synthetic_records

    cfg = ctx.config
    records = synthetic_records(count, cfg.repository_identifier, base_url=cfg.site_url, marked=True)
    w = ctx.store().write(records, keep_datestamps=True)
    click.echo(f"{count} synthetic record(s): {w.added} added, {w.changed} changed, {w.unchanged} unchanged")
    if SYNTHETIC_SET not in {s.spec for s in cfg.sets}:
        click.echo(
            f"note: the configuration lists no set {SYNTHETIC_SET!r}, so ListSets does not show these "
            "records' sets (demo.yaml lists them)",
            err=True,
        )


if __name__ == "__main__":  # pragma: no cover
    main()
