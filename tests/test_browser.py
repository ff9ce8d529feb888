"""Headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against the app served
by waitress: tracking page, mistyped ID, login, filter, status change, reply approval.

Screenshots go to ``$SPARKTWEET_SCREENSHOTS`` (default ``var/screenshots``) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from sparktweet.store import TicketStore
from sparktweet.ticket_ids import make_ticket_id
from sparktweet.web import create_app

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "browser-test-token-0123456789abcdef"
SHOTS = Path(os.environ.get("SPARKTWEET_SCREENSHOTS", ROOT / "var" / "screenshots"))

TWEETS = [
    ("BAG", "baggage", "negative", "high", "@united my bag never arrived in Denver, flight UA 1234. Nobody answers!"),
    ("SEAT", "seating", "neutral", "low", "@united can I still pick a window seat on tomorrow's flight to SFO?"),
    (
        "DLY",
        "delay_customer_service",
        "negative",
        "medium",
        "@united 3 hours delayed at ORD and no updates at the gate",
    ),
    ("FEE", "extra_charges", "negative", "medium", "@united why was I charged $200 for a bag I checked for free?"),
    ("RFD", "reschedule_refund", "neutral", "low", "@united how do I get a refund for my cancelled flight?"),
]


def tid(i: int) -> str:
    return make_ticket_id(str(570306133677760000 + i), TWEETS[i][0], "2015-02-24")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from waitress.server import create_server

    store = TicketStore(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'b.db'}")
    for i, (_prefix, category, sentiment, priority, text) in enumerate(TWEETS):
        store.upsert_ticket(
            {
                "tweet_id": str(570306133677760000 + i),
                "ticket_id": tid(i),
                "text": text,
                "author_username": f"traveller{i}",
                "category": category,
                "sentiment": sentiment,
                "priority": priority,
                "reply_text": f"Sorry about this. We are on it: track {tid(i)} at our support page.",
            }
        )
    store.set_status(tid(0), "in_progress", actor="agent")
    app = create_app({"STORE": store, "AGENT_TOKEN": TOKEN, "SECRET_KEY": "s" * 32, "SPARKTWEET": {}})
    srv = create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}", store
    srv.close()
    store.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("Debian chromium and chromium-driver are required: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.implicitly_wait(3)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    # The queue sits below the fold: keep a picture of it as well.
    for table in driver.find_elements(By.CSS_SELECTOR, "table.queue"):
        table.screenshot(str(SHOTS / f"{name}-queue.png"))


def submit_and_wait(driver, button, timeout: float = 20.0) -> None:
    """Click a form's button and wait for the page it posts to: ``click`` returns before the
    request is served, so reading the store right after it races the server.

    The old page is marked with a script property before the click; the new document does not
    carry it. (Waiting for the button to go stale raced the navigation in CI: Chrome answered
    "Node with given id does not belong to the document" instead of a stale-element error.)"""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.sparktweetOldPage = true;")
    button.click()

    def new_page_loaded(d) -> bool:
        try:
            return bool(d.execute_script("return !document.sparktweetOldPage && document.readyState === 'complete';"))
        except WebDriverException:  # the old document is being torn down: ask again
            return False

    WebDriverWait(driver, timeout).until(new_page_loaded)


def test_tracking_page(server, browser):
    from selenium.webdriver.common.by import By

    base, _ = server
    browser.get(f"{base}/")
    box = browser.find_element(By.NAME, "id")
    box.send_keys(tid(0).lower())
    box.submit()
    assert browser.current_url.endswith(f"/tickets/{tid(0).lower()}")
    assert browser.find_element(By.CSS_SELECTOR, ".ticket-id").text == tid(0)
    assert browser.find_element(By.ID, "status").text == "In progress"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".steps li.done")) == 2
    assert "Sorry about this" not in browser.page_source
    shot(browser, "tracking")


def test_mistyped_ticket_id(server, browser):
    from selenium.webdriver.common.by import By

    base, _ = server
    typo = tid(1)[:-1] + ("A" if tid(1)[-1] != "A" else "B")
    browser.get(f"{base}/tickets/{typo}")
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
    assert "not valid" in alert.text and "mistyped" in alert.text
    shot(browser, "mistyped")


def test_agent_login_filter_status_and_approve(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, store = server
    browser.get(f"{base}/dashboard")
    assert "/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys("wrong-token-wrong-token")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form button"))
    assert "not valid" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    shot(browser, "login-error")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form button"))
    assert browser.current_url.endswith("/dashboard")
    assert browser.find_element(By.ID, "count-open").text == "4"
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr")) == 5
    shot(browser, "dashboard")

    Select(browser.find_element(By.ID, "filter-priority")).select_by_value("medium")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr")
    assert sorted(r.get_attribute("id") for r in rows) == sorted(f"row-{tid(i)}" for i in (2, 3))
    shot(browser, "dashboard-filtered")

    row = browser.find_element(By.ID, f"row-{tid(2)}")
    Select(row.find_element(By.NAME, "status")).select_by_value("in_progress")
    submit_and_wait(browser, row.find_element(By.XPATH, ".//form[contains(@action, '/status')]//button"))
    assert "priority=medium" in browser.current_url  # back to the same filtered queue
    assert store.get(tid(2)).status == "in_progress"
    assert "in progress" in browser.find_element(By.ID, f"row-{tid(2)}").text

    submit_and_wait(browser, browser.find_element(By.ID, f"row-{tid(3)}").find_element(By.CSS_SELECTOR, "button.approve"))
    assert store.get(tid(3)).reply_state == "approved" and store.queue_size() == 1
    assert "approved" in browser.find_element(By.ID, f"row-{tid(3)}").text
    shot(browser, "dashboard-after-actions")
