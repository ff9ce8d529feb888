"""`sparktweet stream` as a script (also what spark-submit.sh runs): see `sparktweet stream --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", *sys.argv[1:]]))
