"""A local fake of the X API v2 endpoints the dispatcher uses, with fault injection.

A real threaded HTTP server on 127.0.0.1, so tweepy's own HTTP code (OAuth 1.0a signing,
requests, status handling) runs unchanged; :class:`sparktweet.xapi.RedirectAdapter` points
tweepy's fixed host at it. Endpoints: ``POST /2/tweets``, ``GET /2/users/me`` and
``GET /2/users/<id>/tweets``.

Faults (drawn per request from a seeded RNG with probability ``fault_rate``):

- ``429``: refused, with ``x-rate-limit-reset`` a few seconds ahead on the shared clock;
- ``500``: refused with a server error, nothing posted;
- ``timeout_before``: nothing posted, the response is delayed past the client's timeout;
- ``timeout_after``: the post IS made, then the response is delayed past the client's timeout,
  the case that makes naive retrying post twice.

The server also enforces X's 100 posts / 15 min per user budget on its clock and refuses a
reply whose text the account already posted (403 duplicate content), as X does.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

ACCOUNT_ID = "1000"
FAULT_KINDS = ("429", "500", "timeout_before", "timeout_after")


class FakeX:
    def __init__(
        self,
        *,
        username: str = "united",
        clock: Callable[[], float] = time.time,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        seed: int = 7,
        delay_s: float = 0.6,
        reset_in_s: int = 5,
        per_window: int = 100,
        window_s: float = 900.0,
        on_post: Callable[[int], None] | None = None,
    ) -> None:
        self.username = username
        self.clock = clock
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self.rng = random.Random(seed)
        self.delay_s = delay_s
        self.reset_in_s = reset_in_s
        self.per_window = per_window
        self.window_s = window_s
        self.on_post = on_post
        self.lock = threading.Lock()
        self.posts: list[dict] = []
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.budget_refusals = 0
        self.unauthenticated = 0
        self._next_id = 1_900_000_000_000_000_000
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def replies_per_tweet(self) -> Counter[str]:
        with self.lock:
            return Counter(p["in_reply_to"] for p in self.posts)

    def _fault(self, allowed: tuple[str, ...]) -> str | None:
        with self.lock:
            if self.rng.random() >= self.fault_rate:
                return None
            kinds = [k for k in self.fault_kinds if k in allowed]
            if not kinds:
                return None
            kind = self.rng.choice(kinds)
            self.faults[kind] += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away, as intended

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                if auth.startswith("OAuth ") and "oauth_signature=" in auth or auth.startswith("Bearer "):
                    return True
                fake.unauthenticated += 1
                self._send(401, {"title": "Unauthorized", "detail": "Unauthorized", "status": 401})
                return False

            def _inject(self, allowed: tuple[str, ...]) -> str | None:
                kind = fake._fault(allowed)
                if kind == "429":
                    reset = int(fake.clock()) + fake.reset_in_s
                    self._send(
                        429,
                        {"title": "Too Many Requests", "detail": "Too Many Requests"},
                        {"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"},
                    )
                elif kind == "500":
                    self._send(500, {"title": "Internal Server Error", "detail": "injected"})
                elif kind == "timeout_before":
                    time.sleep(fake.delay_s)
                    self._send(503, {"title": "Service Unavailable", "detail": "late"})
                return kind

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.requests[f"GET {parts.path.split('/')[2] if parts.path.count('/') > 1 else parts.path}"] += 1
                if not self._authorised():
                    return
                if self._inject(("429", "500", "timeout_before")):
                    return
                if parts.path == "/2/users/me":
                    self._send(200, {"data": {"id": ACCOUNT_ID, "name": "Brand", "username": fake.username}})
                    return
                if parts.path == f"/2/users/{ACCOUNT_ID}/tweets":
                    query = parse_qs(parts.query)
                    start = query.get("start_time", [None])[0]
                    since = datetime.fromisoformat(start).timestamp() if start else 0
                    size = int(query.get("max_results", ["10"])[0])
                    offset = int(query.get("pagination_token", ["0"])[0])
                    with fake.lock:
                        mine = [p for p in reversed(fake.posts) if p["at"] >= since]
                    page = mine[offset : offset + size]
                    data = [
                        {
                            "id": p["id"],
                            "text": p["text"],
                            "edit_history_tweet_ids": [p["id"]],
                            "referenced_tweets": [{"type": "replied_to", "id": p["in_reply_to"]}],
                        }
                        for p in page
                    ]
                    meta = {"result_count": len(data)}
                    if offset + size < len(mine):
                        meta["next_token"] = str(offset + size)
                    self._send(200, {"data": data, "meta": meta} if data else {"meta": meta})
                    return
                self._send(404, {"title": "Not Found", "detail": self.path})

            def do_POST(self) -> None:
                fake.requests["POST tweets"] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                if urlsplit(self.path).path != "/2/tweets":
                    self._send(404, {"title": "Not Found", "detail": self.path})
                    return
                kind = self._inject(("429", "500", "timeout_before", "timeout_after"))
                if kind in ("429", "500", "timeout_before"):
                    return
                text = body.get("text", "")
                parent = (body.get("reply") or {}).get("in_reply_to_tweet_id")
                now = fake.clock()
                with fake.lock:
                    recent = [p["at"] for p in fake.posts if p["at"] > now - fake.window_s]
                    if len(recent) >= fake.per_window:
                        fake.budget_refusals += 1
                        refused = int(recent[-fake.per_window] + fake.window_s) + 1
                    else:
                        refused = None
                        duplicate = any(p["text"] == text for p in fake.posts)
                        if not duplicate:
                            fake._next_id += 1
                            post = {"id": str(fake._next_id), "text": text, "in_reply_to": parent, "at": now}
                            fake.posts.append(post)
                            count = len(fake.posts)
                if refused is not None:
                    self._send(429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(refused)})
                    return
                if duplicate:
                    self._send(
                        403,
                        {
                            "detail": "You are not allowed to create a Tweet with duplicate content.",
                            "title": "Forbidden",
                            "status": 403,
                        },
                    )
                    return
                if fake.on_post is not None:
                    fake.on_post(count)
                if kind == "timeout_after":
                    time.sleep(fake.delay_s)
                self._send(201, {"data": {"id": post["id"], "text": text, "edit_history_tweet_ids": [post["id"]]}})

        return Handler
