#!/usr/bin/env bash
# Stage I (captions) on one 8-GPU node: verl + vLLM, the recipe qwen2_5_vl_7b_stage1_caption.yaml (docs/verl.md).
#   bash recipes/verl/stage1.sh MODEL=runs/verl/start TRAIN=data/caption_train.parquet VAL=data/caption_val.parquet \
#       [OUT=runs/verl/stage1] [STEPS=1000] [-- more.verl.overrides=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python}" -m skinflow.verl.recipes recipes/verl/qwen2_5_vl_7b_stage1_caption.yaml "$@"
