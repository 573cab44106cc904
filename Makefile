# evalpipe: every target calls the command line; the stage manifests decide what really runs,
# so a second `make evaluate` with nothing changed only checks hashes.
#   make setup && make evaluate        the book's run (needs Ollama serving llama3)
#   make doctor                        what the run needs and whether each is there (exit 1: not)
#   make open RUN=book                 open results/book/aggregate/report.html (RUN=compare-NAME:
#                                      a comparison's compare.html)
#   make test                          the test suite
#   make judge RUN=mine CONFIG=configs/mine.toml
#   make compare RUNS="a b c" MODE=together SET="judge.swap=true"   (docs/compare.md)
#   make compare RUNS="a b" ALLOW_MIXED=1     rank runs judged by different judges, marked mixed
#   make show RUN=book ARGS="--worst 5"       the run's items as a table (evalpipe show --help)
#   make show RUN=book ITEM=1f0c2a9be4d1      one item from its prompt to its score

CONFIG ?= configs/book.toml
RUN ?= $(basename $(notdir $(CONFIG)))
RUNS ?=
SET ?=
VENV ?= .venv
PYTHON := $(VENV)/bin/python
EVALPIPE := $(PYTHON) -m evalpipe
# ARGS is left to the user: the extra options of `make show`.
RUN_ARGS := --config $(CONFIG) --run $(RUN) $(foreach s,$(SET),--set $(s))

.DEFAULT_GOAL := evaluate
.PHONY: setup prepare finetune generate judge aggregate evaluate status doctor open compare show \
	test bench clean

setup: $(VENV)/.installed

# torch is pinned first: the CPU build, so that no looser requirement pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install "torch==2.13.0"
	$(VENV)/bin/pip install -e ".[test,llamacpp]"
	touch $@

prepare finetune generate judge aggregate evaluate status doctor: setup
	$(EVALPIPE) $@ $(RUN_ARGS)

open: setup
	$(EVALPIPE) open $(RUN)

compare: setup
	$(if $(strip $(RUNS)),,$(error give the runs to compare: make compare RUNS="a b c"))
	$(EVALPIPE) compare $(RUNS) $(if $(NAME),--name $(NAME)) $(if $(MODE),--mode $(MODE)) \
		$(if $(ALLOW_MIXED),--allow-mixed-judges) $(foreach s,$(SET),--set $(s))

show: setup
	$(EVALPIPE) show $(RUN) $(if $(ITEM),--item $(ITEM)) $(ARGS)

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) bench/generate.py
	$(PYTHON) bench/finetune.py
	$(PYTHON) bench/judge.py
	$(PYTHON) bench/uncertainty.py
	$(PYTHON) bench/ratings.py
	$(PYTHON) bench/pipeline.py

clean: setup
	$(EVALPIPE) clean all $(RUN_ARGS)
