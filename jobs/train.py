"""`sparktweet train` as a script (also what spark-submit.sh runs): see `sparktweet train --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
