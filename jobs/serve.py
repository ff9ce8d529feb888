"""`sparktweet serve` as a script: see `sparktweet serve --help`."""

import sys

from sparktweet.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
