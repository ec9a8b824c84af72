"""What people see: the views in headless Chromium against a live server, with screenshots.

Screenshots go to test-output/screenshots/. Chromium comes from Debian (`make test`
installs it when run as root with apt-get); without it these tests skip with the reason
(conftest.browser_skip_reason), except in CI, where they fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, Clock, LiveServer, browser_skip_reason, make_config, make_record

from oaiserver import create_app
from oaiserver.records import Record
from oaiserver.store import Store

SHOTS = HERE.parent / "test-output" / "screenshots"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2"> \x07bell'

SKIP = browser_skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store]]:
    """A live server with 25 records (page size 10), one deleted, one hostile, one with full text."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.sqlite3'}"
    clock = Clock()
    store = Store(url, clock=clock)
    records: list[Record] = [make_record(f"{i:03d}", f"Cable number {i}", sets=("a",)) for i in range(23)]
    records.append(make_record("hostile", HOSTILE, description=HOSTILE))
    seeded = make_record("seed", "Telegram on the border question", creator="Ministry of Foreign Affairs")
    seeded.fulltext = "To the Foreign Affairs Office:\nPlease report.\nMinistry of Foreign Affairs"
    records.append(seeded)
    store.write(records)
    clock.tick()
    store.delete(["oai:test.example.org:005"])
    clock.tick()
    with LiveServer(None) as server:
        cfg = make_config(url, repository__base_url=server.url, repository__description="A test repository.")
        server.server.app = create_app(cfg, store=store)
        yield server.url.removesuffix("/oai"), store
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_home_page(browser: Any, site: tuple[str, Store]) -> None:
    root, _ = site
    browser.get(root + "/")
    body = text(browser)
    assert "Test Repository" in browser.title
    assert "A test repository." in body
    assert "24\nrecords" in body and "1\ndeleted" in body
    assert "Set A" in body
    shot(browser, "home")


def test_list_records_view_follows_the_resumption_link(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    browser.get(root + "/oai/view?verb=ListRecords&metadataPrefix=oai_dc")
    first = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert len(first) == 10 and first[0] == "oai:test.example.org:000"
    assert "records 1–10 of 25" in text(browser)
    shot(browser, "list-records")
    browser.find_element(By.LINK_TEXT, "Next page").click()
    second = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert len(second) == 10 and not set(first) & set(second)
    assert "records 11–20 of 25" in text(browser)
    shot(browser, "list-records-page-2")
    raw = browser.find_element(By.LINK_TEXT, "raw XML").get_attribute("href")
    assert "/oai?verb=ListRecords&resumptionToken=" in raw


def test_deleted_record_is_marked(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    browser.get(root + "/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:005")
    article = browser.find_element(By.CSS_SELECTOR, "article.is-deleted")
    assert "deleted" in article.text and "title" not in article.text
    shot(browser, "deleted-record")


def test_errors_are_explained_in_words(browser: Any, site: tuple[str, Store]) -> None:
    root, _ = site
    browser.get(root + "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&from=yesterday")
    body = text(browser)
    assert "badArgument" in body and "has a value of the wrong form" in body
    shot(browser, "error")


def test_landing_page(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, store = site
    record = store.get("oai:test.example.org:seed")
    assert record is not None
    browser.get(root + "/records/oai:test.example.org:seed")
    body = text(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Telegram on the border question"
    assert "Ministry of Foreign Affairs" in body and "Please report." in body
    assert browser.find_element(By.LINK_TEXT, "GetRecord view")
    shot(browser, "landing-page")


def test_withdrawn_landing_page(browser: Any, site: tuple[str, Store]) -> None:
    import requests

    root, _ = site
    assert requests.get(root + "/records/oai:test.example.org:005", timeout=10).status_code == 410
    browser.get(root + "/records/oai:test.example.org:005")
    assert "This record was withdrawn on" in text(browser)
    shot(browser, "withdrawn")


@pytest.mark.parametrize(
    "path",
    [
        "/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:hostile",
        "/records/oai:test.example.org:hostile",
    ],
    ids=["GetRecord view", "landing page"],
)
def test_hostile_content_shows_as_text(browser: Any, site: tuple[str, Store], path: str) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    browser.get(root + path)
    assert browser.execute_script("return window.pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    assert "<script>window.pwned=1</script>" in text(browser)
    shot(browser, "hostile-" + path.split("/")[1])
