"""`sparktweet dispatch` as a script: see `sparktweet dispatch --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["dispatch", *sys.argv[1:]]))
