# Two commands do everything on a fresh machine (Python 3.11 to 3.14 with venv; no GPU needed):
#   make book   install into .venv, execute every chapter (PRESET=cpu by default) and render _build/html
#   make test   install, build the book at the smoke preset (warnings are errors), then run pytest:
#               unit tests, papermill per chapter, nbval on every chapter, checks of the built HTML, every page
#               in headless Chromium with the network off (skipped without chromium unless
#               ROBUSTNB_REQUIRE_BROWSER=1; screenshots in _build/smoke/_build/screenshots), the Pages workflow
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= cpu
SMOKE_BUILD := _build/smoke
# No PLOTLY_RENDERER here: robustnb picks plotly's renderer itself (robustnb.plots.choose_renderer), so the
# book builds the same under `make`, `jupyter-book build .`, papermill or nbconvert.
export PYTHONUNBUFFERED := 1
# The chapters run in book/, so a relative folder (ROBUSTNB_DATA=../shared/data) would be read from there: made
# absolute here, from the folder make runs in.
ifdef ROBUSTNB_DATA
export ROBUSTNB_DATA := $(abspath $(ROBUSTNB_DATA))
endif
ifdef ROBUSTNB_CACHE
export ROBUSTNB_CACHE := $(abspath $(ROBUSTNB_CACHE))
endif

.PHONY: install book test unit bench clean

# Two steps, as the Colab cell: requirements.txt less its '# no-deps' lines with their dependencies, then those
# lines (compressai, torchattacks) with --no-deps, whose declared numpy<2 / requests pins would otherwise block
# numpy 2, the only numpy with wheels for Python 3.13 and 3.14. constraints.txt pins every version (per Python
# where they must differ); `python3 .ci/check_wheels.py` checks that they resolve for each Python named above.
NO_DEPS = $(shell sed -n 's/[[:space:]]*\#[[:space:]]*no-deps.*//p' requirements.txt)

$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r <(grep -v '#[[:space:]]*no-deps' requirements.txt) -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps $(foreach r,$(NO_DEPS),'$(r)') -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install: $(BIN)/.installed

# The build's output goes through `robustnb.book watch`, which adds a status line every few seconds while a
# chapter executes (chapter i of n, elapsed vs the measured time, what it is doing); pipefail keeps the
# build's exit status. It ends with the claims summary (verdicts per paper, from the chapters' tables).
book: install
	set -o pipefail; TQDM_DISABLE=1 ROBUSTNB_PRESET=$(PRESET) $(BIN)/jupyter-book build . --builder html -W -n --keep-going 2>&1 \
	  | ROBUSTNB_PRESET=$(PRESET) $(BIN)/python -m robustnb.book watch
	@$(BIN)/python -m robustnb.book summary _build
	@echo "Open _build/html/index.html"

test: install
	$(BIN)/lint-imports
	rm -rf $(SMOKE_BUILD)
	TQDM_DISABLE=1 ROBUSTNB_PRESET=smoke $(BIN)/jupyter-book build . --builder html -W -n --keep-going --path-output $(SMOKE_BUILD)
	ROBUSTNB_PRESET=smoke ROBUSTNB_BOOK_HTML=$(SMOKE_BUILD)/_build/html \
	  $(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -q -rs --durations=25

unit: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests -q -m "not chapters and not book"

bench: install
	$(BIN)/python -m robustnb.bench --preset $(PRESET) --fresh-cache

clean:
	rm -rf _build
