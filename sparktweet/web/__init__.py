"""Flask app: public ticket tracking page, agent dashboard and API, health and metrics.

``create_app(config=None)`` builds the app (Flask's factory pattern) with three blueprints:
:mod:`.public` (``/tickets/<id>``, ``/healthz``, ``/metrics``), :mod:`.agent` (``/login``,
``/dashboard``, ``/api/...``). Serve it with a production WSGI server (``jobs/serve.py`` uses
waitress). No pyspark, no TensorFlow.

Agents authenticate with the token in ``$SPARKTWEET_AGENT_TOKEN`` (a bearer header for the API,
or the login form, which starts a session). There is no default: without the variable every
agent endpoint answers 503. Sessions are signed with ``$SPARKTWEET_SECRET_KEY`` (a random key
per process when unset, so sessions end on restart).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from sparktweet.config import load_config
from sparktweet.store import TicketStore

log = logging.getLogger(__name__)

AGENT_TOKEN_ENV = "SPARKTWEET_AGENT_TOKEN"
SECRET_KEY_ENV = "SPARKTWEET_SECRET_KEY"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app.

    Parameters
    ----------
    config
        Optional overrides: ``SPARKTWEET`` (a loaded sparktweet config, default
        :func:`~sparktweet.config.load_config`), ``STORE`` (a :class:`TicketStore`),
        ``AGENT_TOKEN`` and ``SECRET_KEY`` (default: the environment), and any Flask setting.

    Examples
    --------
    >>> app = create_app({"STORE": TicketStore("sqlite://"), "AGENT_TOKEN": "t" * 32})
    >>> app.test_client().get("/healthz").status_code
    200
    """
    from sparktweet.web import agent, public

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=16 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        AGENT_TOKEN=os.environ.get(AGENT_TOKEN_ENV) or None,
        SECRET_KEY=os.environ.get(SECRET_KEY_ENV) or secrets.token_hex(32),
        JSON_SORT_KEYS=False,
    )
    app.config.update(dict(config or {}))
    token = app.config["AGENT_TOKEN"]
    if token is not None and len(token) < 16:
        raise ValueError(f"{AGENT_TOKEN_ENV} must be at least 16 characters long.")
    if "SPARKTWEET" not in app.config:
        app.config["SPARKTWEET"] = load_config()
    if "STORE" not in app.config:
        app.config["STORE"] = TicketStore.from_config(app.config["SPARKTWEET"])
    app.register_blueprint(public.bp)
    app.register_blueprint(agent.bp)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.path.startswith(("/dashboard", "/api", "/login")):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _wants_json():
            return jsonify({"error": exc.name, "message": exc.description}), exc.code
        return render_template("error.html", title=exc.name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return jsonify({"error": "Internal Server Error"}), 500
        return render_template("error.html", title="Something went wrong", message="Please try again later."), 500

    return app


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
