"""`sparktweet replay` as a script (also what spark-submit.sh runs): see `sparktweet replay --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["replay", *sys.argv[1:]]))
