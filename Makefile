# Build and test the course. Everything runs inside $(VENV), created from the pinned
# requirements.txt (which ends with `-e .`, so pip must run from the repository root).
#   make book       execute every notebook and build the HTML book (strict): the reader's command
#   make test       lint, unit tests, nbval executing every notebook once (fresh environment), the
#                   strict book build from those outputs, the browser test of every page, a time
#                   report
#   make zip        an offline copy of the built HTML: _build/normalization-course-html.zip
#   make format     apply ruff's formatting and safe fixes (make lint only checks)
#   make results    run the chapters that chapter 10 reads and store their numbers with normlib
#                   (normlib/lab/results_stored/: chapter 10's fallback outside a checkout)
#   make clean      remove build outputs (keeps the venv; `make distclean` removes it too)
#   make exercises / make grade   graded exercises (see the section at the end)
#
# Which notebooks are executed (and which are instructor-only) is listed in ONE place:
# scripts/course_notebooks.py. nbval executes each of them once per `make test`, in a fresh
# virtual environment without normlib (its set-up cell installs it, as in Colab), and hands its
# outputs to the book: the nbval plugin tests/nbval_course.py stores them in the book's
# jupyter-cache (_build/.jupyter_cache, `execute_notebooks: cache` in _config.yml), so the strict
# build renders them instead of executing again. `make book` empties that cache first, so it
# executes every notebook itself.
#
# Chapters record the numbers chapter 10 quotes (normlib.lab.results) in $(RESULTS_DIR), which
# both targets empty first. Chapter 10 reads them, so it runs after them: `make book` executes
# notebooks in the order of their paths (Sphinx reads documents sorted by name), and
# test-notebooks runs the notebooks of course_notebooks.py's LAST in a second nbval run.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := book

VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
BUILD_DIR := _build
# -W: warnings are errors (a failing notebook is only a warning otherwise);
# -n: nitpicky, broken cross-references fail; --keep-going: report them all at once.
JB_FLAGS := --all -W -n --keep-going
# Notebooks run in parallel, each kernel with its share of the cores (torch threads would
# otherwise oversubscribe them and slow every notebook down).
NB_WORKERS ?= 2
NB_THREADS ?= $(shell n=$$(( $$(nproc) / $(NB_WORKERS) )); echo $$(( n > 0 ? n : 1 )))
export NB_THREADS
# normlib.train's progress bars (tqdm widgets) are off in every notebook executed here, so the
# built book and the test outputs hold no progress widgets.
export NORMLIB_PROGRESS := 0
# Where chapters record their numbers and chapter 10 reads them (normlib.lab.results); with the
# variable set, chapter 10 shows this run's numbers or fails, never the stored fallback.
RESULTS_DIR := $(CURDIR)/$(BUILD_DIR)/results
export NORMLIB_RESULTS_DIR := $(RESULTS_DIR)
PYTEST := $(VENV)/bin/pytest -p no:cacheprovider
ZIP := $(BUILD_DIR)/normalization-course-html.zip

.PHONY: book test test-unit test-notebooks test-book test-browser lint format zip clean distclean results

$(STAMP): requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

book: $(STAMP)
	rm -rf $(BUILD_DIR)/.jupyter_cache $(RESULTS_DIR)
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) .
	@echo "Book built: file://$(CURDIR)/$(BUILD_DIR)/html/index.html"

# Each step of `make test` on its own line, in this order (safe under `make -j`); the time
# report comes last and also after a failure.
test: $(STAMP)
	@start=$$(date +%s); status=0; \
	for step in lint test-unit test-notebooks test-book test-browser; do \
	  $(MAKE) --no-print-directory $$step || { status=$$?; echo "make test: '$$step' failed"; break; }; \
	done; \
	$(VENV)/bin/python scripts/notebook_report.py --started $$start; \
	exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Unit tests, including the notebook executor's own (tests/test_nbval_course.py, marked
# `notebooks`: it runs two small notebooks through the plugin; `-m "not notebooks"` skips it).
test-unit: $(STAMP)
	$(PYTEST) -q -n $(NB_WORKERS) -m "not browser" tests/

