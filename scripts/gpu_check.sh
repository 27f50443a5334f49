#!/usr/bin/env bash
# The GPU checks, in two halves.
#   bash scripts/gpu_check.sh prepare   # here: bundle benchmark data + model configs/tokenizers into .gpu/
#   bash scripts/gpu_check.sh run       # on the GPU machine (carry .gpu): CUDA tests, GPU bench, whole suite
# The GPU machine cannot install the model wheels: scripts/gpu_stand_in.py builds random-weight
# stand-ins with the real configs and tokenizers (speed and mechanics only, not accuracy).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  source .venv/bin/activate
  mkdir -p .gpu/bundle && rm -rf .gpu/bundle/*
  for alias in gemma-3-270m smollm2-135m; do
    dir=$(python -c "from polyalign.engine.model_paths import resolve_model_path as r; print(r('$alias'))")
    mkdir -p ".gpu/bundle/$alias" && cp "$dir"/{config.json,tokenizer.json,tokenizer_config.json} ".gpu/bundle/$alias/"
  done
  data=$(python -c "from polyalign.core.tasks import resolve_data_dir as r; print(r(None))")
  cp -r "$data" .gpu/bundle/data
  tar czf .gpu/bundle.tgz -C .gpu bundle && rm -rf .gpu/bundle && ls -la .gpu ;;
run)
  OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT" /tmp/gpu
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 POLYALIGN_CACHE=/tmp/gpu/cache PYTHONPATH="$PWD/src"
  tar xzf .gpu/bundle.tgz -C /tmp/gpu
  mkdir -p ../shared/data && rm -rf ../shared/data/multilingual-learner
  cp -r /tmp/gpu/bundle/data ../shared/data/multilingual-learner
  nvidia-smi -L
  python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  python3 scripts/gpu_stand_in.py /tmp/gpu/bundle
  python3 -m pytest -q -ra -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log"
  for dtype in float32 bfloat16; do
    python3 bench/eval_throughput.py --device cuda --dtype $dtype --skip-lm-eval --items 200 \
      --out "$OUT/bench_gpu_$dtype.json" 2>&1 | grep -v -i "warn" | tee "$OUT/bench_gpu_$dtype.log"
  done
  timeout "${SUITE_SECONDS:-240}" python3 -m pytest -q -ra -p no:cacheprovider -m "not slow" tests \
    2>&1 | tee "$OUT/suite.log" ;;
*) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
