"""Agent routes: login, dashboard (counts, time series, filtered queue, status, approvals) and API.

Every route here needs the agent token: ``Authorization: Bearer <token>`` (API clients), or a
session started on ``/login``. Forms and session-authenticated API writes carry a CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``); bearer requests need none, as no cookie
is involved.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from sparktweet.errors import TicketIdError
from sparktweet.store import REPLY_STATES, STATUSES, InvalidTransition, TicketNotFound

bp = Blueprint("agent", __name__)

FILTERS = {
    "status": STATUSES,
    "priority": ("high", "medium", "low"),
    "sentiment": ("negative", "neutral", "positive"),
    "reply_state": REPLY_STATES,
}
_CATEGORY_MAX = 64


def _token() -> str:
    token = current_app.config.get("AGENT_TOKEN")
    if not token:
        abort(503, "Agent access is not configured: set SPARKTWEET_AGENT_TOKEN.")
    return token


def _bearer_ok() -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), _token().encode())


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf() -> None:
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, "The form expired or did not come from this site (CSRF check failed). Reload and try again.")


def agent_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _token()
        if _bearer_ok():
            return view(*args, **kwargs)
        if request.headers.get("Authorization"):
            abort(401, "Invalid agent token.")
        if not session.get("agent"):
            if request.path.startswith("/api/"):
                abort(401, "Agent credentials required: send Authorization: Bearer <token>.")
            return redirect(url_for("agent.login", next=request.path))
        if request.method not in ("GET", "HEAD"):
            _check_csrf()
        return view(*args, **kwargs)

    return wrapped


@bp.app_context_processor
def inject_csrf() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


@bp.route("/login", methods=["GET", "POST"])
def login():
    _token()
    error = None
    if request.method == "POST":
        _check_csrf()
        given = request.form.get("token", "")
        if hmac.compare_digest(given.encode(), _token().encode()):
            session.clear()
            session["agent"] = True
            session["csrf"] = secrets.token_urlsafe(32)
            target = request.args.get("next", "")
            # Only local paths: an open redirect would turn the login into a phishing aid.
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("agent.dashboard")
            return redirect(target)
        error = "That token is not valid."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
@agent_required
def logout():
    session.clear()
    return redirect(url_for("agent.login"))


def _filters() -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name, allowed in FILTERS.items():
        value = request.args.get(name, "")
        if value:
            if value not in allowed:
                abort(400, f"Unknown {name} {value[:20]!r}; expected one of {', '.join(allowed)}.")
            chosen[name] = value
    category = request.args.get("category", "")
    if category:
        if len(category) > _CATEGORY_MAX or not category.replace("_", "").isalnum():
            abort(400, "Unknown category.")
        chosen["category"] = category
    return chosen


def _epoch(seconds: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)


def _stats() -> dict[str, Any]:
    store = current_app.config["STORE"]
    bucket = 6 * 3600
    now = int(store.clock())
    first = (now - 7 * 86400) // bucket * bucket + bucket
    counted = {int(t.timestamp()): n for t, n in store.time_series(bucket_s=bucket, since=_epoch(first))}
    # Every bucket of the window, empty ones too, so the chart's x axis is time, not data points.
    series = [(_epoch(start), counted.get(start, 0)) for start in range(first, now + 1, bucket)]
    return {
        "by_status": store.counts("status"),
        "by_category": store.counts("category"),
        "by_sentiment": store.counts("sentiment"),
        "by_priority": store.counts("priority"),
        "by_reply_state": store.counts("reply_state"),
        "series": [{"start": t.isoformat(), "count": n} for t, n in series],
        "queue": store.queue_size(),
    }


def _bars(counts: dict[str, int], order: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    keys = list(order or sorted(counts, key=lambda k: (-counts[k], k)))
    top = max(counts.values(), default=0) or 1
    return [{"label": k, "count": counts.get(k, 0), "pct": round(100 * counts.get(k, 0) / top, 1)} for k in keys]


def _columns(series: list[dict[str, Any]], width: int = 1100, height: int = 160) -> dict[str, Any]:
    top = max((p["count"] for p in series), default=0) or 1
    slot = width / max(1, len(series))
    plot = height - 20
    cols = [
        {
            "x": round(i * slot + 1, 1),
            "w": round(max(1.0, slot - 2), 1),
            "h": round(plot * p["count"] / top, 1),
            "y": round(plot - plot * p["count"] / top, 1),
            "count": p["count"],
            "start": p["start"][:13].replace("T", " ") + "h",
        }
        for i, p in enumerate(series)
    ]
    return {
        "cols": cols,
        "max": max((p["count"] for p in series), default=0),
        "width": width,
        "height": height,
        "axis_y": plot,
        "first": cols[0]["start"] if cols else "",
        "last": cols[-1]["start"] if cols else "",
    }


@bp.get("/dashboard")
@agent_required
def dashboard():
    store = current_app.config["STORE"]
    filters = _filters()
    if "status" not in filters:
        tickets = store.list_tickets(status=("open", "in_progress"), **filters, limit=200)
    else:
        tickets = store.list_tickets(**filters, limit=200)
    stats = _stats()
    charts = {
        "Category": _bars(stats["by_category"]),
        "Sentiment": _bars(stats["by_sentiment"], ("negative", "neutral", "positive")),
        "Priority": _bars(stats["by_priority"], ("high", "medium", "low")),
    }
    return render_template(
        "dashboard.html",
        tickets=[t.agent_dict() for t in tickets],
        stats=stats,
        charts=charts,
        line=_columns(stats["series"]),
        filters=filters,
        options={**FILTERS, "category": sorted(stats["by_category"])},
    )


def _act(ticket_id: str, action: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return action(), None
    except TicketIdError as exc:
        abort(400, str(exc))
    except TicketNotFound as exc:
        abort(404, str(exc))
    except InvalidTransition as exc:
        return None, str(exc)


def _actor() -> str:
    return "agent"


@bp.post("/dashboard/tickets/<ticket_id>/status")
@agent_required
def dashboard_status(ticket_id: str):
    status = request.form.get("status", "")
    _, error = _act(ticket_id, lambda: current_app.config["STORE"].set_status(ticket_id, status, actor=_actor()))
    return _back(error)


@bp.post("/dashboard/tickets/<ticket_id>/approve")
@agent_required
def dashboard_approve(ticket_id: str):
    _, error = _act(ticket_id, lambda: current_app.config["STORE"].approve_reply(ticket_id, actor=_actor()))
    return _back(error)


def _back(error: str | None):
    if error:
        abort(409, error)
    target = request.form.get("back", "")
    if not target.startswith("/dashboard"):
        target = url_for("agent.dashboard")
    return redirect(target)


@bp.get("/api/stats")
@agent_required
def api_stats():
    return jsonify(_stats())


@bp.get("/api/tickets")
@agent_required
def api_tickets():
    try:
        limit = min(500, max(1, int(request.args.get("limit", "100"))))
        offset = max(0, int(request.args.get("offset", "0")))
    except ValueError:
        abort(400, "limit and offset must be integers.")
    tickets = current_app.config["STORE"].list_tickets(**_filters(), limit=limit, offset=offset)
    return jsonify({"tickets": [t.agent_dict() for t in tickets]})


@bp.get("/api/tickets/<ticket_id>")
@agent_required
def api_ticket(ticket_id: str):
    ticket, _ = _act(ticket_id, lambda: current_app.config["STORE"].get(ticket_id))
    data = ticket.agent_dict()
    data["history"] = [
        {
            "kind": e.kind,
            "from": e.from_status,
            "to": e.to_status,
            "actor": e.actor,
            "note": e.note,
            "at": e.at.isoformat(),
        }
        for e in ticket.history
    ]
    return jsonify(data)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "Expected a JSON object body.")
    return body


@bp.post("/api/tickets/<ticket_id>/status")
@agent_required
def api_status(ticket_id: str):
    status = _json_body().get("status")
    if not isinstance(status, str):
        abort(400, 'Body must be {"status": "in_progress"} or another status.')
    ticket, error = _act(ticket_id, lambda: current_app.config["STORE"].set_status(ticket_id, status, actor=_actor()))
    if error:
        return jsonify({"error": "Conflict", "message": error}), 409
    return jsonify(ticket.agent_dict())


@bp.post("/api/tickets/<ticket_id>/approve")
@agent_required
def api_approve(ticket_id: str):
    ticket, error = _act(ticket_id, lambda: current_app.config["STORE"].approve_reply(ticket_id, actor=_actor()))
    if error:
        return jsonify({"error": "Conflict", "message": error}), 409
    return jsonify(ticket.agent_dict())
