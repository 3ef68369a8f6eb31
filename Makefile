# The project's verbs. `make test` and `make demo` install everything they need on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
# The import roots (as pyproject.toml's pytest pythonpath): the Lambda package and the model's parts.
IMPORT_PATH := .:functions:model/serving:model/training:model/tools

.PHONY: prerequisites install test unit lint typecheck pytest demo e2e stack soak query label export redrive reclassify compare export-table launch preflight deploy package-size benchmark serving-benchmark benchmark-photos pipeline-benchmark cost clean

# What the local stack needs of this machine (Java, util-linux, namespaces), said before anything slow.
prerequisites:
	@$(PYTHON) devstack/prerequisites.py

# What the local stack runs: the project, the serving stack, and the SAM CLI's Lambda Runtime Interface Emulator.
LOCAL_STACK := prerequisites $(VENV)/.installed .venv-serving/.installed .venv-sam/.installed

# Five environments: the project (.venv); the unit floor (.venv-unit); the SAM CLI and checkov, whose pins
# clash; and the inference image's serving stack (.venv-serving: torch 2.6, TorchServe 0.12, the toolkit),
# from which every model container runs (devstack/aws/container.py; TorchServe needs Java 17+).
$(VENV)/.installed: requirements/dev.txt requirements/unit.txt functions/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements/dev.txt
	@touch $@

# The unit floor: the functions' dependencies and pytest, no torch (tests/unit must need no more).
.venv-unit/.installed: requirements/unit.txt functions/requirements.txt
	$(PYTHON) -m venv .venv-unit
	.venv-unit/bin/pip install $(PIP_FLAGS) -r requirements/unit.txt
	@touch $@

.venv-sam/.installed: requirements/sam.txt
	$(PYTHON) -m venv .venv-sam
	.venv-sam/bin/pip install $(PIP_FLAGS) -r requirements/sam.txt
	@touch $@

.venv-checkov/.installed: requirements/checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install $(PIP_FLAGS) -r requirements/checkov.txt
	@touch $@

