"""`sparktweet score` as a script (also what spark-submit.sh runs): see `sparktweet score --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
