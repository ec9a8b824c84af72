"""oaiserver: an OAI-PMH 2.0 data provider over the shared record store."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from flask import Flask

from oaiserver import config as config_mod
from oaiserver import oai_dc, proxy
from oaiserver.protocol import MetadataFormat, Repository
from oaiserver.store import Store
from oaiserver.tokens import Tokens

FORMATS = {oai_dc.PREFIX: MetadataFormat(oai_dc.PREFIX, oai_dc.SCHEMA, oai_dc.NAMESPACE)}


def token_secret(cfg: config_mod.Config, store: Store) -> str:
    """The configured secret, else one generated once and kept in the store, so every
    worker, instance and restart that shares the store accepts the same tokens."""
    return cfg.secret or store.ensure_setting("token_secret", secrets.token_urlsafe(32))


def create_app(cfg: config_mod.Config | dict[str, Any] | None = None, store: Store | None = None) -> Flask:
    """The Flask app. `cfg` is a Config, a mapping like config.yaml, or None for config.yaml."""
    if cfg is None:
        cfg = config_mod.load()
    elif isinstance(cfg, dict):
        cfg = config_mod.from_mapping(cfg)
    app = Flask(__name__)
    store = store or Store(cfg.storage_url)
    app.extensions["oai_store"] = store
    app.extensions["oai_list_limiter"] = threading.BoundedSemaphore(cfg.max_concurrent_lists)
    app.extensions["oai_repository"] = Repository(
        config=cfg,
        store=store,
        tokens=Tokens(token_secret(cfg, store), cfg.token_lifetime),
        formats=FORMATS,
        sets=cfg.all_sets,
    )
    from oaiserver import web

    app.register_blueprint(web.bp)
    if prefix := proxy.prefix_of(cfg.site_url):  # base_url under a path, behind a proxy: links keep it
        app.wsgi_app = proxy.PrefixMount(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app
