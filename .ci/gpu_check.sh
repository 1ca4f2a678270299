#!/usr/bin/env bash
# The GPU check of issue 22 (not CI): on a machine with one CUDA GPU, run each chapter's `cpu` experiments
# through the command line (python -m robustnb reproduce <chapter> --preset cpu --device cuda) from one empty
# cache, in book order, as `python -m robustnb.bench --fresh-cache` does on the CPU, and time each chapter; then
# the `full` preset's miniature tests. Two streams share the machine, each pinned to half of its cores:
#   A: the full-path tests, getting_started, compressed_domain_shift
#   B: split_computing, entropy_attacks, frequency_analysis, tv_defense (they share the split models)
# so every time it prints was taken beside the other stream. The heterogeneous chapter is not run: its `cpu`
# tuning is Ray Tune's ASHA, and Ray does not travel to a machine without a package index.
#
#   bash .ci/gpu_check.sh [deadline_s]   # default 480: a chapter still running then is stopped and marked so
#   STREAM_A="full_paths_tests getting_started" STREAM_B= bash .ci/gpu_check.sh 200   # chosen steps, one stream
#   PRESET=smoke DEVICE=cpu WHEELS=none PY=.venv/bin/python bash .ci/gpu_check.sh   # the same steps, here
#
# Where the machine lacks the chapters' packages, put their wheels in .whl/ (installed into /tmp/site first);
# ROBUSTNB_DATA defaults to .gpudata/ (a copy of the offline CIFAR-10 archive). Results: $OUT (default
# /tmp/gpu_check): times.jsonl (chapter, seconds, exit code), summary.txt, results.tar.gz (logs, claims CSVs).
set -u
DEADLINE=${1:-480}
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu_check}
W=$(mktemp -d)/gpu_check
mkdir -p "$OUT" "$W"
PRESET=${PRESET:-cpu} DEVICE=${DEVICE:-cuda} WHEELS=${WHEELS:-.whl} PY=${PY:-python3}
if [ -d "$WHEELS" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export ROBUSTNB_DATA=${ROBUSTNB_DATA:-$PWD/.gpudata}
export ROBUSTNB_CACHE=$W/cache  # empty: every model is trained (a cold run)
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
NCPU=$(nproc)
HALF=$((NCPU / 2))
pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "cpus: $NCPU"
  $PY -c "import sys, torch, torchvision, compressai, torchattacks, torch_pruning; print(sys.version.split()[0], \
'torch', torch.__version__, 'torchvision', torchvision.__version__, 'compressai', compressai.__version__, \
'torchattacks', torchattacks.__version__, 'cuda', torch.cuda.is_available())"
} > "$W/machine.txt" 2>&1
cat "$W/machine.txt"

# GPU memory in use, every 2 s (both streams together)
( while true; do echo "$(( $(date +%s) - T0 )) $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits)"; \
  sleep 2; done ) > "$W/gpu_memory.txt" 2>/dev/null &
SAMPLER=$!

step() {  # step NAME CPUS COMMAND...: run it within what is left of the deadline, record seconds and exit code
  local name=$1 cpus=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  if [ "$left" -lt 15 ]; then
    echo "{\"chapter\": \"$name\", \"seconds\": null, \"rc\": \"not started (deadline)\"}" >> "$W/times.jsonl"; return
  fi
  local s; s=$(date +%s%N)
  pin "$cpus" timeout "$left" "$@" > "$W/$name.log" 2>&1
  local rc=$? ms=$(( ($(date +%s%N) - s) / 1000000 ))
  [ $rc -eq 124 ] && rc='"stopped at the deadline"'
  echo "{\"chapter\": \"$name\", \"seconds\": $((ms / 1000)).$(printf %03d $((ms % 1000))), \"rc\": $rc}" >> "$W/times.jsonl"
  echo "$name: $((ms / 1000)) s, rc $rc"
}
chapter() { step "$1" "$2" $PY -m robustnb reproduce "$1" --preset "$PRESET" --device "$DEVICE" --out "$W/$1.csv"; }

STREAM_A=${STREAM_A-full_paths_tests getting_started compressed_domain_shift}
STREAM_B=${STREAM_B-split_computing entropy_attacks frequency_analysis tv_defense}
A="0-$((HALF - 1))"
B="$HALF-$((NCPU - 1))"
if [ -z "$STREAM_A" ] || [ -z "$STREAM_B" ]; then A="0-$((NCPU - 1))"; B=$A; fi  # one stream: every core
stream() {  # stream CPUS NAME...
  local cpus=$1; shift
  for name in "$@"; do
    if [ "$name" = full_paths_tests ]; then
      step full_paths_tests "$cpus" $PY -m pytest -q -p no:cacheprovider tests/test_full_paths.py
    else
      chapter "$name" "$cpus"
    fi
  done
}
stream "$A" $STREAM_A &
PA=$!
stream "$B" $STREAM_B &
PB=$!
wait $PA $PB
kill $SAMPLER 2>/dev/null

{
  cat "$W/machine.txt"
  echo "peak GPU memory in use (both streams, MiB): $(sort -k2 -n "$W/gpu_memory.txt" | tail -1 | cut -d' ' -f2)"
  cat "$W/times.jsonl"
  for f in "$W"/*.log; do echo "== $(basename "$f")"; tail -n 25 "$f"; done
} > "$W/summary.txt"
cp "$W/times.jsonl" "$W/summary.txt" "$OUT/"
tar -czf "$OUT/results.tar.gz" -C "$W" --exclude cache .
echo "== times"; cat "$W/times.jsonl"
