#!/usr/bin/env bash
# The one-GPU check of the verl integration (docs/verl.md): the tiny default through verl's FSDP2 actor and vLLM
# rollouts for a few Stage I steps, the conversion of the last checkpoint and a diagnosis with it.
# Needs a CUDA machine with `pip install ".[skinflow,verl]"` and verl's vLLM stack (`pip install "verl[vllm]==0.9.1"`:
# vllm 0.24.0, torch 2.11.0, torchvision 0.26.0) and this package installed so that its entry points exist.
#   [SMOKE_DIR=runs/verl/smoke] bash recipes/verl/smoke.sh [STEPS=2] [-- more.verl.overrides=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
DIR="${SMOKE_DIR:-runs/verl/smoke}"
mkdir -p "$DIR"
[ -f "$DIR/model/config.json" ] || "$PY" -m skinflow.verl.convert tiny "$DIR/model"
[ -f "$DIR/data/synthetic.jsonl" ] || "$PY" -m skinflow.cli synthetic 64 --out "$DIR/data"
for split in train val; do
    [ -f "$DIR/caption_$split.parquet" ] || "$PY" -m skinflow.cli export "$DIR/data/synthetic.jsonl" \
        "$DIR/caption_$split.parquet" --stage caption --split "$split"
done
"$PY" -c "import importlib.metadata as m; g = {e.name for e in m.entry_points(group='vllm.general_plugins')}; \
assert 'skinflow_dve' in g, 'the vLLM plugin entry point is not installed: pip install -e .'"
"$PY" -m skinflow.verl.recipes recipes/verl/tiny_smoke_1gpu.yaml MODEL="$DIR/model" \
    TRAIN="$DIR/caption_train.parquet" VAL="$DIR/caption_val.parquet" OUT="$DIR/checkpoints" "$@"
rm -rf "$DIR/hf"
"$PY" -m skinflow.verl.convert hf "$DIR/checkpoints" "$DIR/hf"
image="$(ls "$DIR"/data/images/* | head -n 1)"
"$PY" -m skinflow.cli diagnose --model "$DIR/hf" "$image"
echo "smoke: OK ($DIR/hf)"
