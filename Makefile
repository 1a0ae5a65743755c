# monai_umed: set up a local virtual environment and run the main job or the tests.
# `make protect` and `make test` work on a fresh machine with Python 3.9+ (tested: 3.11).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.monai_umed-installed

.PHONY: setup protect test test-all clean-outputs

setup: $(STAMP)

# torch is pinned to the CPU build available here so that no multi-GB CUDA build is downloaded.
$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Main job on the embedded (synthetic) default dataset with the short demo schedule (configs/demo.json);
# real data: run protect.json alone (see README), its defaults are the measured recipe.
protect: $(STAMP)
	$(PY) -m monai.bundle run protect --config_file "['bundles/umed/configs/protect.json','bundles/umed/configs/demo.json']" $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

clean-outputs:
	rm -rf outputs
