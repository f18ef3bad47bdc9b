#!/usr/bin/env bash
# Precision-cost benchmark: what fp32, fp16, int8 and int4 cost on the full-size BLIP-2 OPT 2.7b, on this CPU.
#
# The question it answers: for each precision the converter offers, how much disk, load time and memory it takes,
# and how fast it captions, next to what the machine's measured limits (the roofline in
# /work/shared/docs/environment.md) say it could do. Random weights make the text meaningless, so every caption
# is forced to exactly 20 new tokens, which keeps decode times comparable.
#
# Steps:
#   1. Writes the seeded random float32 checkpoint (3.74 B parameters, ~15 GB, real shapes and shard layout) into
#      $BLIP2_BENCH_DIR/checkpoint-F32-seed$SEED, or reuses it: the same folder conversion-memory.sh uses.
#   2. For each precision, one at a time (peak disk is the checkpoint plus one conversion, at most ~14 GB for fp32):
#      a. converts it (test/bench/convert-checkpoint.ts under /usr/bin/time -v) and measures the size on disk;
#      b. measures the roofline now, in its own process (fp32 GEMM GFLOP/s at the vision shape and fp32 GEMV GB/s
#         at the decode shape, from RAM, best and median: test/bench/precision-cost.ts roofline);
#      c. records `uptime`, and when the 1-minute load average is above $BLIP2_BENCH_MAX_LOAD (other people's tests
#         share the machine) waits for it to fall, for up to $BLIP2_BENCH_WAIT_S seconds, then goes on and says so;
#      d. under /usr/bin/time -v, loads the conversion as the CLI does and captions $BLIP2_BENCH_IMAGE three times with
#         20 new tokens (test/bench/precision-cost.ts caption): load time, RSS after load (anonymous + mapped file),
#         vision, prefill and per-token decode time (decode time / 19 decoder steps: the first of the 20 tokens
#         comes from the prefill; also the median interval between streamed tokens), and the share of the 2 cores
#         the process got; the table takes the best of the two warm captions (the first pays one-time costs);
#         peak RSS from the kernel;
#      e. deletes the conversion unless BLIP2_BENCH_KEEP_OUTPUT=1.
#   3. Prints the table (precision-cost.ts report), with roofline estimates next to each time, from the best rates:
#      vision = vision FLOPs / GEMM rate, per token = decoder weight bytes / GEMV rate.
#
# Usage (about 15 GB free for the checkpoint plus up to 14 GB for the fp32 conversion; 20-40 minutes):
#   test/bench/precision-cost.sh                     # all four precisions
#   BLIP2_BENCH_PRECISIONS="int8 int4" test/bench/precision-cost.sh
# Environment:
#   BLIP2_BENCH_DIR         work folder (default /tmp/blip2-conversion-bench, shared with conversion-memory.sh)
#   BLIP2_BENCH_CONFIG      config folder (default the real model's; test/fixtures/tiny-blip2 for a dry run)
#   BLIP2_BENCH_PRECISIONS  default "int4 int8 fp16 fp32": smallest first, so a run that runs out of memory or time
#                           at fp32 has already measured the rest
#   BLIP2_BENCH_SEED        seed of the random weights (default 0)
#   BLIP2_BENCH_THREADS     onnxruntime intra-op threads (default 2)
#   BLIP2_BENCH_TOKENS      new tokens per caption (default 20)
#   BLIP2_BENCH_IMAGE       image to caption (default a fixture photograph)
#   BLIP2_BENCH_MAX_LOAD    load average above which a measurement waits (default 1.5)
#   BLIP2_BENCH_WAIT_S      longest wait for the load to fall, per precision (default 600)
#   BLIP2_BENCH_RESULTS     where the per-precision logs and JSON go (default $BLIP2_BENCH_DIR/precision-cost-<time>)
#   BLIP2_BENCH_KEEP_OUTPUT=1  keep the conversions ($BLIP2_BENCH_DIR/precision-<p>)
#   BLIP2_BENCH_CLEAN=1     delete the checkpoint too when done
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BLIP2_BENCH_DIR:-/tmp/blip2-conversion-bench}"
CONFIG="${BLIP2_BENCH_CONFIG:-$ROOT/test/fixtures/blip2-opt-2.7b-config}"
PRECISIONS="${BLIP2_BENCH_PRECISIONS:-int4 int8 fp16 fp32}"
SEED="${BLIP2_BENCH_SEED:-0}"
THREADS="${BLIP2_BENCH_THREADS:-2}"
TOKENS="${BLIP2_BENCH_TOKENS:-20}"
IMAGE="${BLIP2_BENCH_IMAGE:-$ROOT/test/fixtures/tiny-blip2/reference/images/cat.png}"
MAX_LOAD="${BLIP2_BENCH_MAX_LOAD:-1.5}"
WAIT_S="${BLIP2_BENCH_WAIT_S:-600}"
CKPT="$WORK/checkpoint-F32-seed$SEED"
RESULTS="${BLIP2_BENCH_RESULTS:-$WORK/precision-cost-$(date +%Y%m%d-%H%M%S)}"

