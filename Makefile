# Build and test the course. Everything runs inside $(VENV), created from the pinned
# requirements.txt (which ends with `-e .`, so pip must run from the repository root).
#   make book   execute every chapter and build the HTML book (strict)
#   make test   unit tests, every notebook under nbval, then the strict book build
#   make clean  remove build outputs (keeps the venv; `make distclean` removes it too)
#   make exercises / make grade   graded exercises (see the section at the end)

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
# exercises/source/ holds the masters (solutions, hidden tests): otter runs them, not nbval.
NB_DIRS := chapters exercises/student
# normlib.train shows tqdm progress bars in a live notebook; in the built book and under
# nbval they would only be leftover widgets, so every notebook run from here turns them off.
export NORMLIB_PROGRESS := 0

.PHONY: book test test-unit test-notebooks clean distclean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

book: $(STAMP)
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) .
	@echo "Book built: file://$(CURDIR)/$(BUILD_DIR)/html/index.html"

test-unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/

# Each notebook runs in its own kernel; its assert cells are the checks (outputs are not stored,
# so --nbval-lax loses nothing). --dist loadfile keeps a notebook's cells on one worker.
test-notebooks: $(STAMP)
	@notebooks="$$(find $(NB_DIRS) -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | sort || true)"; \
	if [[ -z "$$notebooks" ]]; then echo "No notebooks under $(NB_DIRS): skipping nbval."; exit 0; fi; \
	$(VENV)/bin/pytest -q --nbval-lax --nbval-current-env -n 2 --dist loadfile -p no:cacheprovider $$notebooks

test: test-unit test-notebooks book

clean:
	rm -rf $(BUILD_DIR) .pytest_cache
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
