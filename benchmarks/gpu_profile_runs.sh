#!/usr/bin/env bash
# Where a pretraining step's time goes on a lent GPU (issue 13: "rendering hides behind the model, data wait < 5%").
# One run at a time (alone on the GPU, so the timings are clean), each profiling 8 steps after a warm-up step with
# `training/pretrain.py --profile_steps` (stages.md: ms per step in draw_pairs / render / capture / augment /
# to_model_input / model_step, host and device), then the capture's JPEG backends timed on the device.
#   bash benchmarks/gpu_profile_runs.sh "$OUT"     # copies each run's stages.md, ops.txt and metrics.json to $OUT
# Variants of the embedded preset (64 px, global batch 64, photographic capture 1.0):
#   eager           as is
#   no-capture      --photographic 0
#   compiled        --compile_generator True (inductor kernels; first compilation ~2 min)
#   batch-256       --global_batch_size 256: a launch-bound data path costs about the same per call at 4x the pairs
# Paper estimate to check (BENCHMARKS.md): the eager render of 128 images is ~3,400 small kernels, launched from one
# host thread at ~10-15 us each, i.e. ~35-50 ms per step whatever the batch size.
set -u
OUT=${1:?usage: gpu_profile_runs.sh OUT_DIR}
RUNS=${RUNS:-/tmp/gpu_profile}
mkdir -p "$OUT" "$RUNS"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"

run() {  # name, limit in seconds, pretrain flags...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python3 training/pretrain.py --output_dir "$RUNS/$name" --overwrite_output_dir --num_workers 0 \
    --report_to none --num_epochs 1 --max_steps 10 --validation_pairs 64 --logging_steps 5 --profile_steps 8 "$@" \
    > "$RUNS/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc wall_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/walls.txt"
  mkdir -p "$OUT/$name"
  cp "$RUNS/$name/profile/stages.md" "$RUNS/$name/profile/ops.txt" "$RUNS/$name/metrics.json" "$OUT/$name/" 2>/dev/null
  [ $rc -eq 0 ] || tail -c 3000 "$RUNS/$name.log" > "$OUT/$name/log_tail.txt"
}

run eager 120
run no-capture 120 --photographic 0
run batch-256 180 --global_batch_size 256 --samples_per_epoch 4096
run compiled 300 --compile_generator True
python3 -m benchmarks.bench_photographic --device cuda --images 128 --size 64 2>&1 | tee "$OUT/bench_photographic.txt"
head -n 20 "$OUT"/*/stages.md
