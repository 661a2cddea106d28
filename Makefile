# The README's two commands are `make demo` and `make test`; everything else here is a step they use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.ssl_mepr-installed
RUN ?= demo
# The demo's tables and figures are committed in figures/; any other run keeps its own in its folder.
FIGURES := $(if $(filter demo,$(RUN)),figures,runs/$(RUN)/figures)

# Nothing touches the network at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: demo test family ablations-family explorer-screenshot setup export clean-check nbtest pytest help

help:
	@echo "make demo   set up .venv (first time only) and run the demo"
	@echo "make test   set up .venv (first time only) and run every test"
	@echo "make family the demo configuration with three seeds: intervals and paired tests into figures/ (about 15 min)"
	@echo "make ablations-family  every ablation in every seed's run of the family, paired tests over seeds and clips, into figures/ (GROUPS=modalities: one group)"
	@echo "make explorer-screenshot  redraw figures/explorer_video.png from runs/demo in Chromium (after make demo)"

## Set-up: create .venv when missing and install the package with its extras; skipped when up to date.
setup: $(INSTALLED)
$(INSTALLED): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	@touch $@

## The main job: stages 1, 2 and 3 on the embedded demo corpus, then the results tables and the emotion-trait statistics
## (executed notebooks in runs/$(RUN)/, tables and figures in $(FIGURES)/), then the summary table, then `ssl-mepr predict`
## on a generated portrait clip with the run's tiny backbones (the whole path from a video file).
demo: $(INSTALLED)
	@mkdir -p runs/$(RUN)
	$(BIN)/papermill nbs/stage1.ipynb runs/$(RUN)/stage1.ipynb -f params/demo.yaml -p run_name $(RUN)
	$(BIN)/papermill nbs/stage2.ipynb runs/$(RUN)/stage2.ipynb -f params/demo.yaml -p run_name $(RUN)
	$(BIN)/papermill nbs/stage3.ipynb runs/$(RUN)/stage3.ipynb -f params/demo.yaml -p run_name $(RUN)
	$(BIN)/papermill nbs/tables.ipynb runs/$(RUN)/tables.ipynb -p run_name $(RUN) -p figures_dir $(FIGURES)
	$(BIN)/papermill nbs/correlations.ipynb runs/$(RUN)/correlations.ipynb -p run_name $(RUN) -p figures_dir $(FIGURES)
	@$(BIN)/ssl-mepr train --params params/demo.yaml --run-name $(RUN)
	@$(PY) -c "from ssl_mepr.media import write_portrait_clip; write_portrait_clip('runs/$(RUN)/sample clip.mp4', seconds=3)"
	$(BIN)/ssl-mepr predict "runs/$(RUN)/sample clip.mp4" --run runs/$(RUN) --transcript "I really enjoyed meeting everyone today"

## A run family (params/family.yaml: the demo configuration with seeds 42, 7 and 123, one shared corpus): each seed's
## run (resumable), then nbs/family.ipynb's intervals over seeds and clips and its paired tests, into figures/family_*.
family: $(INSTALLED)
	@mkdir -p runs/family
	$(BIN)/papermill nbs/family.ipynb runs/family/family.ipynb -p figures_dir figures

## Ablations over the family's seeds: stages 1-2 of params/family.yaml's family (resumable; read back after `make family`), then
## nbs/ablations.ipynb on it once per group, each variant trained in every seed's run and tested in pairs against the full model
## (executed notebooks in runs/family/; tables and forest plots in figures/ablations_family_<group>.*, all three committed:
## 20 to 80 minutes a group on a 2-core machine). GROUPS="modalities" runs one group.
GROUPS ?= modalities components switches
ablations-family: $(INSTALLED)
	$(BIN)/ssl-mepr train --params params/family.yaml --stage 2
	for group in $(GROUPS); do \
	  $(BIN)/papermill nbs/ablations.ipynb runs/family/ablations-$$group.ipynb -p family family -p figures_dir figures -f params/ablations/$$group.yaml || exit 1; done

## The README's screenshot of the explorer's video view (figures/explorer_video.png): the browser test, run against
## runs/$(RUN) (after `make demo`) instead of its tiny run. Needs Debian's chromium.
explorer-screenshot: $(INSTALLED)
	SSL_MEPR_BROWSER_RUN=runs/$(RUN) SSL_MEPR_SCREENSHOTS=figures MPLBACKEND=Agg $(BIN)/pytest -q tests/test_explorer_browser.py

## All tests: the notebooks and package agree, the notebooks run, the integration tests pass.
test: $(INSTALLED) clean-check nbtest pytest

clean-check: $(INSTALLED)
	@$(BIN)/nbdev-export
	@$(BIN)/nbdev-clean
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  drift=$$(git status --porcelain --untracked-files=all -- nbs ssl_mepr); \
	  if [ -n "$$drift" ]; then echo "nbdev-export/nbdev-clean changed the tree (export and clean the notebooks, then commit):"; echo "$$drift"; exit 1; fi; \
	  echo "clean-check: notebooks are clean and the package matches them"; \
	else echo "clean-check: not a git checkout, skipped"; fi

## Each test command gets a temporary folder of its own (TMPDIR), removed afterwards whatever the outcome: notebook
## workers exit without running exit handlers, so scratch folders they made would otherwise pile up in /tmp.
IN_SCRATCH = scratch=$$(mktemp -d -t ssl_mepr_tests.XXXXXX) && trap 'rm -rf "$$scratch"' EXIT && TMPDIR=$$scratch

nbtest: $(INSTALLED)
	$(IN_SCRATCH) MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --timing

pytest: $(INSTALLED)
	$(IN_SCRATCH) MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/pytest -q -rs -n 2 --dist loadfile
