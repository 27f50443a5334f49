# The two commands of the README.
.PHONY: demo test
demo:
	bash scripts/bootstrap.sh
	.venv/bin/polyalign demo
test:
	bash scripts/bootstrap.sh
	bash scripts/test-deps.sh
	.venv/bin/python -m pytest -q -ra
	bash scripts/wheel_check.sh
