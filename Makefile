# The two README commands: `make demo` (main job) and `make test`. Both set everything up first.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test train lint clean

$(STAMP): requirements-ci.txt requirements-nodeps.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-ci.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/fetch_jars.sh
	PATH="$(abspath $(VENV))/bin:$$PATH" bash jvm/preprocess/build.sh

# Main job: the whole flow on embedded defaults (broker, replay, stream, dispatcher, web app).
DEMO_ARGS ?=
demo: setup
	$(VENV)/bin/sparktweet demo $(DEMO_ARGS)

test: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/test.sh

# Retrain the shipped model on the shared dataset (or pass DATA=... SPLIT=...).
DATA  ?= ../shared/data/Tweets.csv
SPLIT ?= ../shared/data/split.csv
OUT   ?= models/default
train: setup
	$(VENV)/bin/sparktweet train --data $(DATA) --split $(SPLIT) --out $(OUT)

lint: setup
	$(VENV)/bin/ruff check --line-length 140 sparktweet jobs tests benchmarks

clean:
	rm -rf var/demo var/demo-stream spark-warehouse metastore_db derby.log
