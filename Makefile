# The two commands of the README (`make test` lints first), plus `make lint` and `make test-fast`.
.PHONY: demo test lint test-fast
LINT_PATHS = src tests scripts bench
demo:
	bash scripts/bootstrap.sh
	.venv/bin/polyalign demo
lint:
	bash scripts/bootstrap.sh
	.venv/bin/ruff check $(LINT_PATHS)
	.venv/bin/ruff format --check $(LINT_PATHS)
	.venv/bin/mypy
# No model weights (packaged or tiny), no extra process: under a minute.
test-fast:
	bash scripts/bootstrap.sh
	.venv/bin/python -m pytest -q -ra -m "not slow"
test: lint
	bash scripts/bootstrap.sh
	bash scripts/test-deps.sh
	.venv/bin/python -m pytest -q -ra --durations=15
	bash scripts/wheel_check.sh
