# The contributor's entry points: what CI runs, one target each. `make help` lists them.
# Everything runs from the project's virtual environment (.venv), made by `make setup`.
VENV := .venv/bin

.PHONY: help setup lint format typecheck layers check docs config-reference test ci demo lock
help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## the virtual environment, anvil and PostgreSQL (idempotent)
	bash .ci/setup

lint:  ## ruff over the package, the tests, bench and migrations; the formatting
	$(VENV)/ruff check scanner tests bench migrations docs/examples
	$(VENV)/ruff format --check scanner tests bench migrations

format:  ## apply ruff's fixes and formatting
	$(VENV)/ruff check --fix scanner tests bench migrations docs/examples
	$(VENV)/ruff format scanner tests bench migrations

typecheck:  ## mypy, strict: the package, the tests and bench (pyproject: tool.mypy)
	$(VENV)/mypy

layers:  ## the import contracts between the package's layers (pyproject: tool.importlinter)
	$(VENV)/lint-imports

check:  ## every static check: the hooks of .pre-commit-config.yaml, over every file
	$(VENV)/pre-commit run --all-files --show-diff-on-failure

docs:  ## build the documentation site (docs/, mkdocs.yml) into site/, failing on any warning
	NO_MKDOCS_2_WARNING=1 $(VENV)/mkdocs build --strict --quiet

config-reference:  ## write docs/configuration.md from the settings model
	$(VENV)/python -m scanner.config_reference > docs/configuration.md

test:  ## the README's test command
	bash .ci/setup && $(VENV)/python -m pytest

ci:  ## exactly what CI runs on a clean clone
	bash .ci/run

demo:  ## the scanner's main job on SQLite and a local anvil
	bash .ci/setup && $(VENV)/scanner demo

lock:  ## refresh the image's pinned runtime versions (constraints.txt) from pyproject.toml
	bash .ci/lock
