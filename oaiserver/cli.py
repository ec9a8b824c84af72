"""`oaiserver`: load records, make tombstones, and serve the repository.

`oaiserver --help` is the reference; the README is tested against it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import sqlalchemy as sa

from oaiserver import config as config_mod
from oaiserver.store import Store, StoreNotOpen, StoreUnavailable, open_store

DISTRIBUTION = "oai-repository"  # the installed package, whose version --version prints
CONFIG_HELP = "Configuration file (default: ./config.yaml, or $OAI_CONFIG)."
VERBOSE_HELP = "Log debug messages."
F = TypeVar("F", bound=Callable[..., Any])
CREATORS = "oaiserver ingest, oaiserver import or harvester run create it"


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:  # also when logging was set up before (basicConfig then does nothing)
        logging.getLogger().setLevel(logging.DEBUG)


class StoreDown(click.ClickException):
    """The configured store cannot be opened now: a command stops on it, a server waits for it."""


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

    def store(self, *, existing: bool = False) -> Store:
        """The store, closed when the command ends; one line naming `storage.url` if it cannot
        be opened. `existing`: a command that only reads says a SQLite store is missing rather
        than create an empty one."""
        url = self.config.storage_url
        missing = config_mod.sqlite_file(url)
        if existing and missing is not None and not missing.exists():
            raise click.ClickException(
                f"configuration: {config_mod.storage_key()}: cannot open {shown_url(url)}: "
                f"there is no store there yet ({CREATORS})"
            )
        try:
            store = open_store(url)
        except StoreNotOpen as exc:
            raise StoreDown(f"configuration: {config_mod.storage_key()}: {exc}") from None
        except StoreUnavailable as exc:
            raise click.ClickException(f"configuration: {config_mod.storage_key()}: {exc}") from None
        click.get_current_context().call_on_close(store.close)
        return store

    def store_named(self) -> str:
        """`storage.url`, with the URL once the configuration is loaded (password hidden)."""
        key = config_mod.storage_key()
        return key if self._config is None else f"{key}: {shown_url(self._config.storage_url)}"

    def check_store(self) -> None:
        """Open the store once and close it (before gunicorn forks its workers, which open their own)."""
        self.store().close()


pass_ctx = click.make_pass_decorator(Context)


def shown_url(url: str) -> str:
    """A storage URL as messages show it: the password hidden, a SQLite file's path as it is."""
    if (path := config_mod.sqlite_file(url)) is not None:
        return f"sqlite:///{path}"
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return repr(url)


def store_problem(exc: sa.exc.SQLAlchemyError) -> str:
    """A store error on one line: the driver's exception and the first line of its message."""
    cause: BaseException = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


def _config_given(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # after the subcommand: wins over the one before it and $OAI_CONFIG
        ctx.find_object(Context).config_path = value  # type: ignore[union-attr]


def _verbose_given(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.DEBUG)


def shared_options() -> list[click.Parameter]:
    """--config and --verbose as a subcommand takes them (the group's own come with $OAI_CONFIG)."""
    return [
        click.Option(
            ["-c", "--config", "config_path"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_config_given,
            help=CONFIG_HELP,
        ),
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_verbose_given, help=VERBOSE_HELP),
    ]


class Group(click.Group):
    """The group of either program: every subcommand also takes --config and --verbose after
    its name, and a store that fails under a command (down, full, locked) is one line, exit 1."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {p.name for p in cmd.params}
        cmd.params.extend(p for p in shared_options() if p.name not in taken)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sa.exc.SQLAlchemyError as exc:
            obj = ctx.find_object(Context)
            where = obj.store_named() if obj is not None else config_mod.storage_key()
            raise click.ClickException(f"the record store failed ({where}): {store_problem(exc)}") from None


def group_options(program: str) -> Callable[[F], F]:
    """The options of either program's group: --config (or $OAI_CONFIG), --verbose, --version."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_path",
            envvar=config_mod.ENV_CONFIG,
            type=click.Path(dir_okay=False),
            help=CONFIG_HELP,
        ),
        click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP),
        click.version_option(package_name=DISTRIBUTION, prog_name=program),
    ]

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@group_options("oaiserver")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """An OAI-PMH 2.0 data provider over the shared record store."""
    setup_logging(verbose)
    ctx.obj = Context(config_path)


SHOWN = 20  # identifiers listed before "… and N more"


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--prune",
    is_flag=True,
    help="Also turn local records whose seed file has gone into deleted records, for good (lists them, asks first).",
)
@click.option("--yes", "-y", is_flag=True, help="Prune without asking (needed when there is no terminal to ask).")
@click.option("--dry-run", is_flag=True, help="Only say what would be added, changed and pruned; write nothing.")
@pass_ctx
def ingest(ctx: Context, path: Path | None, prune: bool, yes: bool, dry_run: bool) -> None:
    """Ingest seed documents from PATH (a folder of .txt files, or one file; default: the
    `seeds` folder of the configuration).

    Unchanged files keep their datestamps. Exit code 1 if any file failed to parse
    (the others are still ingested).
    """
    from oaiserver.ingest import ingest as run_ingest
    from oaiserver.ingest import vanished

    if path is None:
        path, named = ctx.config.path(ctx.config.seeds), "seeds: "
    else:
        named = ""
    if not path.exists():
        raise click.BadParameter(f"{named}{path} does not exist", param_hint="'[PATH]'")
    store = ctx.store(existing=dry_run)
    gone = vanished(ctx.config, store, path) if prune else []
    if gone:
        click.echo(f"--prune would make tombstones of {len(gone)} record(s) whose seed file is gone from {path}:")
        for identifier in gone[:SHOWN]:
            click.echo(f"  {identifier}")
        if len(gone) > SHOWN:
            click.echo(f"  … and {len(gone) - SHOWN} more")
        if not (yes or dry_run):
            _confirm_prune(len(gone))
    report = run_ingest(ctx.config, store, path, prune=prune, dry_run=dry_run)
    w = report.written
    if w.added or w.changed:
        store.analyze()
    click.echo(
        ("dry run, nothing written: " if dry_run else "")
        + f"{report.files} file(s): {w.added} added, {w.changed} changed, {w.unchanged} unchanged, "
        f"{len(report.failed)} failed, {report.pruned} pruned"
    )
    for name, reason in report.failed.items():
        click.echo(f"  failed: {name}: {reason}", err=True)
    if report.failed:
        sys.exit(1)


