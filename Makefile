# Developer entry points. `make help` lists them.
#
# The stack targets wrap `docker compose` (configure it through .env, see
# .env.example); the Python targets use the project virtualenv .venv, created on
# first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST  := $(PY) -m pytest
COMPOSE ?= docker compose
# Extra arguments, e.g. make test-unit ARGS="-x -k codec", make bench ARGS="--clients 50"
ARGS    ?=

.PHONY: help venv up down logs initial-password chat user rollout test test-unit test-integration lint bench

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---- virtualenv ------------------------------------------------------------------
# One stamp per set of extras, re-made when pyproject.toml changes: `make test`
# installs only what the tests need (CI), `make venv` everything.
$(PY):
	python3 -m venv $(VENV)

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(VENV)/.stamp-all: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,bench,lint]'
	@touch $@ $(VENV)/.stamp-test

venv: $(VENV)/.stamp-all ## Create .venv with the project and all extras (test, bench, lint)

# ---- the stack --------------------------------------------------------------------
up: ## Build and start the stack in the background (first start pulls the model)
	$(COMPOSE) up -d --build
	@echo "Model pull and start-up progress: make logs   Chat: make chat"
	@echo "First start? Log in as admin with the password from: make initial-password"

down: ## Stop the stack (volumes are kept; `docker compose --profile '*' down -v` deletes them all)
	$(COMPOSE) down

logs: ## Follow the stack's logs
	$(COMPOSE) logs -f --tail=100

initial-password: ## Print admin's password generated at the first start (until it is changed)
	$(COMPOSE) exec server chat-server initial-password

chat: ## Open the terminal client against the running stack
	$(COMPOSE) run --rm client

user: ## Add a user to the running server: make user NAME=alice (asks for the password)
	@test -n "$(NAME)" || { echo "usage: make user NAME=alice" >&2; exit 2; }
	@# Read on the terminal without echo, then hand it over through a pipe: a
	@# password never appears in argv, the environment or the shell history.
	@read -r -s -p "Password for $(NAME): " pw; echo >&2; \
	 read -r -s -p "Repeat password: " pw2; echo >&2; \
	 if [ -z "$$pw" ] || [ "$$pw" != "$$pw2" ]; then echo "passwords empty or different" >&2; exit 1; fi; \
	 printf '%s\n' "$$pw" | $(COMPOSE) exec -T server chat-server users add "$(NAME)" --password-stdin

# Compose files: COMPOSE_FILE in .env (as for the targets above), else the base and
# HA files; or name them: make rollout ARGS="-f docker-compose.yml -f ... -f docker-compose.ha.yml"
rollout: ## HA stack: replace the server replicas one at a time (after building/pulling a new image)
	deploy/rolling-restart.sh $(ARGS)

# ---- checks -----------------------------------------------------------------------
test: test-unit test-integration ## Run the unit suite, then the integration suite

test-unit: $(VENV)/.stamp-test ## Unit tests (no Docker needed)
	$(PYTEST) -m "not integration" $(ARGS)

test-integration: $(VENV)/.stamp-test ## Integration tests: the compose stack with the Ollama stand-in, and with llama.cpp and a tiny real model (needs Docker)
	$(PYTEST) -m integration tests/integration $(ARGS)

lint: $(VENV)/.stamp-all ## ruff, mypy and vulture (dead code)
	$(PY) -m ruff check .
	$(PY) -m vulture
	MYPYPATH=services/shared:services/server:services/client \
	  $(PY) -m mypy -p chatcore -p chat_server -p chat_client

bench: $(VENV)/.stamp-all ## Load benchmark against the stack (see bench/README)
	$(PY) bench/run.py $(ARGS)
