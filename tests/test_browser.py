"""What people see: the views in headless Chromium against a live server, at a desktop's width
(1280 px) and a phone's (390 px and 360 px), with screenshots.

Each page type is checked for its content, for fitting the screen's width (no sideways
scrolling), for axe-core's accessibility rules and for working with the keyboard alone.
Screenshots go to test-output/screenshots/. Chromium comes from Debian and axe-core from the
npm registry, pinned by tests/browser/package-lock.json (`make browser` installs both);
without them these tests skip with the reason, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import HERE, Clock, LiveServer, browser_skip_reason, make_config, make_record

from harvester.completeness import COMPLETE, SHORT, Completeness
from harvester.harvest import Counts
from oaiserver import create_app, formats
from oaiserver.records import Record
from oaiserver.store import Store, finish_run, start_run

SHOTS = HERE.parent / "test-output" / "screenshots"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
AXE = HERE / "browser" / "node_modules" / "axe-core" / "axe.min.js"
HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2"> \x07bell'
LONG_ID = "oai:test.example.org:" + "a-very-long-local-identifier-without-any-space-" * 3 + "end"
PARTNER_DATESTAMP = "2019-05-06T07:08:09Z"
DESKTOP, PHONE, SMALL_PHONE = 1280, 390, 360
SCREEN_HEIGHT = 800


def axe_skip_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why axe-core cannot be loaded into pages here, or None (always None with CI set: a CI
    without it fails)."""
    if AXE.exists() or environ.get("CI"):
        return None
    return f"{AXE.relative_to(HERE.parent)} is missing: `make browser` installs axe-core with npm from tests/browser/"


SKIP = browser_skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store]]:
    """A live server with 60 records (pages of 100, so views show 50): sets a, a:b and c, one
    deleted, one hostile, one with full text, one with a very long identifier, and a
    withdrawal harvested from a partner."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.sqlite3'}"
    clock = Clock()
    store = Store(url, clock=clock)
    records: list[Record] = [
        make_record(f"{i:03d}", f"Cable number {i} on the border question", sets=("a", "a:b") if i % 3 else ("a",))
        for i in range(56)
    ]
    records.append(make_record("hostile", HOSTILE, description=HOSTILE, sets=("c",)))
    seeded = make_record("seed", "Telegram on the border question", creator="Ministry of Foreign Affairs")
    seeded.fulltext = "To the Foreign Affairs Office:\nPlease report.\nMinistry of Foreign Affairs"
    records.append(seeded)
    long_one = make_record("x", "A record whose identifier is long", sets=("c",))
    long_one.identifier = LONG_ID
    records.append(long_one)
    store.write(records)
    clock.tick()
    store.delete(["oai:test.example.org:005"])
    clock.tick()
    gone = Record(
        identifier="oai:partner.example.org:gone",
        deleted=True,
        source="partner",
        provenance={"baseURL": "https://partner.example.org/oai", "datestamp": PARTNER_DATESTAMP},
        metadata=formats.rendered([], deleted=True),
    )
    store.write([gone])
    clock.tick()
    record_runs(store, clock)
    with LiveServer(None) as server:
        cfg = make_config(
            url,
            repository__base_url=server.url,
            repository__description="A test repository.",
            server__page_size=100,
            partners=[
                {
                    "name": "partner",
                    "base_url": "https://partner.example.org/oai",
                    "schedule": {"cron": "0 3 * * *"},
                    "sets": ["history", "politics:" + "a-very-long-set-spec-" * 3],
                }
            ],
        )
        server.server.app = create_app(cfg, store=store)
        yield server.url.removesuffix("/oai"), store
    store.close()


LONG_REASON = (
    "HTTP 500 from https://partner.example.org/oai?verb=ListRecords&resumptionToken="
    + "a-token-without-any-space-" * 6
    + " after 3 attempts"
)


def record_runs(store: Store, clock: Clock) -> None:
    """The partner's history, as the harvester records it: a complete run, a short one and a
    failed one with a long reason, latest last."""
    complete = Completeness(COMPLETE, 40, 40, 40).as_dict()
    short = Completeness(SHORT, 500, 12, 12, shortfall=488).as_dict()
    for outcome, counts, reason in (
        ("success", {**asdict(Counts(pages=4, received=40, added=39, deleted=1)), "completeness": complete}, None),
        ("success", {**asdict(Counts(pages=3, received=12, changed=12)), "completeness": short}, None),
        ("failed", asdict(Counts()), LONG_REASON),
    ):
        started = clock.tick(3600)
        run = start_run(store, "partner", "test", started=started, from_date=None, resumed=False)
        finish_run(store, run, "partner", finished=clock.tick(95), outcome=outcome, reason=reason, counts=counts)


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
        "--hide-scrollbars",
        f"--window-size={DESKTOP},{SCREEN_HEIGHT}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def arrived(driver: Any, part: str) -> None:
    """Wait until the browser shows the page at a URL holding `part`: a click or a key that leads
    to another page returns before that page is there, and what is read at once may be of the
    page left. A deadline against a hang, not a speed."""
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: part in d.current_url)


def at(driver: Any, width: int) -> None:
    """The viewport of a screen `width` CSS pixels wide: a phone's (viewport meta tag obeyed)
    below 600."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": SCREEN_HEIGHT, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def shot(driver: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def text(driver: Any) -> str:
    """The page's text as shown (an XML document's text content: it has no body)."""
    return str(
        driver.execute_script("return document.body ? document.body.innerText : document.documentElement.textContent")
    )


def overflow(driver: Any) -> str | None:
    """None when the page fits the viewport's width; else the widths and the widest elements."""
    fits = driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    if fits:
        return None
    return str(
        driver.execute_script(
            "const w = window.innerWidth; return [document.documentElement.scrollWidth, w, "
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)"
            ".slice(0, 5).map(e => e.tagName + '.' + e.className)]"
        )
    )


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page (WCAG 2.x A and AA, and best practices). The source is
    evaluated through the DevTools protocol, which the pages' script-free CSP does not govern."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}); CI is set, so this fails rather than skips")
    driver.execute_cdp_cmd("Runtime.evaluate", {"expression": AXE.read_text(encoding="utf-8")})
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => "
        "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))),"
        " e => done([{id: 'axe-error', help: String(e)}]));"
    )
    return list(found)


