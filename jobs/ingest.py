"""`sparktweet ingest` as a script (also what spark-submit.sh runs): see `sparktweet ingest --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
