# fer_tf: every target uses the virtual environment in .venv (made by `make install`).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# BACKEND=jax trains without TensorFlow (pretraining, fine-tuning); export and TFLite need tensorflow.
BACKEND ?= tensorflow
export KERAS_BACKEND := $(BACKEND)
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1
DATASETS ?= ../shared/datasets
DATASET ?= ckplus48
CHECKPOINT ?= saved_models/fer_tf_basic7.keras
EXPORT_DIR ?= runs/export

.PHONY: install demo test test-slow pretrain finetune evaluate train bench-train export bench ship web serve-web clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make install needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	@mkdir -p runs/demo
	$(PY) -c "import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save('runs/demo/astronaut.png')"
	$(VENV)/bin/fer-tf predict runs/demo/astronaut.png --annotate runs/demo/astronaut_annotated.png --overwrite
	@echo "annotated image: runs/demo/astronaut_annotated.png"

test: install
	$(VENV)/bin/pytest -m "not slow" -q

test-slow: install
	$(VENV)/bin/pytest -m slow -q

pretrain: install
	FER_TF_MAKE_COMMAND="make pretrain$(if $(CONFIG), CONFIG=$(CONFIG))$(if $(filter-out tensorflow,$(BACKEND)), BACKEND=$(BACKEND))" \
		$(PY) pipelines/pretrain.py --data $(DATASETS)/fer2013 --config $(or $(CONFIG),configs/pretrain.yaml)

# A resumable campaign: trains the runs of configs/finetune/$(DATASET).yaml that have no result file
# in reports/$(DATASET)/runs/ yet, then rebuilds the report. FINETUNE_ARGS narrows it, e.g.
# FINETUNE_ARGS="--seeds 0 --time-limit 60".
finetune: install
	FER_TF_MAKE_COMMAND="make finetune DATASET=$(DATASET)" $(PY) pipelines/finetune.py --dataset $(DATASET) $(FINETUNE_ARGS)

# Rebuilds reports/$(DATASET) from the committed run files (trains nothing).
evaluate: install
	FER_TF_MAKE_COMMAND="make evaluate DATASET=$(DATASET)" $(PY) pipelines/finetune.py --dataset $(DATASET) --report-only

# Your own data: `make train DATA=photos/manifest.csv OUT=runs/mine [TRAIN_ARGS="--from backbone"]`
# (fer-tf train: subject split, fine-tuning, held-out evaluation, export; rerun to resume).
train: install
	@test -n "$(DATA)" -a -n "$(OUT)" || { echo "usage: make train DATA=<dataset folder or manifest.csv> OUT=<folder> [TRAIN_ARGS=...]"; exit 2; }
	$(VENV)/bin/fer-tf train $(DATA) --output $(OUT) $(TRAIN_ARGS)

# `fer-tf train --from backbone` on the KDEF subset, timed: reports/train/kdef.json and README.md.
bench-train: install
	FER_TF_MAKE_COMMAND="make bench-train" $(PY) benchmarks/train_kdef.py --data $(DATASETS)/kdef-subset

export: install
	$(VENV)/bin/fer-tf export $(CHECKPOINT) --output $(EXPORT_DIR) $(if $(OVERWRITE),--overwrite) \
		--calibration $(DATASETS)/ckplus48 --parity-data $(DATASETS)/ckplus48 --format ckplus48

bench: install
	FER_TF_MAKE_COMMAND="make bench" $(PY) benchmarks/run.py

# Train the shipped default model (FER2013 pretraining -> 2B(N+M) on the identity-labelled data).
ship: install
	FER_TF_MAKE_COMMAND="make ship" $(PY) pipelines/ship.py

# The static page (web/): LiteRT.js pinned by web/package-lock.json, the networks from the mediapipe
# wheel and saved_models/, all in web/dist (nothing is fetched from elsewhere when the page runs).
web: install
	cd web && npm ci --no-audit --no-fund --loglevel=error
	$(PY) web/build.py

PORT ?= 8000
serve-web:
	@test -f web/dist/index.html || { echo "web/dist is missing: run make web first"; exit 1; }
	$(PY) web/serve.py --port $(PORT)

clean:
	rm -rf runs .pytest_cache .hypothesis web/dist
