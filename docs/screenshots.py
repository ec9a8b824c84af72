"""The README's screenshots (`make screenshots`): the demo of `make demo`, with a partner
harvested for real, served and shown in headless Chromium; the PNGs are written here, in docs/.

What it does, in a temporary folder (data/ and the demo's store are left alone):
1. A partner repository, `archive`: another oaiserver, holding 300 synthetic records of its own
   (identifiers oai:archive.example.org:…), served on a free port.
2. The demo (demo.yaml: the seeds and DEMO_RECORDS synthetic records) with two partners: `archive`
   (every 6 hours), harvested twice (a full run, then an incremental one), and `offline`, whose
   address refuses connections, harvested once (a failed run, with its reason).
3. The demo served on 127.0.0.1:5001 (its baseURL in demo.yaml; another free port if that one is
   taken), and each page opened in Chromium at its width and saved.

Needs chromium and chromedriver (`make browser` installs them where it can) and the dev tools
(selenium), which `make screenshots` installs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import requests
import yaml

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
DEMO_PORT = 5001
DEMO_RECORDS = int(os.environ.get("DEMO_RECORDS", "3000"))
PARTNER_RECORDS = 300
SEED = "oai:cables.example.org:000_44774e4221cac103"  # the seed document, for the landing page


class Shot(NamedTuple):
    """One screenshot: its file in docs/, the page, the screen's width and height, and whether
    the query form is opened first."""

    name: str
    path: str
    width: int
    height: int
    open_form: bool = False


SHOTS = (
    Shot("home", "/", 1280, 1000),
    Shot("list-records", "/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 1280, 1000),
    Shot("list-records-phone", "/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 390, 844),
    Shot("query-form", "/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 1280, 700, open_form=True),
    Shot("landing-page", f"/records/{SEED}", 1280, 1000),
    Shot("raw-xml", "/oai?verb=ListRecords&metadataPrefix=oai_dc", 1280, 1000),
    Shot("changes", "/changes", 1280, 1000),
    Shot("search", "/search?q=border+cable", 1280, 1000),
    Shot("partner", "/partners/archive", 1280, 1400),
    Shot("partner-phone", "/partners/offline", 390, 1500),
)


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens there, else any free port of 127.0.0.1."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def environment() -> dict[str, str]:
    """Ours, without the variables that would point the commands at another store or file."""
    return {k: v for k, v in os.environ.items() if k not in ("OAI_STORAGE_URL", "OAI_CONFIG")}


def command(program: str, config: Path, *args: str) -> None:
    """`oaiserver` or `harvester` with `config`; its output goes to ours."""
    run = [sys.executable, "-m", program, "--config", str(config), *args]
    print("$", program, *args, flush=True)
    done = subprocess.run(run, cwd=ROOT, env=environment(), check=False)
    if program == "oaiserver" and done.returncode != 0:
        raise SystemExit(f"{program} {' '.join(args)} failed ({done.returncode})")


def write_config(folder: Path, name: str, changes: dict[str, Any]) -> Path:
    """demo.yaml with `changes` (top-level keys replaced, `repository` merged), in `folder`."""
    data = yaml.safe_load((ROOT / "demo.yaml").read_text(encoding="utf-8"))
    data["repository"] = {**data["repository"], **changes.pop("repository", {})}
    data.update(changes)
    data["seeds"] = str(ROOT / "seeds")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def serving(config: Path, port: int) -> Iterator[str]:
    """`oaiserver serve` on 127.0.0.1:`port` until the block ends; yields the site's root."""
    root = f"http://127.0.0.1:{port}"
    run = [sys.executable, "-m", "oaiserver", "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}"]
    log = (config.parent / f"{config.stem}-serve.log").open("wb")  # its log lines: one per request
    server = subprocess.Popen(run, cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{root}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"oaiserver serve ended ({server.returncode}); see {log.name}")
            time.sleep(0.2)
        else:
            raise SystemExit(f"oaiserver serve did not answer at {root} within a minute")
        yield root
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def take(driver: Any, root: str, shot: Shot) -> Path:
    """Open the page as a person does (a navigation: /oai gets its CSS view) and save the screen."""
    from selenium.webdriver.common.by import By

    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": shot.width, "height": shot.height, "deviceScaleFactor": 1, "mobile": shot.width < 600},
    )
    driver.get(root + shot.path)
    if shot.open_form:
        driver.find_element(By.CSS_SELECTOR, "details.query > summary").click()
    path = DOCS / f"{shot.name}.png"
    driver.save_screenshot(str(path))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        folder = Path(tmp)
        partner_port, demo_port = free_port(), free_port(DEMO_PORT)
        archive = write_config(
            folder,
            "archive",
            {
                "repository": {
                    "name": "Archive (a partner, with synthetic records)",
                    "base_url": f"http://127.0.0.1:{partner_port}/oai",
                    "identifier": "archive.example.org",
                },
                "storage": {"url": f"sqlite:///{folder / 'archive.sqlite3'}"},
            },
        )
        command("oaiserver", archive, "synthetic", str(PARTNER_RECORDS))
        demo = write_config(
            folder,
            "demo",
            {
                "repository": {"base_url": f"http://127.0.0.1:{demo_port}/oai"},
                "storage": {"url": f"sqlite:///{folder / 'demo.sqlite3'}"},
                "partners": [
                    {
                        "name": "archive",
                        "base_url": f"http://127.0.0.1:{partner_port}/oai",
                        "schedule": {"interval": {"hours": 6}},
                    },
                    {"name": "offline", "base_url": f"http://127.0.0.1:{free_port()}/oai"},
                ],
            },
        )
        command("oaiserver", demo, "ingest")
        command("oaiserver", demo, "synthetic", str(DEMO_RECORDS))
        with serving(archive, partner_port):
            command("harvester", demo, "run", "--retries", "0")
            command("harvester", demo, "run", "archive")
        with serving(demo, demo_port) as root:
            driver = chromium()
            try:
                for shot in SHOTS:
                    print("wrote", take(driver, root, shot).relative_to(ROOT), flush=True)
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
