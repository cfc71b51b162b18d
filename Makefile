# make test / make demo set up .venv from nothing, then run.
# TORCH_SPEC pins torch (these machines install a local CPU build of 2.13.0); override it for
# a CUDA machine, e.g. `make test TORCH_SPEC="torch==2.11.0"`, or TORCH_SPEC= to keep an existing torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install --quiet "$(TORCH_SPEC)")
	$(PY) -m pip install --quiet setuptools wheel ninja
	$(PY) -m pip install --quiet --no-build-isolation -e ".[triton,skinflow,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests -q

demo: $(STAMP)
	$(PY) -m fdlinear.experiments.spirals --out runs/spirals

bench: $(STAMP)
	$(PY) -m pytest benchmarks

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
