"""`sparktweet serve` as a script: the tracking page, agent dashboard and API behind waitress.

    python jobs/serve.py [--host 127.0.0.1] [--port 8080] [--conf FILE] [--set key=value ...]

Agents log in with $SPARKTWEET_AGENT_TOKEN (no default); sessions are signed with
$SPARKTWEET_SECRET_KEY; the database URL comes from $SPARKTWEET_DB_URL or `store.url`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sparktweet.config import load_config
from sparktweet.web import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparktweet serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--conf", action="append", default=[], help="extra YAML config file (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from waitress import serve

    app = create_app({"SPARKTWEET": load_config(args.conf, args.overrides)})
    logging.getLogger("sparktweet.serve").info("Serving on http://%s:%d/ (dashboard: /dashboard)", args.host, args.port)
    serve(app, host=args.host, port=args.port, threads=args.threads, max_request_body_size=64 * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
