"""`sparktweet dispatch` as a script: replies.outbox -> ticket store -> replies on X.

    python jobs/dispatch.py [--mode dry-run|approve|live] [--conf FILE] [--set key=value ...]

X credentials come from the environment (see sparktweet.xapi); the database URL from
SPARKTWEET_DB_URL or `store.url` (SQLite under var/ by default).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from sparktweet.config import load_config
from sparktweet.dispatcher import MODES, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparktweet dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default=None, help="default: dispatch.mode, else dry-run")
    parser.add_argument("--conf", action="append", default=[], help="extra YAML config file (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override")
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop once the outbox is consumed and the queue empty for this long",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.conf, args.overrides)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = run(
        config, args.mode or config.get("dispatch", {}).get("mode"), stop=stop, exit_when_idle_s=args.exit_when_idle
    )
    logging.getLogger("sparktweet.dispatch").info("Dispatcher stopped: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
