"""The ops page in a real headless Chromium, on a real worker fed with simulated traffic.

Simulator → embedded broker → ``touchpath worker`` (ingest, landing, embedded ClickHouse,
web server) → ``/dashboard`` in Chromium (selenium + chromium-driver). What the page shows
must be what the named queries return through the worker's query API, panel by panel, for
whichever tables hold data (journeys, pain points and care actions appear as the worker
produces them). Saves ``docs/ops-page.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` and pip's ``selenium``; without them the
test is skipped, except in CI (``CI`` set), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.simulator import SimConfig, publish, simulate
from streams.web.params import with_defaults

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "ops-page.png"
#: What the page sends with its default window (30 days), as the query string does: text.
PAGE_WINDOW = {"days": "30", "hours": "720", "period_days": "30", "limit": "20"}
#: Panel (element id) -> the named query whose rows it shows.
PANELS = {
    "volume": "live_volume_by_channel",
    "dead": "dead_letter_rate",
    "pain": "top_pain_points",
    "funnel": "care_funnel",
    "score": "experience_score_by_tier",
    "map": "journey_map",
    "worst": "worst_journeys",
}


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (required in CI: apt-get install -y chromium chromium-driver)")
    pytest.skip(f"{why}; install: apt-get install -y chromium chromium-driver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven through chromium-driver."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        _unavailable("chromium / chromedriver not found")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(pred: Callable[[], Any], timeout: float, what: str, worker: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        if worker is not None:
            assert worker.alive(), f"worker died:\n{worker.log()[-3000:]}"
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _api(worker: Any, name: str, **extra: str) -> list[dict[str, Any]]:
    """The rows the page gets: same parameters, through the worker's query API."""
    params = with_defaults(name, {**PAGE_WINDOW, **extra})
    r = worker.client.http.get(f"/api/query/{name}", params=params)
    assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:300]}"
    return r.json()["rows"]