def _confirm_prune(count: int) -> None:
    """Tombstones are for good (harvesters delete their copies): ask on a terminal, never wait on
    a pipe, and stop before anything is written unless the answer is yes."""
    if not sys.stdin.isatty():
        raise click.ClickException(
            "--prune deletes for good and asks first, but there is no terminal to ask: "
            "add --yes to go ahead, or --dry-run to only see what it would do"
        )
    try:
        agreed = click.confirm(f"Make tombstones of these {count} record(s) for good?", default=False)
    except click.Abort:  # end of input or Ctrl-C at the question
        agreed = False
    if not agreed:
        click.echo("Aborted: nothing ingested, nothing deleted.", err=True)
        sys.exit(1)


@main.command()
@click.argument("identifiers", nargs=-1, required=True)
@pass_ctx
def delete(ctx: Context, identifiers: tuple[str, ...]) -> None:
    """Make tombstones of IDENTIFIERS: they stay listed, with status="deleted"."""
    store = ctx.store(existing=True)
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
    store = ctx.store(existing=True)
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

    report = export(ctx.store(existing=True), path)
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
        store = ctx.store()
        report = load(store, path)
    except DumpError as exc:
        raise click.ClickException(str(exc)) from None
    store.analyze()
    click.echo(f"imported {report.records} record(s) ({report.deleted} deleted) and {report.rows} other row(s)")


@main.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@pass_ctx
def init(ctx: Context, path: Path | None, force: bool) -> None:
    """Write a commented configuration file to start from, to PATH (default: the file the other
    commands read: --config, $OAI_CONFIG, else ./config.yaml). An existing file is left alone
    unless --force.
    """
    from oaiserver.starter import CONFIG_TEMPLATE

    target = path or Path(ctx.config_path or "config.yaml")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w" if force else "x", encoding="utf-8") as f:
            f.write(CONFIG_TEMPLATE)
    except FileExistsError:
        raise click.ClickException(f"{target} already exists (--force replaces it)") from None
    except OSError as exc:
        raise click.ClickException(f"{target}: cannot be written: {exc.strerror or exc}") from None
    where = target.resolve()
    option = "" if target == Path("config.yaml") else f" -c {where}"
    click.echo(f"wrote {where}")
    click.echo(
        f"next: edit its repository section, put seed documents (.txt) in {where.parent / 'seeds'}, then run "
        f"`oaiserver{option} ingest` and `oaiserver{option} serve`"
    )


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
    try:
        ctx.check_store()
    except StoreDown as exc:  # down or not there yet: serve 503s until it opens (oaiserver.live)
        click.echo(f"{exc.format_message()}; answering 503 until it opens", err=True)
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
    help="Follow each list's resumption chain for at most this many pages.",
)
@click.option(
    "--max-requests",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Send at most this many requests in all; the checks still to come are then skipped.",
)
@click.option(
    "--delay",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait between requests, to be polite to a partner's server.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for each HTTP response.",
)
@click.option("--json", "json_out", is_flag=True, help="Print the results as JSON (for scripts and CI).")
@click.option(
    "--html",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a readable HTML report to this file: each problem in words, its requests, what to change.",
)
def validate(
    url: str, max_pages: int, max_requests: int, delay: float, timeout: float, json_out: bool, html: Path | None
) -> None:
    """Check the OAI-PMH base URL URL (ours or a partner's) against OAI-PMH 2.0.

    Every response is parsed safely (no DTD, no entities, no network) and validated against the
    official schemas (shipped with oaiserver); Identify, datestamps, the resumption chains,
    ListRecords, GetRecord, selective harvesting (from/until, sets), the errors bad arguments must
    produce and robustness to unreadable arguments are checked, each rule with the spec section it
    comes from. Prints one PASS/FAIL/WARN/SKIP line per rule and a summary (a broken MUST is a
    FAIL, a broken SHOULD a WARN); exit code 1 on any FAIL.
    """
    from oaiserver.validate import url_problem
    from oaiserver.validate import validate as run_validate

    problem = url_problem(url)
    if problem:
        raise click.BadParameter(problem, param_hint="URL")
    code = run_validate(
        url,
        max_pages=max_pages,
        timeout=timeout,
        max_requests=max_requests,
        delay=delay,
        json_out=json_out,
        html=html,
    )
    sys.exit(code)


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
    store = ctx.store()
    w = store.write(records, keep_datestamps=True)
    store.analyze()
    click.echo(f"{count} synthetic record(s): {w.added} added, {w.changed} changed, {w.unchanged} unchanged")
    if SYNTHETIC_SET not in {s.spec for s in cfg.sets}:
        click.echo(
            f"note: the configuration lists no set {SYNTHETIC_SET!r}, so ListSets does not show these "
            "records' sets (demo.yaml lists them)",
            err=True,
        )


if __name__ == "__main__":  # pragma: no cover
    main()
