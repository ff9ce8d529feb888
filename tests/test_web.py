"""Flask app: tracking page, agent auth, CSRF, dashboard actions, API, metrics, robustness."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparktweet.store import TicketStore
from sparktweet.ticket_ids import make_ticket_id
from sparktweet.web import create_app

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "agent-token-for-tests-0123456789"
T0 = 1_700_000_000.0


PREFIXES = {1: "BAG", 2: "SEAT", 3: "DLY"}


def record(i: int, prefix: str | None = None, **extra) -> dict:
    prefix = prefix or PREFIXES.get(i, "BAG")
    tweet_id = str(570306133677760000 + i)
    base = {
        "tweet_id": tweet_id,
        "ticket_id": make_ticket_id(tweet_id, prefix, "2015-02-24"),
        "text": f"@united my bag {i} never arrived <script>alert(1)</script>",
        "author_username": f"user{i}",
        "category": "baggage",
        "sentiment": "negative",
        "sentiment_score": 0.91,
        "priority": "high",
        "entities": [{"text": "Denver", "label": "CITY", "start": 0, "end": 6}],
        "reply_text": f"Sorry user{i}, we are on it.",
        "model_version": "secret-model-v1",
    }
    base.update(extra)
    return base


@pytest.fixture
def store(tmp_path):
    clock = iter(range(10**9))
    s = TicketStore(f"sqlite:///{tmp_path / 'web.db'}", clock=lambda: T0 + next(clock))
    s.upsert_ticket(record(1))
    s.upsert_ticket(record(2, category="seating", sentiment="neutral", priority="low"))
    s.upsert_ticket(record(3, category="delay_customer_service", priority="medium"))
    yield s
    s.close()


@pytest.fixture
def app(store):
    return create_app({"STORE": store, "AGENT_TOKEN": TOKEN, "SECRET_KEY": "k" * 32, "SPARKTWEET": {}})


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(html: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()


def login(client) -> str:
    token = csrf_of(client.get("/login").data)
    resp = client.post("/login", data={"token": TOKEN, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/dashboard")
    return csrf_of(client.get("/dashboard").data)


# -- public -------------------------------------------------------------------------------------


def test_tracking_page_shows_status_history_and_the_escaped_tweet(client):
    tid = record(1)["ticket_id"]
    resp = client.get(f"/tickets/{tid.lower()}")
    assert resp.status_code == 200
    html = resp.data.decode()
    assert tid in html and "Open" in html and "@user1" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


def test_tracking_json_reveals_only_public_fields(client, store):
    tid = record(1)["ticket_id"]
    store.set_status(tid, "in_progress", actor="alice")
    resp = client.get(f"/tickets/{tid}", headers={"Accept": "application/json"})
    data = resp.get_json()
    assert resp.status_code == 200 and data["status"] == "in_progress"
    assert [h["status"] for h in data["history"]] == ["open", "in_progress"]
    body = resp.data.decode()
    for secret in ("Sorry user1", "secret-model-v1", "0.91", "negative", "high", "Denver", "alice"):
        assert secret not in body
    assert "Sorry user1" not in client.get(f"/tickets/{tid}").data.decode()


def test_mistyped_check_character_gets_a_clear_message(client):
    tid = record(1)["ticket_id"]
    typo = tid[:-1] + ("A" if tid[-1] != "A" else "B")
    resp = client.get(f"/tickets/{typo}")
    assert resp.status_code == 400 and b"mistyped" in resp.data
    resp = client.get(f"/tickets/{typo}", headers={"Accept": "application/json"})
    assert resp.status_code == 400 and "mistyped" in resp.get_json()["message"]


@pytest.mark.parametrize(
    "path, code",
    [
        ("/tickets/hello", 400),
        ("/tickets/" + "A" * 5000, 400),
        ("/tickets/BAG-150230-0JK4HW2", 400),
        ("/tickets/%00%ff", 400),
        (f"/tickets/{make_ticket_id('42', 'BAG', '2015-02-24')}", 404),
        ("/nope", 404),
    ],
)
def test_malformed_public_requests_get_4xx(client, path, code):
    assert client.get(path).status_code == code


def test_index_form_redirects_without_javascript(client):
    resp = client.get("/?id=BAG-150224-0JK4HW2")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/tickets/BAG-150224-0JK4HW2")


def test_healthz_and_metrics(client, store):
    assert client.get("/healthz").get_json() == {"status": "ok", "database": True}
    store.set_status(record(1)["ticket_id"], "in_progress", actor="a")
    store.incr("retries", 3)
    store.set_gauge("outbox_lag", 12)
    text = client.get("/metrics").data.decode()
    assert 'sparktweet_tickets{status="open"} 2' in text
    assert 'sparktweet_tickets{status="in_progress"} 1' in text
    assert "sparktweet_retries_total 3" in text and "sparktweet_outbox_lag 12" in text
    assert "sparktweet_replies_sent_total 0" in text
    assert "# TYPE sparktweet_rate_limit_waits_total counter" in text


# -- agent auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/stats"),
        ("get", "/api/tickets"),
        ("get", f"/api/tickets/{record(1)['ticket_id']}"),
        ("post", f"/api/tickets/{record(1)['ticket_id']}/status"),
        ("post", f"/api/tickets/{record(1)['ticket_id']}/approve"),
    ],
)
def test_api_refuses_requests_without_or_with_wrong_credentials(client, method, path):
    assert getattr(client, method)(path, json={"status": "in_progress"}).status_code == 401
    assert getattr(client, method)(path, json={"status": "in_progress"}, headers=bearer("x" * 32)).status_code == 401


def test_dashboard_and_forms_need_a_login(client, store):
    assert client.get("/dashboard").status_code == 302
    resp = client.post(f"/dashboard/tickets/{record(1)['ticket_id']}/status", data={"status": "in_progress"})
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert store.get(record(1)["ticket_id"]).status == "open"


def test_no_token_configured_means_no_agent_access(store):
    client = create_app({"STORE": store, "AGENT_TOKEN": None, "SPARKTWEET": {}}).test_client()
    assert client.get("/dashboard").status_code == 503
    assert client.get("/login").status_code == 503
    assert client.get("/api/stats", headers=bearer("")).status_code == 503
    assert client.get(f"/tickets/{record(1)['ticket_id']}").status_code == 200


def test_short_tokens_are_refused_at_start(store):
    with pytest.raises(ValueError, match="16 characters"):
        create_app({"STORE": store, "AGENT_TOKEN": "short", "SPARKTWEET": {}})


def test_login_needs_csrf_and_the_right_token(client):
    assert client.post("/login", data={"token": TOKEN}).status_code == 400
    token = csrf_of(client.get("/login").data)
    assert client.post("/login", data={"token": "wrong" * 8, "csrf_token": token}).status_code == 401
    assert client.get("/dashboard").status_code == 302
    login(client)
    assert client.get("/dashboard").status_code == 200


def test_login_never_redirects_off_site(client):
    token = csrf_of(client.get("/login").data)
    resp = client.post("/login?next=//evil.example/x", data={"token": TOKEN, "csrf_token": token})
    assert resp.headers["Location"].endswith("/dashboard")


# -- dashboard actions ------------------------------------------------------------------------


def test_dashboard_counts_charts_and_queue(client):
    login(client)
    html = client.get("/dashboard").data.decode()
    assert 'id="count-open">3<' in html
    assert html.count("<svg") == 4 and html.count('class="col"') == 28
    for i in (1, 2, 3):
        assert record(i)["ticket_id"] in html
    assert html.index(record(1)["ticket_id"]) < html.index(record(3)["ticket_id"]) < html.index(record(2)["ticket_id"])
    assert "<script>alert(1)" not in html


def test_dashboard_filter(client):
    login(client)
    html = client.get("/dashboard?category=seating").data.decode()
    assert record(2)["ticket_id"] in html and record(1)["ticket_id"] not in html
    assert client.get("/dashboard?priority=urgent").status_code == 400
    assert client.get("/dashboard?category=<b>").status_code == 400


def test_status_form_needs_csrf_then_changes_status(client, store):
    csrf = login(client)
    tid = record(1)["ticket_id"]
    assert client.post(f"/dashboard/tickets/{tid}/status", data={"status": "in_progress"}).status_code == 400
    assert (
        client.post(f"/dashboard/tickets/{tid}/status", data={"status": "in_progress", "csrf_token": "x"}).status_code
        == 400
    )
    resp = client.post(f"/dashboard/tickets/{tid}/status", data={"status": "in_progress", "csrf_token": csrf})
    assert resp.status_code == 302
    assert store.get(tid).status == "in_progress"
    resp = client.post(f"/dashboard/tickets/{tid}/status", data={"status": "closed", "csrf_token": csrf})
    assert resp.status_code == 409 and store.get(tid).status == "in_progress"


def test_approve_form_queues_the_reply(client, store):
    csrf = login(client)
    tid = record(1)["ticket_id"]
    assert client.post(f"/dashboard/tickets/{tid}/approve", data={"csrf_token": csrf}).status_code == 302
    assert store.get(tid).reply_state == "approved" and store.queue_size() == 1
    assert client.post(f"/dashboard/tickets/{tid}/approve", data={"csrf_token": csrf}).status_code == 409


def test_session_api_writes_need_the_csrf_header(client, store):
    csrf = login(client)
    tid = record(1)["ticket_id"]
    assert client.post(f"/api/tickets/{tid}/status", json={"status": "in_progress"}).status_code == 400
    resp = client.post(f"/api/tickets/{tid}/status", json={"status": "in_progress"}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200 and resp.get_json()["status"] == "in_progress"


# -- API ---------------------------------------------------------------------------------------


def test_bearer_api(client, store):
    tid = record(2)["ticket_id"]
    stats = client.get("/api/stats", headers=bearer()).get_json()
    assert stats["by_category"] == {"baggage": 1, "seating": 1, "delay_customer_service": 1}
    assert sum(p["count"] for p in stats["series"]) == 3 and len(stats["series"]) == 28
    listed = client.get("/api/tickets?priority=low", headers=bearer()).get_json()["tickets"]
    assert [t["ticket_id"] for t in listed] == [tid]
    resp = client.post(f"/api/tickets/{tid}/status", json={"status": "in_progress"}, headers=bearer())
    assert resp.status_code == 200 and resp.get_json()["next_statuses"] == ["resolved"]
    assert client.post(f"/api/tickets/{tid}/status", json={"status": "open"}, headers=bearer()).status_code == 409
    assert client.post(f"/api/tickets/{tid}/approve", headers=bearer()).status_code == 200
    detail = client.get(f"/api/tickets/{tid}", headers=bearer()).get_json()
    assert [(h["kind"], h["to"]) for h in detail["history"]] == [
        ("status", "open"),
        ("status", "in_progress"),
        ("reply", "approved"),
    ]


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"data": b"{not json", "content_type": "application/json"}, 400),
        ({"json": ["in_progress"]}, 400),
        ({"json": {"status": 5}}, 400),
        ({"json": {"status": "x" * 40_000}}, 413),
    ],
)
def test_malformed_or_oversized_api_bodies_get_4xx(client, kwargs, code):
    resp = client.post(f"/api/tickets/{record(1)['ticket_id']}/status", headers=bearer(), **kwargs)
    assert resp.status_code == code and resp.is_json


@pytest.mark.parametrize(
    "path",
    [
        "/api/tickets/not-an-id",
        "/api/tickets?limit=abc",
        "/api/tickets?status=bogus",
        "/api/tickets/BAG-150224-0JK4HW2",
    ],
)
def test_api_bad_queries_get_4xx(client, path):
    assert client.get(path, headers=bearer()).status_code in (400, 404)


# -- process-level -------------------------------------------------------------------------------


def test_web_imports_no_pyspark_or_tensorflow():
    code = (
        "import sys; sys.path.insert(0, 'jobs');"
        "import sparktweet.web, sparktweet.web.agent, sparktweet.web.public, serve;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyspark', 'tensorflow', 'keras', 'py4j')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_served_by_waitress(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"SPARKTWEET_DB_URL": f"sqlite:///{tmp_path / 'serve.db'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "serve.py"), "--port", str(port)],
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.2)
        assert resp.status_code == 200 and resp.headers["Server"] == "waitress"
        assert requests.get(f"http://127.0.0.1:{port}/dashboard", timeout=5).status_code == 503
    finally:
        proc.terminate()
        proc.wait(timeout=10)
