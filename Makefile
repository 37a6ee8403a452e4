# The two commands of the README: `make demo` (main job on the synthetic set) and `make test`.
# Each does all the set-up it needs; tools/setup_env.sh is idempotent. `make lint`: flake8 and
# isort (configured in setup.cfg; the same checks as .pre-commit-config.yaml).
VENV ?= .venv
PY := $(VENV)/bin/python
DATA := data/synthetic_coco
PYTEST_ARGS ?=

.PHONY: setup data demo test lint clean-demo

LINT_PATHS := mmdet_maxq tools tests benchmarks configs

setup:
	bash tools/setup_env.sh

$(DATA)/annotations/instances_val.json: | setup
	$(PY) tools/misc/make_synthetic_coco.py $(DATA) --train 128 --val 32 --seed 0 --overwrite

data: setup $(DATA)/annotations/instances_val.json

demo: data
	bash tools/run_demo.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
