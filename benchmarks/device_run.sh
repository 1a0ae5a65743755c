#!/usr/bin/env bash
# GPU measurements, run on the lent CUDA machine by the `device` tool (see benchmarks/README.md):
#   carry: .whl (monai, pytorch-ignite, nibabel, fire, termcolor wheels) and .gpu_data (busi_224 + split.json).
# TRACKS picks what runs (default "A B": the 224x224 rows). Tracks run side by side on the one GPU; every step has
# a time limit, and its log and metrics go into $OUT/results.txt and $OUT/logs.tar.gz (the device tool returns
# only a few files):
#   A  exploiters (EXPLOITERS, default "unet") on the clean training set, 224x224, the paper's schedule
#      (150 epochs, Adam 1e-4, batch 32)
#   B  protect at 224x224 (AMP; the CPU recipe's 1 generator epoch per surrogate epoch, 20 surrogate epochs),
#      then the same exploiters on the protected training set
#   C  protect at 96x96 with k = 4 generator epochs and 12 surrogate epochs (fp32), then U-Net exploiters
#      (30 epochs, batch 16, Adam 1e-3) under the defenses none, gaussian_blur, jpeg (quality 30), adversarial_training
#   D  at 96x96: k = 1 with 30 surrogate epochs, and k = 4 / 12 trained at 64x64, each followed by the same U-Net
#   E  protect with the CUDA defaults and nothing else (224x224, AMP, 2048 steps, verification on) on each dataset
#      of DATASETS_E, then U-Net exploiters (30 epochs, batch 16, Adam 1e-3) at 224 on the clean and the protected
#      training set and at 96 on the protected one
#   F  REM at 96x96 (fp32): --epsilon 8/255 --rem_epsilon 4/255 on DATA_F, then U-Net exploiters at 96 under the
#      defenses adversarial_training and none
# Datasets live in .gpu_data/NAME with the seed-0 split .gpu_data/NAME.split.json (DATA / SPLIT for tracks A-D).
# Sizes are environment variables so that a dry run on the CPU can shrink them.
# Measured 2026-11-26 on an H100: with all four tracks at once, protect at 224 slowed from 4.6 to 7.5 s per epoch
# and B missed its 400 s limit; give B the GPU with at most A beside it. TRACKS=B alone (after the pipeline and
# writer fixes): protect 163 s (40 epochs of 1.9 s, writing 65 s), U-Net 150 epochs 141 s; 332 s in all.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; W=${WORK:-/tmp/umed_device}; mkdir -p "$W"
G=${GPU_DATA:-.gpu_data}; D=${DATA:-$G/busi_224}; S=${SPLIT:-$G/split.json}
T_END=$(( $(date +%s) + ${TOTAL_S:-575} ))          # every step is cut at this time
NW=${NUM_WORKERS:-2}; TRACKS=" ${TRACKS:-A B} "
E224=${E224_EPOCHS:-150}; P224=${P224_EPOCHS:-20}; K224=${K224:-1}; S224=${SIZE224:-224}
E96=${E96_EPOCHS:-30}; P96=${P96_EPOCHS:-12}; S96=${SIZE96:-96}; S64=${SIZE64:-64}
LR="--lr_generator 0.001 --lr_surrogate 0.001"
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/gpu.txt"