[[ -x /usr/bin/time ]] || { echo "precision-cost: /usr/bin/time (GNU time) is required." >&2; exit 2; }
mkdir -p "$WORK" "$RESULTS"
cd "$ROOT"
IMAGE="$(realpath "$IMAGE")"

# Waits while others load the machine: a 2-core box shared with test runs gives numbers off by 2-3x otherwise.
wait_for_quiet() {
  local waited=0
  while awk -v max="$MAX_LOAD" '{exit !($1 > max)}' /proc/loadavg; do
    if (( waited >= WAIT_S )); then
      echo "precision-cost: load average still $(cut -d' ' -f1-3 /proc/loadavg) after ${WAIT_S} s; measuring anyway." >&2
      return
    fi
    (( waited == 0 )) && echo "precision-cost: load average $(cut -d' ' -f1-3 /proc/loadavg) > $MAX_LOAD; waiting ..." >&2
    sleep 15
    waited=$(( waited + 15 ))
  done
}

if [[ -f "$CKPT/model.safetensors.index.json" || -f "$CKPT/model.safetensors" ]]; then
  echo "Reusing the checkpoint in $CKPT" >&2
else
  echo "Writing the random F32 checkpoint to $CKPT ..." >&2
  node --import tsx server/src/tools/random-checkpoint.ts --config "$CONFIG" --out "$CKPT" --seed "$SEED" --dtype F32 --force
fi

{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, node $(node --version), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "checkpoint: $CKPT ($(du -sb "$CKPT" | cut -f1) bytes)"
  echo "threads $THREADS, $TOKENS new tokens, image $IMAGE"
} | tee "$RESULTS/machine.txt" >&2

for p in $PRECISIONS; do
  out="$WORK/precision-$p"
  base="$RESULTS/$p"
  rm -rf "$out"
  echo "== $p: converting ..." >&2
  set +e
  /usr/bin/time -v -o "$base.convert-time.txt" node --import tsx test/bench/convert-checkpoint.ts "$CKPT" "$out" "$p" \
    > "$base.convert.json" 2> "$base.convert.err"
  status=$?
  set -e
  if [[ $status -ne 0 ]]; then
    echo "== $p: conversion failed (exit $status): $(tail -n 1 "$base.convert.err")" >&2
    rm -rf "$out"
    continue
  fi
  du -sb "$out" | cut -f1 > "$base.disk"
  echo "== $p: $(numfmt --to=iec-i --suffix=B "$(cat "$base.disk")") on disk" >&2

  wait_for_quiet
  uptime > "$base.uptime"
  echo "== $p: uptime $(cat "$base.uptime")" >&2
  node --import tsx test/bench/precision-cost.ts roofline --threads "$THREADS" > "$base.roofline.json" 2> "$base.roofline.err" \
    || echo "== $p: roofline failed: $(tail -n 1 "$base.roofline.err")" >&2
  cat "$base.roofline.err" >&2

  echo "== $p: loading and captioning under /usr/bin/time -v ..." >&2
  set +e
  /usr/bin/time -v -o "$base.time.txt" node --import tsx test/bench/precision-cost.ts caption \
    --model "$out" --image "$IMAGE" --threads "$THREADS" --tokens "$TOKENS" --repeat 3 \
    > "$base.caption.json" 2> "$base.caption.err"
  status=$?
  set -e
  cat "$base.caption.err" >&2
  uptime >> "$base.uptime"
  [[ $status -eq 0 ]] || echo "== $p: caption failed (exit $status)" >&2

  if [[ "${BLIP2_BENCH_KEEP_OUTPUT:-0}" != 1 ]]; then rm -rf "$out"; fi
done

if [[ "${BLIP2_BENCH_CLEAN:-0}" == 1 ]]; then rm -rf "$CKPT"; fi

echo
echo "=== BLIP-2 OPT 2.7b: cost of each precision (random weights, $THREADS threads, $TOKENS new tokens) ==="
cat "$RESULTS/machine.txt"
echo "results: $RESULTS"
echo
node --import tsx test/bench/precision-cost.ts report "$RESULTS" $PRECISIONS | tee "$RESULTS/report.md"
