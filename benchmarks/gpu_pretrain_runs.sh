#!/usr/bin/env bash
# Pretraining runs on one lent GPU (issues 12/13): the cpu-hour preset, a FaceCycle baseline with the embedded preset's
# pairs, and the embedded preset with and without its expression attributes (the smile ablation). Renders on the GPU
# (--num_workers 0). Each run is capped so one slow run cannot take the others' time. Writes under $RUNS (default
# /tmp/gpu_runs); benchmarks/gpu_pack.py packs a folder for the trip back.
#   bash benchmarks/gpu_pretrain_runs.sh
set -u
RUNS=${RUNS:-/tmp/gpu_runs}
mkdir -p "$RUNS"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RUNS/gpu.txt"
python3 -c "import torch, transformers, accelerate, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'timm', timm.__version__)" | tee -a "$RUNS/gpu.txt"
R1=$(python3 -c "from comface_hf.pretraining.presets import EMBEDDED_ATTRIBUTES_R1 as a; print(a)")
run() {  # name, limit in seconds, pretrain flags...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python3 training/pretrain.py --output_dir "$RUNS/$name" --overwrite_output_dir --num_workers 0 "$@" \
    > "$RUNS/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$RUNS/walls.txt"
  grep -v "step/s" "$RUNS/$name.log" | tail -4
}
# A 2-step smoke run first: a failure on the GPU shows in seconds, not after every run has failed the same way.
run smoke 60 --max_steps 2 --samples_per_epoch 128 --validation_pairs 16 --global_batch_size 8 --num_epochs 1 || exit 1
grep -q "Model saved" "$RUNS/smoke.log" || { tail -20 "$RUNS/smoke.log"; exit 1; }
run cpu-hour 240 --preset cpu-hour
run facecycle 80 --method facecycle
run embedded 60
run embedded-no-expressions 60 --attributes "$R1"
ls -la "$RUNS"/*/model/*.safetensors
