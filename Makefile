# One entry point for developers, CI and the README.
#   make demo   install everything, then run the TRE on the embedded demo data
#   make test   install everything, then run the whole test suite
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export TRE_HOME ?= $(CURDIR)/var
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup demo smoke test check fix docs docs-serve screenshots clean

# tre.workspace runs from the workspaces' own environment: setup installs it there again when
# it changes.
$(VENV)/.installed: pyproject.toml infra/setup.sh $(wildcard tre/workspace/*.py) tre/exceptions.py tre/sql.py
	bash infra/setup.sh
	touch $@

setup: $(VENV)/.installed ## Install Debian packages (as root), .venv, Keycloak

demo: setup ## Keycloak; synthetic data ingested; example projects provisioned; portal; hub
	$(BIN)/tre up

smoke: setup ## Bring the whole TRE up, run a short journey through it, stop it
	$(BIN)/tre up --smoke

test: setup ## Run every test (Keycloak, PostgreSQL, browsers included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: setup ## Lint, format check, stale generated docs, strict docs build
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m tre.docs --check
	$(BIN)/mkdocs build --strict --quiet --site-dir /tmp/tre-site

fix: setup ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: setup ## Regenerate the reference pages and build the site into site/
	$(BIN)/python -m tre.docs
	$(BIN)/mkdocs build --strict

screenshots: setup ## Refresh the portal screenshots of the docs (runs the browser test)
	TRE_SCREENSHOTS_DIR=$(CURDIR)/docs/images $(BIN)/python -m pytest tests/browser -q

docs-serve: docs
	$(BIN)/mkdocs serve -a 127.0.0.1:8001

clean: ## Stop local servers and delete the TRE home (keeps downloads)
	-$(BIN)/tre down
	rm -rf var site
