# make test / make demo set up .venv from nothing, then run.
# TORCH_SPEC pins torch (these machines install a local CPU build of 2.13.0); override it for
# a CUDA machine, e.g. `make test TORCH_SPEC="torch==2.11.0"`, or TORCH_SPEC= to keep an existing torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo ablation spirals bench lint clean

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
	$(MAKE) test-verl

# the whole SkinFlow pipeline on the embedded default (docs/demo.md); a rerun reuses finished stages
demo: $(STAMP)
	$(PY) -m skinflow.cli demo --config recipes/pipeline/demo.yaml --out runs/demo

# the paper's ablation on the embedded default, 3 seeds (resumable)
ablation: $(STAMP)
	$(PY) -m skinflow.cli ablate --config recipes/pipeline/demo.yaml --out runs/ablation --seeds 0,1,2 --jobs 3

# FDLinear against nn.Linear on the two-spirals task
spirals: $(STAMP)
	$(PY) -m fdlinear.experiments.spirals --out runs/spirals

bench: $(STAMP)
	$(PY) -m pytest benchmarks

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

# --- verl integration (docs/verl.md): a second environment with verl 0.9.x and its transformers pin -----------
# make test-verl builds build/venv-verl from nothing (stamp build/venv-verl/.installed; build/ is git-ignored)
# and runs tests/verl on the CPU.
# The native extension is not built there (FDLINEAR_BUILD_NATIVE=0: the tests use the reference backend).
VERL_VENV ?= build/venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.installed

.PHONY: test-verl

$(VERL_STAMP): pyproject.toml setup.py requirements/verl-constraints.txt
	test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(VERL_PY) -m pip install --quiet "$(TORCH_SPEC)")
	$(VERL_PY) -m pip install --quiet setuptools wheel
	FDLINEAR_BUILD_NATIVE=0 $(VERL_PY) -m pip install --quiet --no-build-isolation \
		-c requirements/verl-constraints.txt -e ".[skinflow,dev,verl]" $(if $(TORCH_SPEC),"$(TORCH_SPEC)")
	touch $(VERL_STAMP)

test-verl: $(VERL_STAMP)
	$(VERL_PY) -m ruff check skinflow/verl tests/verl recipes/verl
	SKINFLOW_VERL_TESTS=1 HF_HUB_OFFLINE=1 $(VERL_PY) -m pytest tests/verl -q -p no:cacheprovider