# The one execution of every listed notebook (see the top of this file): nbval, one kernel per
# notebook, NB_WORKERS notebooks at a time (--dist loadfile keeps a notebook's cells together).
# A fresh cache holds exactly this run's outputs. Two nbval runs, the second adding to the first's
# cache and times: the notebooks that read the others' results (LAST in course_notebooks.py:
# chapter 10) run after all the others, also when one of those failed (it then says which).
test-notebooks: $(STAMP)
	rm -rf $(BUILD_DIR)/.jupyter_cache $(BUILD_DIR)/notebook-times $(RESULTS_DIR)
	@first="$$($(VENV)/bin/python scripts/course_notebooks.py --paths --first)"; \
	last="$$($(VENV)/bin/python scripts/course_notebooks.py --paths --last)"; \
	if [ -z "$$first$$last" ]; then echo "No course notebooks (scripts/course_notebooks.py)"; exit 0; fi; \
	status=0; \
	if [ -n "$$first" ]; then \
	  echo "nbval: $$(echo $$first | wc -w) notebook(s), each in a fresh environment"; \
	  $(PYTEST) -q --nbval-lax -p nbval_course -n $(NB_WORKERS) --dist loadfile $$first || status=$$?; \
	fi; \
	if [ -n "$$last" ]; then \
	  echo "nbval, after them: $$(echo $$last | wc -w) notebook(s) that read their results"; \
	  $(PYTEST) -q --nbval-lax -p nbval_course -n $(NB_WORKERS) --dist loadfile $$last || status=$$?; \
	fi; \
	exit $$status

# The stored run that chapter 10 falls back to outside a checkout: runs the chapters it reads
# (nbval, as test-notebooks) and copies their results into normlib/lab/results_stored/.
results: $(STAMP)
	rm -rf $(RESULTS_DIR)
	$(PYTEST) -q --nbval-lax -p nbval_course -n $(NB_WORKERS) --dist loadfile \
	  $$($(VENV)/bin/python -c "from normlib.lab.results import GUIDE_CHAPTERS as c; print(' '.join(f'chapters/{n}.ipynb' for n in c))")
	$(VENV)/bin/python -m normlib.lab.results --store

# The strict build from the cache that test-notebooks filled; a notebook missing from it (not
# listed in scripts/course_notebooks.py) is executed here, and the report names it.
test-book: $(STAMP)
	@mkdir -p $(BUILD_DIR)
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) . 2>&1 | tee $(BUILD_DIR)/book-build.log
	@echo "Book built: file://$(CURDIR)/$(BUILD_DIR)/html/index.html"

# Every page of the HTML built last (by make book or make test) in headless Chromium, and the
# exercise sets' section links against the built pages' ids (tests/test_exercise_links.py).
test-browser: $(STAMP)
	@status=0; $(PYTEST) -v -m browser tests/test_browser.py tests/test_exercise_links.py || status=$$?; \
	echo "=== Browser test, page by page (screenshots in $(BUILD_DIR)/screenshots/) ==="; \
	cat $(BUILD_DIR)/browser-report.txt 2>/dev/null || true; exit $$status

zip: $(STAMP)
	@test -f $(BUILD_DIR)/html/index.html || $(MAKE) --no-print-directory book
	$(VENV)/bin/python scripts/make_zip.py $(BUILD_DIR)/html $(ZIP)

clean:
	rm -rf $(BUILD_DIR) .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# --- Graded exercises (otter-grader; see exercises/README.md) -----------------------------------
# exercises/source/<set>.ipynb (master: solutions and hidden tests) -> exercises/student/<set>.ipynb
# (committed: what learners open) and _build/exercises/<set>/autograder.zip (not committed: it
# holds the hidden tests). tests/test_exercises.py, run by test-unit, fails on a stale student
# notebook and grades correct, wrong and empty submissions; nbval runs the student notebooks.
#   make exercises                                     regenerate every set (runs the tests on the solutions)
#   make grade SET=01_normalize_and_count SUBMISSIONS=folder [SCORES=scores.csv] [JOBS=2]
EXERCISES := $(VENV)/bin/python scripts/exercises.py
SCORES ?= scores.csv
JOBS ?= 1

.PHONY: exercises grade

exercises: $(STAMP)
	$(EXERCISES) build

$(BUILD_DIR)/exercises/%/autograder.zip: exercises/source/%.ipynb exercises/autograder-requirements.txt $(STAMP)
	$(EXERCISES) build $*

grade: $(STAMP)
	@if [[ -z "$(SET)" || -z "$(SUBMISSIONS)" ]]; then \
	  echo "usage: make grade SET=<set, e.g. 01_normalize_and_count> SUBMISSIONS=<folder of .ipynb> [SCORES=scores.csv] [JOBS=2]"; exit 2; fi
	@$(MAKE) --no-print-directory $(BUILD_DIR)/exercises/$(SET)/autograder.zip
	$(EXERCISES) grade $(SET) $(SUBMISSIONS) -o $(SCORES) -j $(JOBS)
