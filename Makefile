# d2-mmdet-bridge: the two commands are `make demo` and `make test`; both set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(wildcard ../shared)
COCO_ROOT ?=
DEMO_OUT ?= demo_out

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup_stack.sh

test: setup
	BRIDGE_SHARED=$(abspath $(SHARED)) $(PY) -m pytest -q tests

demo: setup
	$(PY) examples/panoptic_fpn_demo.py --out $(DEMO_OUT) $(if $(COCO_ROOT),--coco-root $(COCO_ROOT),)

bench: setup
	$(PY) benchmarks/bench_subset.py --scale 0.25
	$(PY) benchmarks/bench_compare.py --size-gb 0.5
	$(PY) benchmarks/bench_convert.py
	$(PY) benchmarks/bench_record.py
	$(PY) benchmarks/bench_report.py --size-gb 0.5

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
