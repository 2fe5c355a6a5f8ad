# make test  : create .venv, install the project (pinned by constraints.txt), run the test suite
# make demo  : same set-up, then the main job on the shipped model
# make docs  : the documentation site (mkdocs, warnings are errors) into site/
# make bench : the benchmarks (side-by-side timings against HF, TransformerLens and nnsight; the editing benchmark; graphs under a memory bound; probe-relation on 1 and 2 Ray workers; dictionaries from an activation store)
# make bench-graph : attribution graphs side by side with circuit-tracer 0.5.0 (in a venv of its own, .venv-ct)
# make peers-check : circuit-tracer's own transcoder files read by ours; our frontend JSON against its own, both opened in its frontend

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: test demo docs bench bench-graph peers-check install browser clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The browser tests and the demo's screenshots drive Debian's Chromium (no browser download).
browser:
	@test -x /usr/bin/chromium || { echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: $(STAMP) browser
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

demo: $(STAMP) browser
	$(VENV)/bin/interp demo

docs: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	$(PY) -m benchmarks.forward
	$(PY) -m benchmarks.patching
	$(PY) -m benchmarks.editing
	$(PY) -m benchmarks.circuits
	$(PY) -m benchmarks.views
	$(PY) -m benchmarks.graph_memory
	$(PY) -m benchmarks.scale
	$(PY) -m benchmarks.activation_store

# circuit-tracer needs TransformerLens 3 and transformers <= 4.57: its own venv.
CT_STAMP := .venv-ct/.installed-stamp
$(CT_STAMP): benchmarks/peers/circuit_tracer_requirements.txt benchmarks/peers/setup_circuit_tracer.sh
	bash benchmarks/peers/setup_circuit_tracer.sh
	touch $(CT_STAMP)

bench-graph: $(STAMP) $(CT_STAMP)
	$(PY) -m benchmarks.graph --peer-python .venv-ct/bin/python

peers-check: $(STAMP) $(CT_STAMP) browser
	$(PY) benchmarks/peers/check_circuit_tracer_files.py --json benchmarks/results/circuit_tracer_files.json
	$(PY) benchmarks/peers/check_circuit_tracer_json.py --json benchmarks/results/circuit_tracer_json.json \
	  --render benchmarks/results/circuit_tracer_frontend

clean:
	rm -rf $(VENV) .venv-ct build site *.egg-info .pytest_cache
