# stowd: `make run` starts the engine, `make test` runs the whole suite.
# Both install what is missing first (Debian packages as root, then the venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := runc conmon iptables iproute2 busybox-static procps tar containernetworking-plugins tmux tini strace docker-registry
STOWD_HOST ?= unix:///run/stowd.sock

.PHONY: run test deps venv lint types contracts unit integration bench clean soak fuzz

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: deps venv
	$(VENV)/bin/stowd serve -H $(STOWD_HOST) --seed-busybox

lint: venv
	$(VENV)/bin/ruff check stowd tests bench

types: venv
	$(VENV)/bin/mypy

contracts: venv
	$(VENV)/bin/lint-imports

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: deps venv
	$(VENV)/bin/pytest -q tests/integration

# The slow tests (the crash walk through every point, the 1,000-cycle leak soak) run in
# their short forms here and in full in `make soak`.
test: deps venv lint types contracts
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow" tests

FUZZ_SECONDS ?= 300
fuzz: deps venv
	$(VENV)/bin/pip install -q -e '.[test,fuzz]'
	$(VENV)/bin/python -m tests.fuzz.run_fuzz --seconds $(FUZZ_SECONDS)

soak: deps venv
	$(VENV)/bin/pytest -q -s -p no:cacheprovider -m slow tests

bench: deps venv
	$(VENV)/bin/python bench/lifecycle.py

clean:
	rm -rf $(VENV) build *.egg-info
