# The two commands a user needs: `make demo` and `make test`. Both create .venv when missing and
# install the exact versions pinned in requirements.lock (the versions the tests ran with).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mirecall_jax.demo

test: $(STAMP)
	$(PY) -m pytest tests

# Re-resolve the newest versions allowed by pyproject.toml and pin them (run, then `make test`).
lock:
	rm -rf /tmp/mirecall-lock && $(PYTHON) -m venv /tmp/mirecall-lock
	/tmp/mirecall-lock/bin/pip install --quiet --upgrade pip
	/tmp/mirecall-lock/bin/pip install --quiet ".[test]"
	/tmp/mirecall-lock/bin/pip freeze --exclude mirecall_jax > requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info