.venv-serving/.installed: requirements/serving.txt
	@command -v java >/dev/null || { echo "TorchServe needs Java 17 or later (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv .venv-serving
	.venv-serving/bin/pip install $(PIP_FLAGS) -r requirements/serving.txt
	@touch $@

install: $(VENV)/.installed .venv-unit/.installed .venv-sam/.installed .venv-checkov/.installed .venv-serving/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Everything but the unit floor, which `make unit` runs from its own environment (and `make test` beside this),
# in PYTEST_WORKERS processes, each taking whole modules in the order tests/conftest.py gives (the longest
# first; xdist's own reordering, by number of tests, is turned off): much of the suite waits on stacks,
# containers and queues rather than computing, so 4 workers finish sooner than fewer on 2 cores
# (docs/testing.md). Torch gets one thread in each, so that the workers do not run twice as many threads as
# there are cores; model containers and Lambda environments take their threads from the template. The
# suite starts some 45 model containers: their JVMs compile with C1 only (TorchServe's front end starts
# with about 15% less CPU, and behaves the same).
PYTEST_WORKERS ?= 4
pytest: prerequisites install
	OMP_NUM_THREADS=1 JAVA_TOOL_OPTIONS=-XX:TieredStopAtLevel=1 $(PY) -m pytest --ignore=tests/unit -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The static checks and the unit floor run beside pytest's workers (seconds of CPU while those mostly wait);
# each line is printed whole, and any that fails fails make test.
test: prerequisites
	@$(MAKE) --no-print-directory -j4 --output-sync=line lint typecheck unit pytest

# The inner loop: pure logic with in-memory fakes, in seconds, from the unit floor's environment
# (`pytest -m "not slow"` in .venv adds moto).
unit: .venv-unit/.installed
	.venv-unit/bin/python -m pytest tests/unit -q

demo: $(LOCAL_STACK)
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.demo

# The local stack, kept up until Ctrl-C (moto on :5000, the SageMaker runtime on :8080).
# STACK_ARGS example: --model path/to/model.tar.gz --parameter InferenceMode=batch
# The acceptance run for any stack (cli/e2e.py): make e2e STACK=<deployed stack name>, or the local stack.
e2e: $(if $(STACK),$(VENV)/.installed,$(LOCAL_STACK))
ifdef STACK
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.e2e --stack $(STACK)
else
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.e2e
endif

stack: $(LOCAL_STACK)
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.up $(STACK_ARGS)

# Load and faults together on the local stack (10,000 images in auto mode unless SOAK_ARGS says otherwise).
soak: $(LOCAL_STACK)
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.soak $(SOAK_ARGS)

# Query predictions, e.g. make query ARGS="breed Afghan_hound" (with the variables `make stack` prints).
query: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.query $(ARGS)

# The review loop (docs/operations.md, Review): make query ARGS="review", then
# make label ARGS="'incoming/my dog.jpg' --breed French_bulldog", then make export ARGS="--to data/reviewed".
label: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.label $(ARGS)

export: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.export $(ARGS)

# Try FAILED images again (copied onto themselves, so S3 notifies them anew), e.g.
# make redrive ARGS="--stack dogbreed --prefix incoming/ --since 2026-12-01T00:00 --dry-run"
redrive: $(VENV)/.installed
	$(PY) -m cli.redrive $(ARGS)

# Classify images again with the current model, by the flood path, e.g.
# make reclassify ARGS="--stack dogbreed --model-version sha256:..." (or no --stack, with make stack's variables)
reclassify: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.reclassify $(ARGS)

# make export-table ARGS="--stack dogbreed" (or no --stack, with make stack's variables)
export-table: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.export_table $(ARGS)

# make compare ARGS="--stack dogbreed --candidate s3://.../model.tar.gz [--sample 1000] [--dry-run]"
compare: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.compare $(ARGS)

# The model's SageMaker lifecycle, e.g. make launch ARGS="tune --data s3://... --role ... --bucket ..."
launch: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) model/tools/launch.py $(ARGS)

# Check an AWS account before the first deploy (read-only), e.g. make preflight ARGS="--region eu-west-1"
preflight: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m cli.preflight $(ARGS)

# Build and deploy to your AWS account (samconfig.toml holds the defaults; --guided asks the rest).
# sam build runs functions/Makefile, whose pip (this venv's) fetches python3.12 arm64 wheels.
deploy: .venv-sam/.installed
	PYTHON="$(CURDIR)/.venv-sam/bin/python" .venv-sam/bin/sam build && .venv-sam/bin/sam deploy --guided

package-size: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m tools.package_size

benchmark: $(VENV)/.installed .venv-serving/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) model/tools/benchmark.py $(BENCHMARK_ARGS)

# The handler through TorchServe and the toolkit, for worker counts x torch threads x DECODE_THREADS.
serving-benchmark: $(VENV)/.installed .venv-serving/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) model/tools/serving_benchmark.py $(SERVING_ARGS)

# What downsizing a large photo changes in the model's answer, and its time and memory per photo.
benchmark-photos: $(VENV)/.installed
	PYTHONPATH=$(IMPORT_PATH) $(PY) model/tools/photo_benchmark.py $(PHOTOS_ARGS)

IMAGES ?= 500
pipeline-benchmark: $(LOCAL_STACK)
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.pipeline_benchmark --images $(IMAGES)

# What 1,000 images cost on AWS in each mode, from a measured run on the local stack (devstack/workloads/cost.py).
cost: $(LOCAL_STACK)
	PYTHONPATH=$(IMPORT_PATH) $(PY) -m devstack.workloads.cost $(COST_ARGS)

clean:
	rm -rf .venv .venv-unit .venv-sam .venv-checkov .venv-serving .cache .aws-sam build .devstack .pytest_cache .mypy_cache .ruff_cache