def tab_order(driver: Any, limit: int = 400) -> tuple[list[str], list[str]]:
    """(what Tab reaches, in order, from the top until focus leaves the page or comes back;
    every link and control shown on the page), each as a short description."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    describe = (
        "const e = arguments[0]; return e ? e.tagName + '|' + (e.getAttribute('href') || e.name || '')"
        " + '|' + e.textContent.trim().slice(0, 40) : '';"
    )
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached: list[str] = []
    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        here = driver.execute_script("return document.activeElement")
        tag = driver.execute_script("return document.activeElement ? document.activeElement.tagName : ''")
        if tag in ("BODY", "HTML", "") or (reached and driver.execute_script(describe, here) == reached[0]):
            break
        reached.append(driver.execute_script(describe, here))
    wanted = driver.execute_script(
        "const d = e => e.tagName + '|' + (e.getAttribute('href') || e.name || '') + '|'"
        " + e.textContent.trim().slice(0, 40);"
        "return [...document.querySelectorAll('a[href], summary, button, input:not([type=hidden]), select')]"
        ".filter(e => e.checkVisibility()).map(d)"
    )
    return reached, list(wanted)


# ---- every page type, at each width -------------------------------------------------------------

PAGES: dict[str, tuple[str, int, str]] = {
    # name: (path, HTTP status, a text the page must show)
    "home": ("/", 200, "Records listed"),
    "identify": ("/oai/view?verb=Identify", 200, "Repository identifier"),
    "formats": ("/oai/view?verb=ListMetadataFormats", 200, "http://www.openarchives.org/OAI/2.0/oai_dc/"),
    "sets": ("/oai/view?verb=ListSets", 200, "Set A:B"),
    "identifiers": ("/oai/view?verb=ListIdentifiers&metadataPrefix=oai_dc", 200, "records 1–50 of 60"),
    "records": ("/oai/view?verb=ListRecords&metadataPrefix=oai_dc", 200, "records 1–50 of 60"),
    "get-record": (f"/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier={LONG_ID}", 200, LONG_ID),
    "error": ("/oai/view?verb=ListRecords&metadataPrefix=oai_dc&from=yesterday", 200, "wrong form"),
    "landing": ("/records/oai:test.example.org:seed", 200, "Please report."),
    "withdrawn": ("/records/oai:test.example.org:005", 410, "This record was withdrawn on"),
    "harvested-withdrawal": ("/records/oai:partner.example.org:gone", 410, PARTNER_DATESTAMP),
    "not-found": ("/records/oai:test.example.org:nothing", 404, "No record here has the identifier"),
    "changes": ("/changes?since=2000-01-01", 200, "60\nrecords changed or deleted"),
    "search": ("/search?q=border+question", 200, "57 records, latest added first"),
    "search-hostile": ("/search?q=%22NEAR(%20-x%20*%20%27%20OR%201%3D1%20--%00", 200, "No record matches"),
    "search-empty": ("/search", 200, "Type words of a title"),
    "partner": ("/partners/partner", 200, "short by 488 (500 announced, 12 stored)"),
    "partner-changes": ("/changes?since=2000-01-01&partner=partner", 200, "at partner partner"),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_fits_every_screen_and_passes_axe(browser: Any, site: tuple[str, Store], name: str) -> None:
    if (reason := axe_skip_reason()) is not None:
        pytest.skip(reason)
    root, _ = site
    path, status, shows = PAGES[name]
    assert requests.get(root + path, timeout=10).status_code == status
    for width in (DESKTOP, PHONE, SMALL_PHONE):
        at(browser, width)
        browser.get(root + path)
        body = text(browser)
        assert shows.lower() in body.lower(), (name, width)
        assert browser.execute_script("return document.compatMode") == "CSS1Compat"
        assert browser.title.strip() and browser.execute_script("return document.querySelector('h1').textContent")
        assert overflow(browser) is None, (name, width, overflow(browser))
        if width != SMALL_PHONE:
            violations = axe_violations(browser)
            assert violations == [], (name, width, json.dumps(violations, indent=1))
            shot(browser, f"{name}-{width}")


@pytest.mark.parametrize(
    "name", ["home", "records", "get-record", "landing", "not-found", "changes", "search", "partner"]
)
def test_each_page_works_with_the_keyboard_alone(browser: Any, site: tuple[str, Store], name: str) -> None:
    """Tab reaches every link and control, in order, with no trap; the first stop skips to the content."""
    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + PAGES[name][0])
    reached, wanted = tab_order(browser)
    assert reached == wanted, name
    assert reached[0].startswith("A|#main|Skip to the content")


def test_a_record_row_opens_and_leads_on_with_the_keyboard(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + PAGES["records"][0])
    first = browser.find_element(By.CSS_SELECTOR, "ol.records > li details")
    summary = first.find_element(By.TAG_NAME, "summary")
    summary_focused = False
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element == summary:
            summary_focused = True
            break
    assert summary_focused
    assert browser.execute_script("return getComputedStyle(arguments[0]).outlineStyle", summary) != "none"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert first.get_attribute("open") is not None
    assert "Cable number 0 on the border question" in first.text and "title" in first.text
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.text == "landing page"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    arrived(browser, "/records/")
    assert browser.current_url.endswith("/records/oai:test.example.org:000")


# ---- lists that scan --------------------------------------------------------------------------


def test_a_page_of_50_records_fits_in_a_few_screens(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    heights = {}
    for width in (DESKTOP, PHONE):
        at(browser, width)
        browser.get(root + PAGES["records"][0])
        rows = browser.find_elements(By.CSS_SELECTOR, "ol.records > li")
        assert len(rows) == 50
        heights[width] = browser.execute_script("return document.documentElement.scrollHeight")
    assert heights[DESKTOP] < 4 * SCREEN_HEIGHT, heights
    assert heights[PHONE] < 12 * SCREEN_HEIGHT, heights


def test_count_filters_and_paging_at_the_top_and_the_bottom(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&set=a")
    top, bottom = browser.find_elements(By.CSS_SELECTOR, "nav.pager")
    for pager in (top, bottom):
        assert "records 1–50 of 56 (deleted included)" in pager.text and "set a" in pager.text
    assert top.location["y"] < SCREEN_HEIGHT  # seen without scrolling
    shot(browser, "list-records")
    bottom.find_element(By.LINK_TEXT, "Next page").click()
    arrived(browser, "resumptionToken=")
    top = browser.find_element(By.CSS_SELECTOR, "nav.pager")
    assert "records 51–56 of 56" in top.text and "set a" in top.text
    assert "/oai?verb=ListRecords&resumptionToken=" in browser.find_element(By.LINK_TEXT, "raw XML").get_attribute(
        "href"
    )
    shot(browser, "list-records-page-2")


def test_the_form_asks_what_a_person_chooses(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    root, _ = site
    at(browser, PHONE)
    browser.get(root + "/oai/view?verb=Identify")
    browser.find_element(By.CSS_SELECTOR, "details.query > summary").click()  # closed: a page shows records first
    Select(browser.find_element(By.NAME, "verb")).select_by_visible_text("ListIdentifiers")
    Select(browser.find_element(By.NAME, "set")).select_by_value("c")
    browser.find_element(By.NAME, "until").send_keys("2030-01-01")
    shot(browser, "form-390")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    arrived(browser, "verb=ListIdentifiers")
    assert browser.find_element(By.TAG_NAME, "h1").text == "ListIdentifiers"
    rows = browser.find_elements(By.CSS_SELECTOR, "ol.records > li")
    assert {r.get_attribute("data-identifier") for r in rows} == {"oai:test.example.org:hostile", LONG_ID}
    raw = browser.find_element(By.LINK_TEXT, "raw XML").get_attribute("href")
    assert raw.endswith("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc&set=c&until=2030-01-01")


# ---- /oai itself in a browser ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_raw_xml_is_readable_without_the_xslt_banner(browser: Any, site: tuple[str, Store], width: int) -> None:
    root, _ = site
    at(browser, width)
    browser.get(root + "/oai?verb=ListRecords&metadataPrefix=oai_dc&set=c")
    body = text(browser)
    assert "XSLT" not in body and "being removed" not in body
    assert "A record whose identifier is long" in body and "Cable" not in body
    assert browser.execute_script("return getComputedStyle(document.documentElement).display") == "block"
    note = browser.execute_script("return getComputedStyle(document.documentElement, '::before').content")
    assert "put /view after /oai" in note
    labels = browser.execute_script(
        "return getComputedStyle(document.getElementsByTagNameNS('http://purl.org/dc/elements/1.1/', 'title')[0],"
        " '::before').content"
    )
    assert labels == '"title: "'
    assert overflow(browser) is None, overflow(browser)
    shot(browser, f"raw-xml-{width}")


# ---- what was there before ----------------------------------------------------------------------


def test_home_page(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + "/")
    body = text(browser)
    assert "Test Repository" in browser.title and "A test repository." in body
    assert "60\nrecords listed" in body and "2\ndeleted" in body and "58\nlive" in body
    assert "Set A" in body
    shot(browser, "home")
    at(browser, PHONE)
    browser.get(root + "/")
    cells = browser.find_elements(By.CSS_SELECTOR, "table.columns td")
    assert all(c.location["x"] < 40 for c in cells)  # one cell a line, each labelled
    heads = browser.find_elements(By.CSS_SELECTOR, "table.columns thead")
    assert heads and all(h.size["height"] <= 1 for h in heads)  # read by screen readers, not shown
    label = "return getComputedStyle(arguments[0], '::before').content"
    partners = browser.find_elements(By.XPATH, "//h2[.='Partners']/following-sibling::table[1]//td")
    assert browser.execute_script(label, partners[-1]) == '"Outcome: "'
    assert [c.get_attribute("data-label") for c in partners[-3:]] == ["Partner", "Last harvest", "Outcome"]
    shot(browser, "home-390")


def test_deleted_record_is_marked(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + "/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:005")
    article = browser.find_element(By.CSS_SELECTOR, "article.is-deleted")
    assert "deleted" in article.text and "title" not in article.text
    shot(browser, "deleted-record")


def test_landing_page(browser: Any, site: tuple[str, Store]) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + "/records/oai:test.example.org:seed")
    body = text(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Telegram on the border question"
    assert "Ministry of Foreign Affairs" in body and "Please report." in body
    assert browser.find_element(By.LINK_TEXT, "GetRecord view")
    shot(browser, "landing-page")


@pytest.mark.parametrize(
    "path",
    [
        "/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:hostile",
        "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&set=c",
        "/records/oai:test.example.org:hostile",
        "/oai?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:hostile",
    ],
    ids=["GetRecord view", "list view", "landing page", "raw XML"],
)
def test_hostile_content_shows_as_text(browser: Any, site: tuple[str, Store], path: str) -> None:
    from selenium.webdriver.common.by import By

    root, _ = site
    at(browser, DESKTOP)
    browser.get(root + path)
    for summary in browser.find_elements(By.CSS_SELECTOR, "summary"):
        summary.click()
    assert browser.execute_script("return window.pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    assert "<script>window.pwned=1</script>" in text(browser)


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_the_header_search_box_finds_records(browser: Any, site: tuple[str, Store], width: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    root, _ = site
    at(browser, width)
    browser.get(root + "/oai/view?verb=Identify")
    box = browser.find_element(By.CSS_SELECTOR, "header form[role=search] input[name=q]")
    box.send_keys("telegram minis" + Keys.ENTER)
    arrived(browser, "/search?")
    assert "1 record, latest added first" in text(browser)
    assert browser.find_element(By.CSS_SELECTOR, "ol.hits a.title").text == "Telegram on the border question"
    assert overflow(browser) is None
    shot(browser, f"search-typed-{width}")