def _attr(driver: Any, css: str, name: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute(name) if found else None


def _all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _settled(worker: Any, expected_events: int, expected_dead: int) -> bool:
    o = _api(worker, "overview")[0]
    return o["events"] >= expected_events and o["dead_letters"] >= expected_dead


def test_ops_page_shows_what_the_named_queries_return(worker_factory, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    worker = worker_factory()
    sim = simulate(SimConfig(customers=80, days=3, seed=21, malformed_rate=0.03))
    m = sim.manifest
    s = worker.settings
    sent = publish(
        sim.records,
        bootstrap=worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=s.topic(s.topic_raw),
        rate=None,
        client_config=None,
    )
    assert sent == m["events_total"]
    _wait(
        lambda: _settled(worker, m["events_valid"], m["events_malformed"]),
        180,
        "the simulated traffic in ClickHouse",
        worker,
    )
    # let whatever the worker derives from it (journeys, pain points, ...) land and settle
    snapshot = None
    for _ in range(60):
        now = {name: _api(worker, name) for name in ("overview", *PANELS.values())}
        if now == snapshot:
            break
        snapshot = now
        time.sleep(2.0)

    browser.get(worker.base_url + "/dashboard")
    assert "touchpath" in browser.title, browser.page_source[:500]
    _wait(lambda: _attr(browser, "#status", "data-state") == "ok", 30, "the first refresh")
    errors = _attr(browser, "#error", "hidden")
    assert errors is not None, browser.find_element(By.ID, "error").text

    # tiles
    overview = _api(worker, "overview")[0]
    assert overview["events"] == m["events_valid"]
    assert overview["dead_letters"] == m["events_malformed"]
    tile = browser.find_element(By.CSS_SELECTOR, '[data-tile="events"] .value')
    assert tile.get_attribute("data-raw") == str(overview["events"])
    assert tile.text == f"{overview['events']:,}"
    rate = browser.find_element(By.CSS_SELECTOR, '[data-tile="dead_letter_rate"] .value')
    assert float(rate.get_attribute("data-raw")) == pytest.approx(overview["dead_letter_rate"])
    assert rate.text == f"{100 * overview['dead_letter_rate']:.2f}%"
    for name in ("pain_points", "care_actions", "journeys"):
        value = browser.find_element(By.CSS_SELECTOR, f'[data-tile="{name}"] .value')
        assert value.get_attribute("data-raw") == str(overview[name]), name
    repeat = _api(worker, "repeat_contact_rate")[0]
    shown = _attr(browser, '[data-tile="repeat_contact_rate"] .value', "data-raw")
    assert float(shown or "nan") == pytest.approx(repeat["rate"])

    # every panel shows as many rows as its query returns (an empty state when none)
    for panel, name in PANELS.items():
        rows = _api(worker, name)
        assert _attr(browser, f"#{panel}", "data-rows") == str(len(rows)), (panel, name)
        if not rows:
            assert _all(browser, f"#{panel} .empty"), f"{panel}: no empty state shown"
    reasons = _api(worker, "care_suppressions")
    assert _attr(browser, "#funnel .reasons", "data-rows") == str(len(reasons))

    # volume per channel: the legend totals are the sums of the hourly rows
    totals: dict[str, int] = {}
    for r in _api(worker, "live_volume_by_channel"):
        totals[r["channel"]] = totals.get(r["channel"], 0) + r["events"]
    shown_totals = {
        k.get_attribute("data-channel"): int(
            k.find_element(By.CLASS_NAME, "total").text.replace(",", "")
        )
        for k in _all(browser, "#volume .legend .key")
    }
    assert shown_totals == totals
    assert sum(totals.values()) == m["events_valid"]  # the 30-day window holds the 3 days

    # dead letters by reason: same reasons, same order, same counts
    dead = _api(worker, "dead_letter_rate")
    shown_dead = [
        (
            tr.get_attribute("data-key"),
            int(tr.find_element(By.CSS_SELECTOR, '[data-field="dead_letters"]').text),
        )
        for tr in _all(browser, "#dead tbody tr")
    ]
    assert shown_dead == [(r["reason"], r["dead_letters"]) for r in dead]
    assert sum(n for _, n in shown_dead) == m["events_malformed"]

    # panels fed by the journey engine: compare their figures when there are any
    pains = _api(worker, "top_pain_points")
    shown_pains = [
        (
            row.get_attribute("data-key"),
            int(
                row.find_element(By.CSS_SELECTOR, '[data-field="pain_points"]').get_attribute(
                    "data-raw"
                )
            ),
        )
        for row in _all(browser, "#pain .barrow")
    ]
    assert shown_pains == [(r["rule_id"], r["pain_points"]) for r in pains]
    worst = _api(worker, "worst_journeys")
    shown_worst = [
        (
            tr.get_attribute("data-key"),
            float(
                tr.find_element(By.CSS_SELECTOR, '[data-field="score"]').get_attribute("data-raw")
            ),
        )
        for tr in _all(browser, "#worst tbody tr")
    ]
    assert shown_worst == [(r["journey_id"], pytest.approx(r["score"])) for r in worst]
    journey_map = _api(worker, "journey_map")
    shown_map = [tr.get_attribute("data-key") for tr in _all(browser, "#map tbody tr")]
    assert shown_map == [f"{r['from_channel']}>{r['to_channel']}" for r in journey_map]

    # customer drill-down: type a customer id, get their history in time order
    customer = _busiest_customer(sim.records)
    box = browser.find_element(By.ID, "customer-id")
    box.clear()
    box.send_keys(customer, Keys.ENTER)
    _wait(
        lambda: (
            _attr(browser, "#customer", "data-customer") == customer
            and _attr(browser, "#customer", "data-rows") not in (None, "0")
        ),
        30,
        f"the drill-down of {customer}",
    )
    history = _api(worker, "customer_journey", customer_id=customer)
    assert _attr(browser, "#customer", "data-rows") == str(len(history))
    shown_refs = [li.get_attribute("data-ref") for li in _all(browser, "#customer .timeline li")]
    expected_refs = [r["ref"] for r in history if r["item"] != "journey"]
    assert sorted(shown_refs) == sorted(expected_refs)
    touchpoints = [r for r in history if r["item"] == "touchpoint"]
    assert len(touchpoints) >= 3

    # auto-refresh keeps going
    first = int(_attr(browser, "body", "data-refreshed") or 0)
    _wait(
        lambda: int(_attr(browser, "body", "data-refreshed") or 0) > first,
        15,
        "an automatic refresh",
    )
    assert worker.alive()

    _screenshot(browser)


def _busiest_customer(records: list[bytes]) -> str:
    counts: dict[str, int] = {}
    for raw in records:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        ids = record.get("identifiers") if isinstance(record, dict) else None
        cid = ids.get("customer_id") if isinstance(ids, dict) else None
        if isinstance(cid, str):
            counts[cid] = counts.get(cid, 0) + 1
    return max(sorted(counts), key=lambda c: counts[c])


def _screenshot(driver: Any) -> None:
    """Whole page, 1440 px wide, into docs/ops-page.png."""
    from selenium.webdriver.common.by import By

    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, min(int(height) + 40, 2200))  # keep the PNG small
    time.sleep(0.5)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    driver.find_element(By.TAG_NAME, "body").screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
