"""The nightly HTML page as a person sees it: real headless Chromium loads it from disk and
the assertions come from the browser's rendering (computed styles, visibility), not from
the HTML text. Leaves a screenshot at build/reports/nightly-report.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from report_samples import NOT_RUN_REASON, all_passing_run, clone, sample_run

from kiln.paths import REPO_ROOT
from kiln.report import write_reports
from kiln.report.html import STYLES

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed: pip install -e '.[test]'")
By = pytest.importorskip("selenium.webdriver.common.by").By

SCREENSHOT = REPO_ROOT / "build" / "reports" / "nightly-report.png"
RUOK = "test_zookeeper.py::test_answers_ruok"
FAILING, PASSING, NOT_RUN = "ubuntu-24.04-qemu", "debian-12-qemu", "ubuntu-24.04-amazon-ebs"
# Chromium as root in a sandbox-less container, offline: without the background flags it
# keeps trying to reach Google's services.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000"]


def _browser_and_driver() -> tuple[str, str] | None:
    """Debian's chromium + chromium-driver; a CI image's Chrome + chromedriver otherwise."""
    browser = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("google-chrome"))
                    if p and os.access(p, os.X_OK)), None)
    driver_dir = os.environ.get("CHROMEWEBDRIVER", "")
    driver = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver"),
                               driver_dir and os.path.join(driver_dir, "chromedriver"))
                   if p and os.access(p, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    found = _browser_and_driver()
    if found is None:
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver (scripts/setup does)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory: pytest.TempPathFactory) -> object:
    written = write_reports(clone(sample_run()), tmp_path_factory.mktemp("reports"),
                            previous=all_passing_run())
    browser.get(written.html.as_uri())
    return browser


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _computed(driver, element, prop: str) -> str:
    return driver.execute_script("return getComputedStyle(arguments[0]).getPropertyValue(arguments[1]);",
                                 element, prop)


def _cells(driver, entry: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f'td.cell[data-entry="{entry}"]')


def test_failing_cell_is_red_and_says_fail(page) -> None:
    cell = page.find_element(By.CSS_SELECTOR, f'td.cell[data-entry="{FAILING}"][data-check="{RUOK}"]')
    assert cell.get_attribute("data-result") == "fail"
    assert cell.is_displayed() and cell.text == f"{STYLES['fail'].symbol} fail"
    assert _computed(page, cell, "background-color") == _rgb(STYLES["fail"].background)
    assert _computed(page, cell, "color") == _rgb(STYLES["fail"].foreground)
    assert "zookeeper did not answer ruok" in cell.get_attribute("title")
    # Its other checks still pass: one failure does not colour the whole column.
    others = [c for c in _cells(page, FAILING) if c.get_attribute("data-check") != RUOK]
    assert others and {c.get_attribute("data-result") for c in others} == {"pass"}


def test_passing_column_is_green(page) -> None:
    cells = _cells(page, PASSING)
    assert len(cells) == 12  # 7 stages + 5 checks
    by_result: dict[str, list] = {}
    for cell in cells:
        by_result.setdefault(cell.get_attribute("data-result"), []).append(cell)
    assert set(by_result) == {"pass", "skip"} and len(by_result["skip"]) == 1
    for cell in by_result["pass"]:
        assert _computed(page, cell, "background-color") == _rgb(STYLES["pass"].background)
        assert cell.text.startswith(STYLES["pass"].symbol)
    assert _rgb(STYLES["pass"].background) != _rgb(STYLES["fail"].background)


def test_not_run_column_shows_not_run_and_its_reason(page) -> None:
    header = page.find_element(By.CSS_SELECTOR, f'th.entry[data-entry="{NOT_RUN}"]')
    assert header.get_attribute("data-result") == "not-run"
    reason = header.find_element(By.CSS_SELECTOR, ".reason")
    assert reason.is_displayed() and reason.text == NOT_RUN_REASON
    assert reason.size["height"] > 0 and reason.size["width"] > 0
    assert "not run" in header.text
    cells = _cells(page, NOT_RUN)
    assert len(cells) == 12
    for cell in cells:
        assert cell.get_attribute("data-result") == "not-run"
        assert cell.text == f"{STYLES['not-run'].symbol} not run"
        assert _computed(page, cell, "background-color") == _rgb(STYLES["not-run"].background)
    assert "repeating-linear-gradient" in _computed(page, cells[0], "background-image")


def test_verdict_and_changes_are_visible(page) -> None:
    verdict = page.find_element(By.ID, "verdict")
    assert verdict.is_displayed() and "FAILED" in verdict.text
    assert _computed(page, verdict, "background-color") == _rgb(STYLES["fail"].background)
    new_failures = page.find_element(By.CSS_SELECTOR, 'table.changes[data-kind="new-failures"]')
    assert new_failures.is_displayed() and RUOK in new_failures.text and "fail" in new_failures.text


def test_screenshot(page) -> None:
    """The whole page, for a person (and the file-view tool) to look at."""
    height = page.execute_script("return document.documentElement.scrollHeight;")
    page.set_window_size(1400, min(int(height) + 40, 4000))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
