.PHONY: run test lint bench

run:  ## set up and run the whole product on this machine
	scripts/run.sh

test:  ## set up and run the whole test suite
	scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
