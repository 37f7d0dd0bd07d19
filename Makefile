# OpenVINO Model Server RAG chatbot: set-up, run, test, package.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed

SERVABLE    := servable_stream
# The models default to what the servable is told in the environment (SELECTED_MODEL, EMBEDDING_MODEL).
LLM         ?= $(or $(SELECTED_MODEL),smollm2-135m-instruct)
LLM_DIR     := $(SERVABLE)/$(LLM)_INT4_compressed_weights
EMBEDDING   ?= $(or $(EMBEDDING_MODEL),all-MiniLM-L6-v2)
EMB_DIR     := $(SERVABLE)/$(EMBEDDING)
DEVICE      ?= CPU
# What the servable reads (servable_stream/ragbot/settings.py): the models `make models` built (or the
# folders set in the environment), and DEVICE.
SERVABLE_ENV = SELECTED_MODEL=$(LLM) LLM_MODEL_DIR=$(or $(LLM_MODEL_DIR),$(notdir $(LLM_DIR))) \
	EMBEDDING_MODEL=$(EMBEDDING) EMBEDDING_MODEL_DIR=$(or $(EMBEDDING_MODEL_DIR),$(notdir $(EMB_DIR))) DEVICE=$(DEVICE)

GRPC_PORT   ?= 9000
REST_PORT   ?= 8000
WEB_PORT    ?= 9001
API_PORT    ?= 9002

# make python_image, as in the OpenVINO Model Server demos.
BASE_OS               ?= ubuntu
OVMS_CPP_DOCKER_IMAGE ?= openvino/model_server
OVMS_CPP_IMAGE_TAG    ?= latest
IMAGE_NAME            ?= $(OVMS_CPP_DOCKER_IMAGE):py

.PHONY: help install models serve client run test lint bench eval python_image client_image requirements clean

help:  ## List the targets.
	@grep -E '^[a-z_]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet --no-deps $$($(PY) -c "import tomllib;print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['ovms-rag']['no-deps']))")
	$(PIP) install --quiet -e ".[servable,server,client,scripts,bench,dev]"
	touch $@

install: $(STAMP)  ## Create .venv and install the project (once; again only when pyproject.toml changes).

$(LLM_DIR)/openvino_model.xml: | $(STAMP)
	$(PY) scripts/download_model.py --model $(LLM)
	$(PY) scripts/compress_model.py --model $(LLM) --precision INT4 --device $(DEVICE)

$(EMB_DIR)/openvino_model.xml: | $(STAMP)
	$(PY) scripts/download_embedding_model.py --model $(EMBEDDING)

models: $(LLM_DIR)/openvino_model.xml $(EMB_DIR)/openvino_model.xml  ## Prepare the offline default models (once).

serve: models  ## Start the local OVMS-compatible server on :9000 gRPC / :8000 REST.
	$(SERVABLE_ENV) $(PY) -m local_ovms --config_path $(SERVABLE)/config.json --port $(GRPC_PORT) --rest_port $(REST_PORT)

client: $(STAMP)  ## Start the Gradio client on :9001.
	$(PY) client/app.py --web_url 0.0.0.0:$(WEB_PORT) --ovms_url localhost:$(GRPC_PORT)

run: models  ## Set up everything, start server, chat page and OpenAI API, stop all on Ctrl-C.
	$(SERVABLE_ENV) $(PY) -m local_ovms.run --config_path $(SERVABLE)/config.json --port $(GRPC_PORT) --rest_port $(REST_PORT) --web_port $(WEB_PORT) --api_port $(API_PORT)

test: models  ## Lint, then run the whole test suite.
	$(MAKE) --no-print-directory lint
	bash tests/install_browser.sh
	$(PY) -m pytest -q

lint: $(STAMP)  ## ruff, and hadolint over the Dockerfiles; checks docker/requirements.txt is current.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile*
	$(PY) docker/requirements.py --check

bench: models  ## Run the benchmark; writes bench/results.md and bench/results.png.
	$(PY) scripts/benchmark.py

# make eval LLM=<registry name> or LLM_MODEL_DIR=<folder> (any variant) chooses the model, as for serve;
# EVAL_ARGS passes flags, e.g. EVAL_ARGS="--configs current --limit 10".
eval: models  ## Measure answer quality (eval/); writes eval/results.md and eval/results.png.
	$(SERVABLE_ENV) $(PY) scripts/evaluate.py $(EVAL_ARGS)

requirements: $(STAMP)  ## Regenerate docker/requirements.txt from pyproject.toml.
	$(PY) docker/requirements.py

python_image:  ## Build the OVMS image with the servable's Python dependencies.
	@case "$(BASE_OS)" in ubuntu|redhat) ;; *) echo "BASE_OS must be ubuntu or redhat, got '$(BASE_OS)'"; exit 2;; esac
	docker build -f docker/Dockerfile.$(BASE_OS) docker \
		--build-arg BASE_IMAGE=$(OVMS_CPP_DOCKER_IMAGE):$(OVMS_CPP_IMAGE_TAG) \
		-t $(IMAGE_NAME)

client_image:  ## Build the client image.
	docker build -f docker/Dockerfile.client . -t ovms-rag-client:latest

clean:  ## Remove the virtual environment, built models, indexes and caches.
	rm -rf $(VENV) $(SERVABLE)/*_compressed_weights $(SERVABLE)/*_FP16 $(SERVABLE)/$(LLM) $(EMB_DIR) \
		$(SERVABLE)/.rag_index .pytest_cache .ruff_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
