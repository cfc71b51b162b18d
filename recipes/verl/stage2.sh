#!/usr/bin/env bash
# Stage II (diagnoses) on one 8-GPU node, from the Stage I run: converts Stage I's newest verl checkpoint to an HF
# directory (STAGE1-hf, once) and starts qwen2_5_vl_7b_stage2_diagnosis.yaml from it (docs/verl.md).
#   STAGE1=runs/verl/stage1 bash recipes/verl/stage2.sh TRAIN=data/diagnosis_train.parquet \
#       VAL=data/diagnosis_val.parquet [OUT=runs/verl/stage2] [-- more.verl.overrides=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
: "${STAGE1:?set STAGE1 to the Stage I run directory (its trainer.default_local_dir)}"
if [ ! -d "${STAGE1}-hf" ]; then
    "$PY" -m skinflow.verl.convert hf "$STAGE1" "${STAGE1}-hf"
fi
exec "$PY" -m skinflow.verl.recipes recipes/verl/qwen2_5_vl_7b_stage2_diagnosis.yaml MODEL="${STAGE1}-hf" "$@"
