# d2-mmdet-bridge: the two commands are `make demo` and `make test`; both set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(wildcard ../shared)
COCO_ROOT ?=
DEMO_OUT ?= demo_out

.PHONY: setup test demo bench clean compat-refresh

setup:
	@bash scripts/setup_stack.sh

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	BRIDGE_SHARED=$(abspath $(SHARED)) $(PY) -m pytest -q tests
	BRIDGE_SHARED=$(abspath $(SHARED)) bash scripts/compat_test.sh

# Rebuild .venv-compat with the then-newest releases (it is otherwise kept until its inputs change).
compat-refresh:
	rm -rf .venv-compat
	@bash scripts/setup_stack.sh

# The demo's recipe runs every stage; exit 1 (the divergences the demo is known to show) is its expected verdict.
demo: setup
	$(PY) -m bridge.align examples/panoptic_fpn_demo.yaml --out $(DEMO_OUT) $(if $(COCO_ROOT),--coco-root $(COCO_ROOT),) \
		|| [ $$? -eq 1 ]

bench: setup
	$(PY) benchmarks/bench_subset.py --scale 0.25
	$(PY) benchmarks/bench_compare.py --size-gb 0.5
	$(PY) benchmarks/bench_convert.py
	$(PY) benchmarks/bench_record.py
	$(PY) benchmarks/fuzz_cli.py --cases 5000
	$(PY) benchmarks/bench_report.py --size-gb 0.5

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