step() {  # step NAME MAX_SECONDS CMD...: run CMD under min(MAX_SECONDS, time left), log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2; local left=$(( T_END - $(date +%s) )); [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then echo "$name skipped (no time left)" | tee -a "$OUT/steps.txt"; return 1; fi
  local t0=$(date +%s); timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$OUT/steps.txt"; return $rc; }
protect() {  # protect NAME OUTDIR SIZE SURROGATE_EPOCHS EXTRA...
  local name=$1 out=$2 size=$3 epochs=$4; shift 4
  protect_args "$name" "$out" --image_size "$size" --surrogate_epochs "$epochs" $LR "$@"; }
protect_args() {  # protect_args NAME OUTDIR ARGS...: protect with these arguments and the config's defaults
  local name=$1 out=$2; shift 2
  step "$name" "${PROTECT_LIMIT:-400}" python3 -m monai.bundle run protect --config_file bundles/umed/configs/protect.json \
    --dataset_dir "$D" --datalist "$S" --output_dir "$out" --num_workers "$NW" "$@"
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps(dict(m['summary'], verification=m.get('verification'))))" "$out/manifest.json" \
    > "$OUT/$name.summary.json" 2>&1; }
exploit() {  # exploit NAME OUTDIR SIZE EPOCHS BATCH LR EXTRA... (exploiter: $NET, default unet)
  local name=$1 out=$2 size=$3 epochs=$4 batch=$5 lr=$6; shift 6
  step "$name" 400 python3 -m monai.bundle run train_exploiter --config_file bundles/umed/configs/train_exploiter.json \
    --dataset_dir "$D" --datalist "$S" --exploiter "${NET:-unet}" --image_size "$size" --max_epochs "$epochs" \
    --batch_size "$batch" --lr "$lr" --num_workers "$NW" --progress False --output_dir "$out" "$@"
  cp "$out/metrics.json" "$OUT/$name.metrics.json" 2>/dev/null; }

on() { [[ "$TRACKS" == *" $1 "* ]]; }
# A: clean baselines at 224, paper schedule
for net in ${EXPLOITERS:-unet}; do
  on A && NET=$net exploit "A_clean224_$net" "$W/A_clean224_$net" "$S224" "$E224" 32 0.0001 &
done
# B: protect at 224 (AMP), then the paper-schedule exploiters on it, side by side
on B && ( protect B_protect224 "$W/B_p224" "$S224" "$P224" --generator_epochs "$K224" \
  && for net in ${EXPLOITERS:-unet}; do
       NET=$net exploit "B_protected224_$net" "$W/B_e224_$net" "$S224" "$E224" 32 0.0001 \
         --train_dir "$W/B_p224/protected" &
     done; wait ) &
# C: k = 4, 12 surrogate epochs at 96x96 in fp32, then exploiters under each defense
on C && ( protect C_protect96 "$W/C_p96" "$S96" "$P96" --amp false \
  && for def in none gaussian_blur jpeg adversarial_training; do
       exploit "C_$def" "$W/C_$def" "$S96" "$E96" 16 0.001 --amp false --train_dir "$W/C_p96/protected" --defense $def &
     done; wait ) &
# D: other schedules at 96x96 (same total number of epochs as C)
on D && ( protect D_k1 "$W/D_k1" "$S96" $(( P96 * 5 / 2 )) --generator_epochs 1 --amp false \
  && exploit D_k1_unet "$W/D_k1_unet" "$S96" "$E96" 16 0.001 --amp false --train_dir "$W/D_k1/protected" ) &
on D && ( protect D_size64 "$W/D_s64" "$S64" "$P96" --amp false \
  && exploit D_size64_unet "$W/D_s64_unet" "$S96" "$E96" 16 0.001 --amp false --train_dir "$W/D_s64/protected" ) &
# E: the CUDA defaults on each dataset, then exploiters at 224 (clean and protected) and 96 (protected)
for ds in ${DATASETS_E:-shenzhen_cxr_224 cvc_clinicdb_224}; do
  on E && ( export D=$G/$ds S=$G/$ds.split.json
    exploit "E_${ds}_clean224" "$W/E_${ds}_c224" "$S224" "$E96" 16 0.001 &
    PROTECT_LIMIT=${E_PROTECT_LIMIT:-420} protect_args "E_${ds}_protect" "$W/E_${ds}_p" ${E_ARGS:-} \
      && { exploit "E_${ds}_protected224" "$W/E_${ds}_e224" "$S224" "$E96" 16 0.001 --train_dir "$W/E_${ds}_p/protected" &
           exploit "E_${ds}_protected96" "$W/E_${ds}_e96" "$S96" "$E96" 16 0.001 --train_dir "$W/E_${ds}_p/protected"; }
    wait ) &
done
# F: REM (8/255, inner attack 4/255) at 96x96, then U-Net under adversarial training and without a defense
on F && ( export D=$G/${DATA_F:-cvc_clinicdb_224} S=$G/${DATA_F:-cvc_clinicdb_224}.split.json
  PROTECT_LIMIT=${F_PROTECT_LIMIT:-400} protect_args F_rem_protect "$W/F_rem" --image_size "$S96" --amp false \
    --epsilon 8/255 --rem_epsilon 4/255 ${F_ARGS:-} --verify false \
  && for def in adversarial_training none; do
       exploit "F_rem_$def" "$W/F_rem_$def" "$S96" "$E96" 16 0.001 --amp false --train_dir "$W/F_rem/protected" --defense $def &
     done; wait ) &
wait
{ cat "$OUT/steps.txt"; grep -h "RESULT\|protected dataset:" "$OUT"/*.log
  for f in "$OUT"/*.json; do [ -e "$f" ] && echo "$(basename "$f") $(cat "$f")"; done
  grep -h "Epoch\[[0-9]*\] Complete" "$OUT"/*protect*.log | tail -5; } > "$OUT/results.txt" 2>&1
tar czf "$OUT/logs.tar.gz" -C "$OUT" $(cd "$OUT" && ls *.log *.json 2>/dev/null) && (cd "$OUT" && rm -f *.log *.json)
cat "$OUT/results.txt"
