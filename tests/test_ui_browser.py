"""The workflow view in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium through the system chromedriver) loads the run page of
real runs on a real worker process, and a person's view is checked: the graph coloured by status,
the timeline, a failed step's error, and the cancel button ending a running run.

Screenshots are kept under BATON_TEST_ARTEFACTS (default: the test's tmp dir). Without a
browser the test is skipped on a laptop and fails in CI (.ci/run installs one).
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, submit_workflow
from app.runtime.state import get_store
from app.ui import UiConfig
from app.ui.server import serving
from tests.support import CI, free_port, scaled, wait_for
from tests.test_faults import WorkerProcess
from tests.test_ui_index import entered, open_gate, task, wf

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if CI:
            raise RuntimeError("chromium and chromedriver are not installed (.ci/run installs "
                               "them: apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(scaled(30))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def artefacts(tmp_path: Path) -> Path:
    given = os.environ.get("BATON_TEST_ARTEFACTS")
    folder = Path(given) if given else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def workers(redis_server: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[WorkerProcess]:
    """A `celery worker` process of its own (two pool processes), as the Procfile starts."""
    started = WorkerProcess(tmp_path_factory.mktemp("ui") / "worker.log",
                            f"ui-{uuid.uuid4().hex[:6]}", concurrency=2)
    started.ready()
    yield started
    started.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def view() -> Iterator[str]:
    # open on loopback, as `baton ui --no-auth` serves it; auth has tests of its own
    config = UiConfig(store=get_store, credentials=None, flower_url="http://127.0.0.1:5555")
    with serving(config, port=free_port()) as base:
        yield base


def _wait_text(driver: Any, css: str, wanted: str, what: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def shown() -> str | None:
        try:
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                if wanted in element.text:
                    return str(element.text)
        except StaleElementReferenceException:
            return None  # drawn again meanwhile: looked at again
        return None

    return wait_for(shown, timeout=15, what=what)


def _status_of(driver: Any, ref: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'#graph g.node[data-ref="{ref}"]')
    return str(found[0].get_attribute("data-status")) if found else ""


@pytest.mark.timeout(180)
def test_the_run_page_shows_graph_timeline_and_error_and_cancels_a_running_run(
        workers: WorkerProcess, browser: Any, view: str, artefacts: Path) -> None:
    from selenium.webdriver.common.by import By

    # Given a run that failed at its second step
    name = f"ui_browser_{uuid.uuid4().hex[:8]}"
    failed = submit_workflow(wf(name, task("prepare", v=1),
                                task("publish", "refuse", reason="the bucket is read-only")))
    assert failed.wait(timeout=30) is RunStatus.FAILED

    # When its page is opened
    browser.get(f"{view}/runs/{failed.id}")
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-live"),
             timeout=15, what="the page's script to render")

    # Then the graph is coloured by step status, the timeline has a bar per step, and the
    # failed step's error shows in its row and in the step detail
    wait_for(lambda: _status_of(browser, "prepare") == "COMPLETED", timeout=15,
             what="the completed step coloured")
    assert _status_of(browser, "publish") == "FAILED"
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline svg.gantt rect.bar")
    assert len(bars) >= 2
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline .row-label")]
    assert labels[:2] == ["prepare", "publish"]
    _wait_text(browser, "td.step-error", "the bucket is read-only", "the failed step's error")
    _wait_text(browser, "#detail-error", "the bucket is read-only", "the error in the detail")
    assert "Refused" in browser.find_element(By.ID, "detail-traceback").text
    browser.save_screenshot(str(artefacts / "ui-failed-run.png"))

    # Given a run whose step is running
    key = uuid.uuid4().hex
    running = submit_workflow(wf(name, task("wait_here", "gate", key=key), task("after")))
    wait_for(lambda: entered(key), timeout=30, what="the gated step to start")
    browser.get(f"{view}/runs/{running.id}")
    wait_for(lambda: _status_of(browser, "wait_here") == "IN_PROGRESS", timeout=15,
             what="the running step coloured")
    browser.save_screenshot(str(artefacts / "ui-running-run.png"))

    # When its cancel button is pressed
    browser.find_element(By.ID, "action-cancel").click()

    # Then the run is cancelled, and the page says so
    wait_for(lambda: running.status is RunStatus.TERMINATED, timeout=15,
             what="the run to be cancelled")
    _wait_text(browser, "#run-status", "TERMINATED", "the page to show the run cancelled")
    _wait_text(browser, "#notice", "cancel: cancelled", "the notice of the action")
    wait_for(lambda: _status_of(browser, "wait_here") == "CANCELED", timeout=15,
             what="the cancelled step coloured")
    browser.save_screenshot(str(artefacts / "ui-cancelled-run.png"))
    open_gate(key)

    # And the runs list shows both, newest first
    browser.get(f"{view}/runs?workflow={name}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")
    assert [r.get_attribute("data-run") for r in rows] == [running.id, failed.id]
    browser.save_screenshot(str(artefacts / "ui-runs-list.png"))
