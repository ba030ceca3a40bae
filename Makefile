# Two commands on a fresh machine: `make demo` then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch for development and CI; GPU users install their own CUDA build first.
TORCH_SPEC ?= torch==2.13.0
DEMO_CKPT := .cache/tiny-checkpoint
DEMO_OUT := demo-output

.PHONY: install demo demo-edit demo-loops test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[test,ja]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	RAY_AUTH_MODE=disabled $(BIN)/acestep-batch model make-tiny $(DEMO_CKPT)
	RAY_AUTH_MODE=disabled $(BIN)/acestep-batch submit manifests/demo.parquet \
		--output $(DEMO_OUT) --checkpoint $(DEMO_CKPT)

# Edit tasks and LoRA on the demo's own renders (run `make demo` first).
demo-edit: install
	$(BIN)/acestep-batch model make-tiny-lora .cache/tiny-lora --checkpoint $(DEMO_CKPT)
	RAY_AUTH_MODE=disabled $(BIN)/acestep-batch submit manifests/edit_tasks.jsonl \
		--output demo-edit-output --checkpoint $(DEMO_CKPT)

# A small loop library on the tiny checkpoint: spec -> manifest -> loops with QC -> HTML report.
# (Random weights make noise, so the tempo/key checks are off here; keep them on for real models.)
demo-loops: install
	test -d $(DEMO_CKPT) || RAY_AUTH_MODE=disabled $(BIN)/acestep-batch model make-tiny $(DEMO_CKPT)
	$(BIN)/acestep-batch manifest expand jobs/text2samples/small.yaml -o .cache/loops-small.parquet
	RAY_AUTH_MODE=disabled $(BIN)/acestep-batch submit .cache/loops-small.parquet --output demo-loops-output \
		--checkpoint $(DEMO_CKPT) --loops --bit-depth 24 --no-qc-bpm --no-qc-key
	$(BIN)/acestep-batch report demo-loops-output

test: install
	RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	RAY_AUTH_MODE=disabled $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(DEMO_OUT) demo-edit-output demo-loops-output .cache .pytest_cache
