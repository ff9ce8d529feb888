"""Public routes: the ticket tracking page, health and Prometheus metrics."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from sparktweet.errors import TicketIdError
from sparktweet.store import STATUSES, TicketNotFound
from sparktweet.web import _wants_json

bp = Blueprint("public", __name__)

STATUS_LABELS = {"open": "Open", "in_progress": "In progress", "resolved": "Resolved", "closed": "Closed"}


@bp.get("/")
def index():
    wanted = request.args.get("id", "").strip()
    if wanted:
        # The form works without JavaScript too.
        return redirect(url_for("public.ticket", ticket_id=wanted[:64]))
    return render_template("index.html")


@bp.get("/tickets/<path:ticket_id>")
def ticket(ticket_id: str):
    store = current_app.config["STORE"]
    if len(ticket_id) > 64:
        return _ticket_error(
            400, "That is not a ticket ID.", "Ticket IDs look like BAG-150224-0JK4HW2.", ticket_id[:64]
        )
    try:
        found = store.get(ticket_id)
    except TicketIdError as exc:
        if str(exc).startswith("check character"):
            hint = "One character looks mistyped. Please check the ID in our reply to your tweet."
        else:
            hint = "Ticket IDs look like BAG-150224-0JK4HW2: a category, the date and a 7-character code."
        return _ticket_error(400, "That ticket ID is not valid.", hint, ticket_id)
    except TicketNotFound:
        return _ticket_error(
            404, "We have no ticket with that ID.", "It may still be on its way: try again shortly.", ticket_id
        )
    data = found.public_dict()
    if _wants_json():
        return jsonify(data)
    return render_template("ticket.html", t=data, labels=STATUS_LABELS, steps=STATUSES)


def _ticket_error(code: int, title: str, hint: str, ticket_id: str):
    if _wants_json():
        return jsonify({"error": title, "message": hint, "ticket_id": ticket_id}), code
    return render_template("error.html", title=title, message=hint, ticket_id=ticket_id), code


@bp.get("/healthz")
def healthz():
    try:
        ok = current_app.config["STORE"].ping()
    except Exception:  # noqa: BLE001 - any database failure means unhealthy
        ok = False
    return jsonify({"status": "ok" if ok else "unavailable", "database": ok}), 200 if ok else 503


@bp.get("/metrics")
def metrics():
    store = current_app.config["STORE"]
    counters = store.counters()
    by_status = store.counts("status")
    lines = [
        "# HELP sparktweet_tickets Tickets in the store by status.",
        "# TYPE sparktweet_tickets gauge",
        *(f'sparktweet_tickets{{status="{s}"}} {by_status.get(s, 0)}' for s in STATUSES),
        "# HELP sparktweet_replies_sent_total Replies posted on X.",
        "# TYPE sparktweet_replies_sent_total counter",
        f"sparktweet_replies_sent_total {store.posted_count()}",
    ]
    for name, kind, help_text in (
        ("retries", "counter", "Posting attempts retried after a 429, 5xx or timeout."),
        ("rate_limit_waits", "counter", "Times posting paused for X's rate limits."),
        ("outbox_deadletter", "counter", "Outbox records sent to the dead-letter topic."),
        ("outbox_duplicates", "counter", "Outbox records for tweets that already had a ticket."),
        ("outbox_lag", "gauge", "Outbox records not yet consumed by the dispatcher."),
    ):
        metric = f"sparktweet_{name}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", f"{metric} {counters.get(name, 0):g}"]
    lines += [
        "# HELP sparktweet_reply_queue Replies waiting to be posted.",
        "# TYPE sparktweet_reply_queue gauge",
        f"sparktweet_reply_queue {store.queue_size()}",
    ]
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
