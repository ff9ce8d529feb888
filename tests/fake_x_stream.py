"""A local fake of the X filtered-stream API (rules and stream endpoints) for the ingest tests.

A threaded HTTP server on 127.0.0.1. tweepy's own HTTP code talks to it: ``x.api_base`` makes
:mod:`sparktweet.ingest` mount an adapter that sends tweepy's requests here instead of X.

The stream is scripted per connection: each entry of ``connections`` is either an HTTP status
code (the connection is refused with it), or a list of payloads sent as chunked lines followed by
``"drop"`` (the server closes the connection mid-stream) or ``"hold"`` (keep-alives until the
server stops). Payloads are dicts (sent as JSON) or bytes (sent as they are). Connections beyond
the script hold with keep-alives.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

STREAM_PATH = "/2/tweets/search/stream"
RULES_PATH = "/2/tweets/search/stream/rules"


class FakeXStream:
    """The fake server; use as a context manager. ``url`` is its origin for ``x.api_base``."""

    def __init__(
        self,
        bearer_token: str = "test-bearer",
        connections: list[Any] | None = None,
        rules: list[dict[str, str]] | None = None,
        keepalive_s: float = 0.3,
    ) -> None:
        self.bearer_token = bearer_token
        self.connections = list(connections or [])
        self.rules: list[dict[str, str]] = [dict(r) for r in (rules or [])]
        self.keepalive_s = keepalive_s
        self.requests: list[tuple[str, str]] = []
        self.stream_connects = 0
        self.unauthorised = 0
        self._next_rule_id = 1000
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-x-stream", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.bearer_token}":
                    return True
                fake.unauthorised += 1
                self._json(401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
                return False

            def do_GET(self) -> None:  # http.server's method naming
                path = urlsplit(self.path).path
                fake.requests.append(("GET", self.path))
                if not self._authorised():
                    return
                if path == RULES_PATH:
                    with fake._lock:
                        rules = [dict(r) for r in fake.rules]
                    body: dict[str, Any] = {"meta": {"sent": "2026-11-25T00:00:00Z", "result_count": len(rules)}}
                    if rules:
                        body["data"] = rules
                    self._json(200, body)
                elif path == STREAM_PATH:
                    self._stream()
                else:
                    self._json(404, {"title": "Not Found"})

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                fake.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                if path != RULES_PATH:
                    self._json(404, {"title": "Not Found"})
                    return
                with fake._lock:
                    if "add" in body:
                        added = []
                        for rule in body["add"]:
                            fake._next_rule_id += 1
                            new = {"id": str(fake._next_rule_id), "value": rule["value"]}
                            if "tag" in rule:
                                new["tag"] = rule["tag"]
                            fake.rules.append(new)
                            added.append(new)
                        self._json(201, {"data": added, "meta": {"summary": {"created": len(added), "not_created": 0}}})
                    elif "delete" in body:
                        ids = set(body["delete"].get("ids", []))
                        before = len(fake.rules)
                        fake.rules = [r for r in fake.rules if r["id"] not in ids]
                        self._json(200, {"meta": {"summary": {"deleted": before - len(fake.rules), "not_deleted": 0}}})
                    else:
                        self._json(400, {"title": "Invalid Request"})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self) -> None:
                with fake._lock:
                    fake.stream_connects += 1
                    script = fake.connections.pop(0) if fake.connections else ["hold"]
                if isinstance(script, int):
                    self._json(script, {"title": "Service Unavailable" if script >= 500 else "Error", "status": script})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for item in script:
                        if item == "drop":
                            # An abrupt close in the middle of the chunked body: a dropped connection.
                            self.close_connection = True
                            self.wfile.flush()
                            return
                        if item == "hold":
                            while not fake._stopping.wait(fake.keepalive_s):
                                self._chunk(b"\r\n")
                            return
                        data = item if isinstance(item, bytes) else json.dumps(item).encode()
                        self._chunk(data + b"\r\n")
                    while not fake._stopping.wait(fake.keepalive_s):
                        self._chunk(b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (shutdown), as real X sees it

        return Handler


def tweet_payload(tweet_id: str, text: str, username: str = "traveler", author_id: str = "42", **data: Any) -> dict[str, Any]:
    """A filtered-stream payload as X sends it (``data``, ``includes.users``, ``matching_rules``)."""
    handles = [w[1:].rstrip(".,!?") for w in text.split() if w.startswith("@")]
    body = {
        "id": tweet_id,
        "text": text,
        "author_id": author_id,
        "created_at": "2026-11-25T10:00:00.000Z",
        "lang": "en",
        "edit_history_tweet_ids": [tweet_id],
        **data,
    }
    if handles:
        body["entities"] = {"mentions": [{"start": 0, "end": len(h) + 1, "username": h, "id": "1"} for h in handles]}
    return {
        "data": body,
        "includes": {"users": [{"id": author_id, "name": username.title(), "username": username}]},
        "matching_rules": [{"id": "1001", "tag": "sparktweet:1"}],
    }


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)
