#!/usr/bin/env bash
# The GPU check of issues 22 and 37 (not CI), made to fit one 10-minute device command: on a machine with one
# CUDA GPU, run each chapter's `cpu` experiments through the command line (python -m robustnb reproduce <chapter>
# --preset cpu --device cuda) from one empty cache, in book order, as `python -m robustnb.bench --fresh-cache`
# does on the CPU, and time each chapter; the `full` preset's miniature tests and the GPU-path tests
# (tests/test_gpu_paths.py: its CUDA tests run the training steps under torch.cuda.set_sync_debug_mode("error"));
# then a torch.profiler profile of the first PROFILE_S seconds of the slowest chapter, from a cache holding only
# the decoded datasets (its top kernels and host calls, and how often the host waited for the GPU). Two streams share the machine,
# each pinned to half of its cores:
#   A: the full-path and GPU-path tests, getting_started, compressed_domain_shift
#   B: split_computing, entropy_attacks, frequency_analysis, tv_defense (they share the split models)
# so every time it prints was taken beside the other stream. The heterogeneous chapter is not run: its `cpu`
# tuning is Ray Tune's ASHA, and Ray does not travel to a machine without a package index.
#
#   bash .ci/gpu_check.sh [deadline_s]   # default 540 in all: the chapters get what the profile leaves; one
#                                        # still running then is stopped, marked so, and profiled first
#   STREAM_A="full_paths_tests getting_started" STREAM_B= bash .ci/gpu_check.sh 200   # chosen steps, one stream
#   PROFILE_S=0 bash .ci/gpu_check.sh          # no profile
#   PRESET=smoke DEVICE=cpu WHEELS=none PY=.venv/bin/python bash .ci/gpu_check.sh   # the same steps, here
#
# Where the machine lacks the chapters' packages, put their wheels in .whl/ (installed into /tmp/site first);
# ROBUSTNB_DATA defaults to .gpudata/ (a copy of the offline CIFAR-10 archive). Results: $OUT (default
# /tmp/gpu_check): times.jsonl (chapter, seconds, exit code), summary.txt, profile.txt, results.tar.gz (logs,
# claims CSVs).
set -u
DEADLINE=${1:-540}
PROFILE_S=${PROFILE_S:-60}
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

# the chapters' deadline: what the profile (and 30 s to write its tables) leaves
RUN_DEADLINE=$DEADLINE
[ "$PROFILE_S" -gt 0 ] && RUN_DEADLINE=$(( DEADLINE - PROFILE_S - 30 ))

step() {  # step NAME CPUS COMMAND...: run it within what is left of the deadline, record seconds and exit code
  local name=$1 cpus=$2; shift 2
  local left=$(( RUN_DEADLINE - ($(date +%s) - T0) ))
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
      step full_paths_tests "$cpus" $PY -m pytest -q -p no:cacheprovider tests/test_full_paths.py \
        tests/test_gpu_paths.py
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

# the slowest chapter (one stopped at the deadline first), profiled for PROFILE_S seconds (at most what the
# deadline leaves, less 30 s to write the tables) from a cache holding only the decoded datasets
cat > "$W/profile_chapter.py" <<'PY'
"""profile_chapter.py --slowest TIMES_JSONL: the slowest chapter's name (one stopped at the deadline first), or ''.
profile_chapter.py CHAPTER PRESET DEVICE SECONDS OUT: profile the first SECONDS of the chapter's reproduce run
into OUT."""
import json
import os
import signal
import sys
import time

if sys.argv[1] == "--slowest":
    rows = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
    rows = [r for r in rows if r["chapter"] != "full_paths_tests" and r["seconds"] is not None]
    stopped = [r for r in rows if r["rc"] == "stopped at the deadline"]
    print(max(stopped or rows, key=lambda r: r["seconds"])["chapter"] if rows else "")
    sys.exit(0)

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from robustnb import cli  # noqa: E402

chapter, preset, device, limit, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cuda = torch.cuda.is_available() and device.startswith("cuda")


class Stop(BaseException):  # not an Exception: no `except Exception` in a chapter swallows it
    pass


def stop(*_):
    raise Stop


signal.signal(signal.SIGALRM, stop)
signal.alarm(limit)
t0 = time.perf_counter()
finished = True
with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
    try:
        cli.reproduce(chapter, preset, 0, device, verbose=False)
    except Stop:
        finished = False
    signal.alarm(0)
    if cuda:
        torch.cuda.synchronize()
seconds = time.perf_counter() - t0
events = prof.key_averages()
counts = {e.key: e.count for e in events}
waits = {k: counts.get(k, 0) for k in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
                                       "cudaMemcpy", "aten::_local_scalar_dense", "aten::item")}
with open(out, "w") as f:
    f.write(f"{chapter} at {preset} on {device}: {'the whole run' if finished else 'its first'} {seconds:.0f} s\n")
    f.write(f"host waits for the device (calls): {waits}\n\n")
    for key in ("self_cuda_time_total", "self_cpu_time_total") if cuda else ("self_cpu_time_total",):
        f.write(f"== top 40 by {key}\n{events.table(sort_by=key, row_limit=40, max_name_column_width=60)}\n")
os._exit(0)  # a run stopped midway may leave threads (a progress line, a data loader) that would keep us waiting
PY
SLOWEST=$($PY "$W/profile_chapter.py" --slowest "$W/times.jsonl")
LEFT=$(( DEADLINE - ($(date +%s) - T0) ))
SECS=$(( LEFT - 30 < PROFILE_S ? LEFT - 30 : PROFILE_S ))
if [ "$PROFILE_S" -gt 0 ] && [ -n "$SLOWEST" ] && [ "$SECS" -ge 10 ]; then
  s=$(date +%s)
  mkdir -p "$W/profile_cache"  # the decoded datasets only: no trained model, no result
  [ -d "$W/cache/datasets" ] && cp -r "$W/cache/datasets" "$W/profile_cache/"
  ROBUSTNB_CACHE=$W/profile_cache pin "0-$((NCPU - 1))" timeout "$LEFT" \
    $PY "$W/profile_chapter.py" "$SLOWEST" "$PRESET" "$DEVICE" "$SECS" "$W/profile.txt" > "$W/profile.log" 2>&1
  echo "profile of $SLOWEST: rc $?, $(( $(date +%s) - s )) s"
  [ -f "$W/profile.txt" ] && head -n 3 "$W/profile.txt"
fi
kill $SAMPLER 2>/dev/null

{
  cat "$W/machine.txt"
  echo "peak GPU memory in use (both streams, MiB): $(sort -k2 -n "$W/gpu_memory.txt" | tail -1 | cut -d' ' -f2)"
  cat "$W/times.jsonl"
  for f in "$W"/*.log; do echo "== $(basename "$f")"; tail -n 25 "$f"; done
} > "$W/summary.txt"
cp "$W/times.jsonl" "$W/summary.txt" "$OUT/"
[ -f "$W/profile.txt" ] && cp "$W/profile.txt" "$OUT/"
tar -czf "$OUT/results.tar.gz" -C "$W" --exclude cache --exclude profile_cache .
echo "== times"; cat "$W/times.jsonl"
