#!/usr/bin/env bash
# Everything a lent GPU is needed for, in one call: build the CUDA extension, run the GPU tests, run the benchmarks,
# and write the results file. Run from the repository root on the GPU machine (it needs no network and installs
# nothing: torch, triton, transformers, pytest, pytest-benchmark and hypothesis must be there):
#
#     bash benchmarks/gpu_check.sh            # targets: build, GPU tests, the K=4 8x1024 benchmarks (< 10 min)
#     bash benchmarks/gpu_check.sh rest       # build, the other benchmark groups (32x256, K=8, torch.compile)
#
# Each stage has its own time limit, so one that hangs or fails does not cost the others; a stage's log ends in
# $OUT (default benchmarks/results/raw), with the JSON of each benchmark stage, the markdown results file made from
# them by benchmarks/summarize.py (printed), and the summary (device, versions; stage, exit status, seconds), last.
# A targets run leaves 8 files in $OUT, the most the device tool brings back.
set -u
MODE=${1:-targets}
case "$MODE" in targets | rest) ;; *) echo "usage: $0 [targets|rest]" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/raw}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
unset TRITON_INTERPRET
SUMMARY="$OUT/summary_$MODE.txt"
: >"$SUMMARY"

# stage NAME SECONDS COMMAND...: run COMMAND with a time limit, its output in $OUT/NAME.log.
stage() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    printf '%-16s rc=%-4s %5ss\n' "$name" "$rc" "$(($(date +%s) - start))" | tee -a "$SUMMARY"
    return $rc
}

bench() {  # bench NAME SECONDS PYTEST-ARGS...: a benchmark stage writing $OUT/NAME.json
    local name=$1 limit=$2
    shift 2
    stage "$name" "$limit" "$PY" -m pytest -p no:cacheprovider -q --benchmark-json "$OUT/$name.json" "$@"
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
    "$PY" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
    nvcc --version | tail -n 1
} >>"$SUMMARY" 2>&1

# Stage limits add up to under the device tool's 10 minutes per call.
# The native extension with its CUDA kernels, for Hopper only (a shorter build); in place, next to fdlinear/.
TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 stage build 150 "$PY" setup.py build_ext --inplace
if [ "$MODE" = targets ]; then
    # No autotuning in the tests (one compilation per kernel variant, not eight; every candidate config is checked
    # by test_every_gpu_candidate_config_is_exact); the benchmarks tune.
    FDLINEAR_TRITON_AUTOTUNE=0 stage tests 200 "$PY" -m pytest -p no:cacheprovider -q -rs \
        tests/test_triton.py tests/test_native.py tests/test_tiny.py::test_bf16_forward_backward_on_gpu
    # The issues' targets: K=4, 8 images x 1024 tokens (torch.compile of the reference, slow to compile, is in rest).
    bench bench_triton 180 benchmarks/test_bench_triton.py -k "8x1024 and K4 and not reference_compiled"
    bench bench_native 45 benchmarks/test_bench_native.py -k test_gpu
else
    bench bench_triton_rest 420 benchmarks/test_bench_triton.py -k "not (8x1024 and K4 and not reference_compiled)"
fi

jsons=$(ls "$OUT"/bench_*.json 2>/dev/null)
if [ -n "$jsons" ]; then
    # shellcheck disable=SC2086
    "$PY" benchmarks/summarize.py $jsons --command "bash benchmarks/gpu_check.sh $MODE" \
        --output "$OUT/results_$MODE.md" >>"$SUMMARY" 2>&1
fi
for log in "$OUT"/*.log; do
    printf '\n== %s\n' "$log"
    tail -n 4 "$log"
done
if [ -f "$OUT/results_$MODE.md" ]; then
    printf '\n'
    cat "$OUT/results_$MODE.md"
fi
printf '\n'
cat "$SUMMARY"
