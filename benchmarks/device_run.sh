#!/usr/bin/env bash
# GPU check and 224x224 numbers, run on the lent CUDA machine by the `device` tool (see benchmarks/README.md):
#   carry: .whl (monai, pytorch-ignite, nibabel, fire, termcolor wheels) and .gpu_data (busi_224 + split.json).
# Every step has its own time limit and writes its log under $OUT, so partial results come back.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
D=.gpu_data/busi_224; S=.gpu_data/split.json
PROTECT_ARGS=${PROTECT_ARGS:-"--lr_generator 0.001 --lr_surrogate 0.001"}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
run() { local name=$1 limit=$2; shift 2; local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$OUT/steps.txt"; }
# 1. one Algorithm-1 cycle at 96x96 (the CPU benchmark's size): epoch times on the GPU with AMP
run protect96 60 python3 -m monai.bundle run protect --config_file bundles/umed/configs/protect.json \
  --dataset_dir $D --datalist $S --output_dir /tmp/g96 --image_size 96 --surrogate_epochs 1 --num_workers 4 $PROTECT_ARGS
# 2. protect at 224x224 with AMP, the paper's schedule shortened to fit
run protect224 ${P224_LIMIT:-200} python3 -m monai.bundle run protect --config_file bundles/umed/configs/protect.json \
  --dataset_dir $D --datalist $S --output_dir /tmp/g224 --image_size 224 --surrogate_epochs ${P224_EPOCHS:-10} --num_workers 4 $PROTECT_ARGS
cp /tmp/g224/manifest.csv "$OUT/manifest224.csv" 2>/dev/null
python3 -c "import json; s=json.load(open('/tmp/g224/manifest.json'))['summary']; print(json.dumps(s, indent=1))" > "$OUT/summary224.json" 2>&1
# 3. U-Net exploiter at 224x224 with the paper's schedule (150 epochs, Adam 1e-4, batch 32): clean and protected
for data in clean protected; do
  extra=""; [ $data = protected ] && extra="--train_dir /tmp/g224/protected"
  run exploit224_$data ${E224_LIMIT:-140} python3 -m monai.bundle run train_exploiter --config_file bundles/umed/configs/train_exploiter.json \
    --dataset_dir $D --datalist $S $extra --exploiter unet --image_size 224 --max_epochs 150 --batch_size 32 --lr 0.0001 \
    --num_workers 4 --progress False --output_dir /tmp/e224_$data
  cp /tmp/e224_$data/metrics.json "$OUT/metrics224_$data.json" 2>/dev/null
done
grep -h "RESULT\|protected dataset:" "$OUT"/*.log
