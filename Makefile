# oneshot: `make benchmark` runs the study, `make test` runs the tests.
# Each target creates .venv and installs what it needs by itself.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PRESET ?= default
# The smoke preset's numbers mean nothing: keep them out of the committed results/.
RESULTS ?= $(if $(filter smoke,$(PRESET)),build/smoke-results,results)

# Use the shared data copy when it exists and the user set no data root.
ifeq ($(ONESHOT_DATA),)
ifneq ($(wildcard ../shared/data),)
export ONESHOT_DATA := $(abspath ../shared/data)
endif
endif

# torch 2.14.1 + torchvision 0.29.1 are the pair that import together here (learn2learn needs
# torchvision); learn2learn 0.2.0 only builds on Python 3.11 when Cython regenerates its C files.
# Optional extras, installed here for the tests: learn2learn (oneshot[l2l]) and
# pytorch-metric-learning (oneshot[pml], the `pml:` losses and miners), ray (oneshot[ray]) and
# submitit (oneshot[slurm]), the `--executor ray|slurm` engines; scikit-learn (oneshot[verification]),
# the ROC metrics of verification; tensorboard (oneshot[tensorboard]), the runs' TensorBoard events;
# optuna, optuna-dashboard, psycopg and psycopg2 (oneshot[tune]; SQLAlchemy 2.1 reaches postgresql:// through psycopg 3), the tuning searches of `[study.tune]`.
INSTALL_PINS := "torch==2.14.1" "torchvision==0.29.1" "numpy<2" "pandas>=2,<3"

.PHONY: install test benchmark perf clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(INSTALL_PINS) scipy tqdm pillow matplotlib filelock pytest \
		"learn2learn==0.2.0" "pytorch-metric-learning==2.9.0" "ray==2.60.0" "submitit==1.5.4" "scikit-learn>=1.3" "tensorboard>=2.16" \
		"optuna==5.0.0" "optuna-dashboard>=0.21" "psycopg2-binary==2.9.13" "psycopg[binary]==3.3.6" \
		-C--build-option=build_ext
	$(PY) -m pip install --no-deps -e .
	$(PY) -c "import oneshot, torch, learn2learn, pytorch_metric_learning, ray, submitit, sklearn, tensorboard, optuna, optuna_dashboard, psycopg2, psycopg; print('installed oneshot with torch', torch.__version__)"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

benchmark: install
	ONESHOT_COMMAND="make benchmark PRESET=$(PRESET)" $(VENV)/bin/oneshot benchmark --preset $(PRESET) --results $(RESULTS)

perf: install
	@for f in experiments/perf/*.py; do $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
