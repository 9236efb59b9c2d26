# Two commands: `make demo` and `make test`. Each creates .venv (Python 3.12+) on first use.
# The first Python 3.12+ that actually runs (a pyenv shim for an inactive version does not).
PYTHON ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python3 2>/dev/null) python3.13 python3.12 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
# tests/test_dashboard.py renders the dashboard in Debian's Chromium (about 35 s to install, once).
CHROMIUM := /usr/bin/chromium
# tests/test_integrations_node.py runs examples/node/agent.mjs: Node 20+ and the openai Node SDK (npm ci, 5 s, once).
NODE_MODULES := examples/node/node_modules/.package-lock.json
# litellm would otherwise fetch its price map from the network at import.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.12+ not found: run 'make PYTHON=/path/to/python3.12 ...'" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "AgentGym needs Python 3.12+"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/agentgym demo

test: $(VENV)/.installed $(CHROMIUM) $(NODE_MODULES)
	$(VENV)/bin/python -m pytest -q

$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "tests/test_dashboard.py needs Chromium at \
	$(CHROMIUM): install Debian's chromium package (as root: apt-get install chromium), then run make test again" >&2; exit 1; }
	@echo "installing Debian's chromium for tests/test_dashboard.py"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

$(NODE_MODULES): examples/node/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "tests/test_integrations_node.py \
	needs Node 20+ and npm: install them (as root: apt-get install nodejs npm), then run make test again" >&2; exit 1; }; \
	echo "installing Debian's nodejs and npm for tests/test_integrations_node.py"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@node -e 'process.exit(+(process.versions.node.split(".")[0] < 20))' || { echo "tests/test_integrations_node.py needs \
	Node 20+ (the openai Node SDK), not $$(node --version)" >&2; exit 1; }
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error

# LiteLLM's own proxy, the comparison point, lives in a venv of its own, never in .venv.
LITELLM_VENV := benchmarks/.venv-litellm
$(LITELLM_VENV)/.installed: $(VENV)/.installed
	$(VENV)/bin/uv venv -q --python $(VENV)/bin/python $(LITELLM_VENV)
	$(VENV)/bin/uv pip install -q --python $(LITELLM_VENV)/bin/python 'litellm[proxy]' opentelemetry-sdk py-spy
	touch $@

bench: $(VENV)/.installed $(LITELLM_VENV)/.installed
	$(VENV)/bin/python benchmarks/proxy_overhead.py
	$(VENV)/bin/python benchmarks/recorder_throughput.py
	$(VENV)/bin/python benchmarks/scenario_baselines.py --episodes 500 --seed 0
	$(VENV)/bin/python benchmarks/planner_speed.py --decisions 10000 --device cpu
	$(VENV)/bin/python benchmarks/bfcl_heldout.py --rounds 6 --seed 0

clean:
	rm -rf $(VENV) .pytest_cache
