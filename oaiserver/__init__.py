"""oaiserver: an OAI-PMH 2.0 data provider over the shared record store.

Importing the package loads nothing else: the harvester imports `oaiserver.store` and
`oaiserver.records` (and so this file), and neither it nor its worker process needs Flask.
`create_app` imports the web stack when called; FORMATS is built on first use (PEP 562)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from oaiserver.config import Config
    from oaiserver.formats import MetadataFormat
    from oaiserver.store import Store

    FORMATS: dict[str, MetadataFormat]


def __getattr__(name: str) -> Any:
    if name == "FORMATS":
        return _formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _formats() -> dict[str, MetadataFormat]:
    """FORMATS, the formats the app serves: the registry of oaiserver.formats."""
    from oaiserver.formats import REGISTRY

    return REGISTRY


def create_app(cfg: Config | dict[str, Any] | None = None, store: Store | None = None) -> Flask:
    """The Flask app. `cfg` is a Config, a mapping like config.yaml, or None for config.yaml.

    It never needs the store to be up: without `store`, the store is opened when it can be
    (oaiserver.live), and the app answers 503 until then. However it is served, its log lines
    reach a handler (oaiserver.logs) and, under gunicorn, its metrics count every worker."""
    import threading

    from flask import Flask

    from oaiserver import config as config_mod
    from oaiserver import logs, metrics, proxy
    from oaiserver.live import Live

    logs.reach_a_handler()
    metrics.share_across_workers()
    if cfg is None:
        cfg = config_mod.load()
    elif isinstance(cfg, dict):
        cfg = config_mod.from_mapping(cfg)
    app = Flask(__name__)
    app.extensions["oai_list_limiter"] = threading.BoundedSemaphore(cfg.max_concurrent_lists)
    app.extensions["oai_live"] = Live(cfg, _formats(), store)
    from oaiserver import web

    app.register_blueprint(web.bp)
    app.wsgi_app = web.OaiGet(app)  # type: ignore[method-assign]
    if prefix := proxy.prefix_of(cfg.site_url):  # base_url under a path, behind a proxy: links keep it
        app.wsgi_app = proxy.PrefixMount(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app
