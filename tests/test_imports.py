"""What importing a module costs: a harvester, and the worker process it starts to convert
pages, must not pay for the web stack (Flask, Jinja) nor the worker for SQLAlchemy; the
server's documented entry points (`from oaiserver import create_app`, gunicorn's
`'oaiserver:create_app()'`) keep working all the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import HERE

from oaiserver.config import Config
from oaiserver.store import Store

WEB_STACK = ("flask", "jinja2", "werkzeug")


def loaded_after(statement: str, names: tuple[str, ...]) -> dict[str, bool]:
    """Which of `names` are in sys.modules after `statement` runs in a fresh interpreter."""
    code = f"import json, sys; {statement}; print(json.dumps({{n: n in sys.modules for n in {list(names)!r}}}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, bool] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize(
    "module", ["oaiserver.store", "oaiserver.records", "harvester.worker", "harvester.harvest", "harvester.cli"]
)
def test_the_store_and_the_harvester_load_no_web_stack(module: str) -> None:
    assert loaded_after(f"import {module}", WEB_STACK) == dict.fromkeys(WEB_STACK, False)


def test_the_harvest_worker_loads_no_sql_toolkit() -> None:
    """The worker converts pages and prepares rows; the harvest's process writes them."""
    assert loaded_after("import harvester.worker", ("sqlalchemy",)) == {"sqlalchemy": False}


def test_the_store_still_loads_sqlalchemy_and_the_app_still_loads_flask() -> None:
    """The checks above can fail: what is needed is still loaded where it is used."""
    assert loaded_after("import oaiserver.store", ("sqlalchemy",)) == {"sqlalchemy": True}
    assert loaded_after("from oaiserver import create_app", ("flask",)) == {"flask": False}
    app = "from oaiserver import create_app; create_app({'storage': {'url': 'sqlite://'}})"
    assert loaded_after(app, ("flask",)) == {"flask": True}


def test_create_app_and_formats_are_still_the_package_s(config: Config, store: Store) -> None:
    """As documented: `from oaiserver import create_app`, and gunicorn's `'oaiserver:create_app()'`
    (an attribute of the imported package); FORMATS is the table of formats the app serves."""
    import oaiserver
    from oaiserver import FORMATS, create_app, oai_dc

    assert oaiserver.create_app is create_app and callable(create_app)
    assert list(FORMATS) == [oai_dc.PREFIX]
    assert (FORMATS[oai_dc.PREFIX].schema, FORMATS[oai_dc.PREFIX].namespace) == (oai_dc.SCHEMA, oai_dc.NAMESPACE)
    assert oaiserver.FORMATS is FORMATS  # built once
    assert create_app(config, store=store).test_client().get("/oai?verb=Identify").status_code == 200


def test_an_unknown_name_of_the_package_is_an_attribute_error() -> None:
    import oaiserver

    assert not hasattr(oaiserver, "no_such_name")
    with pytest.raises(ImportError):
        exec("from oaiserver import no_such_name", {})


def test_importing_the_store_changes_nothing_process_wide() -> None:
    """The store's process-wide switches belong to the code that needs them: importing it leaves
    sqlite3's adapters and the cyclic collector as they were; opening a SQLite store registers
    the adapters (sqlite3 has no per-connection ones)."""
    code = (
        "import gc, json, sqlite3; before = dict(sqlite3.adapters); import oaiserver.store, harvester.harvest;"
        " imported = sqlite3.adapters == before; on = gc.isenabled(); oaiserver.store.Store('sqlite://').close();"
        " print(json.dumps([imported, on, (bool, sqlite3.PrepareProtocol) in sqlite3.adapters]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True, True]
