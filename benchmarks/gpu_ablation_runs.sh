#!/usr/bin/env bash
# Renderer ablations on one lent GPU (issue 13): the embedded preset with one renderer change undone at a time, three
# pretraining seeds each, plus two more seeds of the cpu-hour preset. Single pretraining runs differ by ~0.1 in
# real-face Corr. from numerics alone, so a variant is only worth a row with several seeds.
#
# All runs start at once: on a GPU each run waits on its rendered pairs ~90% of a step (single-threaded renderer
# launches and the capture's JPEG round trip), so the runs share one GPU and 16 CPU cores well.
#   bash benchmarks/gpu_ablation_runs.sh train            # every run, under $RUNS (default /tmp/gpu_ablation)
#   bash benchmarks/gpu_ablation_runs.sh pack SEED DEST   # one seed's checkpoints (SEED 1-3, or cpu-hour), int8
# Variants (the embedded preset: renderer 2.1.0, 64 px, 6 x 1536 pairs, photographic capture 1.0, its attributes):
#   default            as is
#   no-growth          --craniofacial_growth False (children drawn with the adult head and proportions)
#   no-photographic    --photographic 0 (clean renders)
#   no-expressions     renderer 1.1.0's attributes (no smile / AU attributes)
#   renderer-1.1.0     renderer 1.1.0 with renderer 1.1.0's attributes (against no-expressions only the renderer differs)
set -u
RUNS=${RUNS:-/tmp/gpu_ablation}
VARIANTS="default no-growth no-photographic no-expressions renderer-1.1.0"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1  # many processes on 16 cores: one thread each

flags() {  # variant -> pretrain flags ($R1: renderer 1.1.0's attributes, read once in `train`)
  case $1 in
    default) echo "" ;;
    no-growth) echo "--craniofacial_growth False" ;;
    no-photographic) echo "--photographic 0" ;;
    no-expressions) echo "--attributes $R1" ;;
    renderer-1.1.0) echo "--renderer_version 1.1.0 --attributes $R1" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

run() {  # name, limit in seconds, pretrain flags...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python3 training/pretrain.py --output_dir "$RUNS/$name" --overwrite_output_dir --num_workers 0 "$@" \
    > "$RUNS/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc wall_s=$(( $(date +%s) - t0 ))" >> "$RUNS/walls.txt"
  return $rc
}

case ${1:-train} in
  train)
    mkdir -p "$RUNS"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RUNS/gpu.txt"
    # Once: `$(flags ...)` runs in a subshell, so reading it there would import training/pretrain.py per run.
    R1=$(python3 -c "from comface_hf.pretraining.presets import EMBEDDED_ATTRIBUTES_R1 as a; print(a)")
    # 2-step smoke runs of both renderers first: a failure on the GPU shows in seconds.
    smoke="--max_steps 2 --samples_per_epoch 128 --validation_pairs 16 --global_batch_size 8 --num_epochs 1"
    run smoke 60 $smoke --craniofacial_growth False || { tail -20 "$RUNS/smoke.log"; exit 1; }
    run smoke-r1 60 $smoke $(flags renderer-1.1.0) || { tail -20 "$RUNS/smoke-r1.log"; exit 1; }
    t0=$(date +%s)
    for seed in 1 2 3; do
      for v in $VARIANTS; do
        run "$v-s$seed" 360 --seed "$seed" $(flags "$v") &
      done
    done
    for seed in 1 2; do run "cpu-hour-s$seed" 400 --preset cpu-hour --seed "$seed" & done
    wait
    echo "all runs: wall_s=$(( $(date +%s) - t0 ))" | tee -a "$RUNS/walls.txt"
    sort "$RUNS/walls.txt"
    ;;
  pack)
    # One seed's checkpoints as one tar split into 15 MiB parts (the trip back takes few files of <= 16 MiB):
    #   cat DEST/SEED.tar.part-* | tar x -C <folder>; then gpu_pack.py --unpack <folder> <name> <checkpoint folder>
    seed=$2 dest=$3
    names=""
    for v in $VARIANTS; do names="$names $v-s$seed"; done
    [ "$seed" = cpu-hour ] && names="cpu-hour-s1 cpu-hour-s2"
    stage="$RUNS/pack-$seed"
    rm -rf "$stage" && mkdir -p "$stage" "$dest"
    for n in $names; do
      if [ -f "$RUNS/$n/model/model.safetensors" ]; then
        python3 -m benchmarks.gpu_pack "$RUNS/$n/model" "$stage/$n" --int8
        cp "$RUNS/$n/metrics.json" "$stage/$n.metrics.json"
      else
        echo "$n: no model"; tail -5 "$RUNS/$n.log"
      fi
    done
    cp "$RUNS/walls.txt" "$RUNS/gpu.txt" "$stage/" 2>/dev/null
    tar cf - -C "$stage" . | split -b 15M - "$dest/$seed.tar.part-"
    ls -la "$dest"
    for n in $names; do
      python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'steps', m['global_step'], 'wait %.2f' % m['data_wait_share'], 'val_pearson %.3f' % m['val_pearson'], 'top1 %.3f' % m['val_retrieval_top1'])" "$RUNS/$n/metrics.json" "$n" 2>/dev/null
    done
    ;;
esac
