"""oaiserver: an OAI-PMH 2.0 data provider over the shared record store."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask

from oaiserver import config as config_mod
from oaiserver import oai_dc, proxy
from oaiserver.protocol import MetadataFormat
from oaiserver.store import Store

FORMATS = {oai_dc.PREFIX: MetadataFormat(oai_dc.PREFIX, oai_dc.SCHEMA, oai_dc.NAMESPACE)}


def create_app(cfg: config_mod.Config | dict[str, Any] | None = None, store: Store | None = None) -> Flask:
    """The Flask app. `cfg` is a Config, a mapping like config.yaml, or None for config.yaml.

    It never needs the store to be up: without `store`, the store is opened when it can be
    (oaiserver.live), and the app answers 503 until then. However it is served, its log lines
    reach a handler (oaiserver.logs) and, under gunicorn, its metrics count every worker."""
    from oaiserver import logs, metrics
    from oaiserver.live import Live

    logs.reach_a_handler()
    metrics.share_across_workers()
    if cfg is None:
        cfg = config_mod.load()
    elif isinstance(cfg, dict):
        cfg = config_mod.from_mapping(cfg)
    app = Flask(__name__)
    app.extensions["oai_list_limiter"] = threading.BoundedSemaphore(cfg.max_concurrent_lists)
    app.extensions["oai_live"] = Live(cfg, FORMATS, store)
    from oaiserver import web

    app.register_blueprint(web.bp)
    if prefix := proxy.prefix_of(cfg.site_url):  # base_url under a path, behind a proxy: links keep it
        app.wsgi_app = proxy.PrefixMount(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app
