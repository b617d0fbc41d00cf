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
## kernel stack for that machine's Python 3.12 (its image has torch, numpy, pandas, scipy, OpenCV, ...): what pip
## resolves for them less the image's packages, pinned to the versions rehearsed with DEVICE=cpu on Python 3.12
## and torch 2.11; data/ gets the CIFAR-10 JPEG archive from $SAOL_DATA. Both are ignored (~34 MB together).
GPU_WHEELS := papermill==2.7.0 scrapbook==0.5.0 nbformat==5.11.1 nbclient==0.11.0 ipykernel==7.4.0 ipython==9.19.1 \
	ipython_pygments_lexers==1.1.1 jupyter_client==8.10.0 jupyter_core==5.9.1 traitlets==5.16.1 pyzmq==27.3.0 \
	tornado==6.6.1 comm==0.2.3 debugpy==1.8.22 matplotlib_inline==0.2.2 nest_asyncio2==1.7.4 prompt_toolkit==3.0.53 \
	wcwidth==0.9.5 pexpect==4.9.0 ptyprocess==0.7.0 jedi==0.20.1 parso==0.8.7 stack_data==0.6.3 executing==2.3.0 \
	asttokens==3.0.2 pure_eval==0.2.4 fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema_specifications==2025.9.1 \
	referencing==0.37.0 rpds_py==2026.9.1 platformdirs==4.14.9 entrypoints==0.4.2 tenacity==9.2.1
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
