#!/usr/bin/env bash
# Conversion-memory benchmark: peak resident memory of converting a full-size BLIP-2 OPT 2.7b checkpoint.
#
# The goal: converting the 3.7-billion-parameter float32 checkpoint (15 GB, 4 shards) to int4 stays under
# 3 GB peak RSS, because the converter streams one tensor at a time.
#
# Steps:
#   1. Writes a seeded random-weight checkpoint with the real model's tensors, shapes and 4-shard layout
#      (from test/fixtures/blip2-opt-2.7b-config) into $BLIP2_BENCH_DIR/checkpoint. It is kept between runs
#      and not regenerated while its index (written last, so present only when complete) is there.
#   2. Converts it with test/bench/convert-checkpoint.ts under `/usr/bin/time -v` into
#      $BLIP2_BENCH_DIR/converted (deleted first, and afterwards unless BLIP2_BENCH_KEEP_OUTPUT=1).
#   3. Prints a summary: checkpoint size and parameters, conversion wall time, maximum resident set size
#      (from the kernel, via time -v), output size per graph, and the in-process peak per conversion phase.
#      Exits 1 when the peak is over the limit.
#
# Usage (from anywhere; needs about 15 GB free for the checkpoint plus the converted size, 2-3 GB at int4):
#   test/bench/conversion-memory.sh
# Environment:
#   BLIP2_BENCH_DIR        work folder (default /tmp/blip2-conversion-bench)
#   BLIP2_BENCH_CONFIG     config folder (default the real model's; test/fixtures/tiny-blip2 for a dry run)
#   BLIP2_BENCH_PRECISION  fp32 | fp16 | int8 | int4 (default int4)
#   BLIP2_BENCH_DTYPE      checkpoint dtype F32 | F16 | BF16 (default F32, as the real checkpoint)
#   BLIP2_BENCH_SEED       seed of the random weights (default 0)
#   BLIP2_BENCH_LIMIT_MB   peak RSS budget in MiB (default 3072)
#   BLIP2_BENCH_KEEP_OUTPUT=1  keep the converted model
#   BLIP2_BENCH_CLEAN=1    delete the checkpoint too when done
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BLIP2_BENCH_DIR:-/tmp/blip2-conversion-bench}"
PRECISION="${BLIP2_BENCH_PRECISION:-int4}"
DTYPE="${BLIP2_BENCH_DTYPE:-F32}"
SEED="${BLIP2_BENCH_SEED:-0}"
LIMIT_MB="${BLIP2_BENCH_LIMIT_MB:-3072}"
CONFIG="${BLIP2_BENCH_CONFIG:-$ROOT/test/fixtures/blip2-opt-2.7b-config}"
CKPT="$WORK/checkpoint-$DTYPE-seed$SEED"
OUT="$WORK/converted-$PRECISION"
TIME_LOG="$WORK/time-$PRECISION.txt"
CONVERT_LOG="$WORK/convert-$PRECISION.log"

[[ -x /usr/bin/time ]] || { echo "conversion-memory: /usr/bin/time (GNU time) is required." >&2; exit 2; }
mkdir -p "$WORK"
cd "$ROOT"

gen_seconds="(reused)"
# Weight files and the index get their final names only when complete, so their presence means a whole checkpoint.
if [[ -f "$CKPT/model.safetensors.index.json" || -f "$CKPT/model.safetensors" ]]; then
  echo "Reusing the checkpoint in $CKPT" >&2
else
  echo "Writing the random $DTYPE checkpoint to $CKPT ..." >&2
  start=$(date +%s)
  node --import tsx server/src/tools/random-checkpoint.ts --config "$CONFIG" --out "$CKPT" \
    --seed "$SEED" --dtype "$DTYPE" --force
  gen_seconds="$(( $(date +%s) - start )) s"
fi

rm -rf "$OUT"
echo "Converting to $PRECISION under /usr/bin/time -v ..." >&2
set +e
/usr/bin/time -v -o "$TIME_LOG" node --import tsx test/bench/convert-checkpoint.ts "$CKPT" "$OUT" "$PRECISION" \
  > "$CONVERT_LOG.json" 2> >(tee "$CONVERT_LOG" >&2)
status=$?
set -e
wait
if [[ $status -ne 0 ]]; then
  echo "conversion-memory: the conversion failed (exit $status); see $CONVERT_LOG and $TIME_LOG." >&2
  exit 1
fi

field() { sed -n "s/^[[:space:]]*$1: //p" "$TIME_LOG"; }
max_rss_kb="$(field 'Maximum resident set size (kbytes)')"
max_rss_mb=$(( max_rss_kb / 1024 ))
ckpt_bytes=$(find "$CKPT" -name '*.safetensors' -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
# Counted from the safetensors headers, so a single-file checkpoint (no index) works too.
params=$(node -e '
  const fs = require("fs");
  let n = 0;
  for (const f of process.argv.slice(1)) {
    const fd = fs.openSync(f, "r"), len = Buffer.alloc(8);
    fs.readSync(fd, len, 0, 8, 0);
    const h = Buffer.alloc(Number(len.readBigUInt64LE(0)));
    fs.readSync(fd, h, 0, h.length, 8);
    fs.closeSync(fd);
    for (const [k, v] of Object.entries(JSON.parse(h))) if (k !== "__metadata__") n += v.shape.reduce((a, b) => a * b, 1);
  }
  console.log(n);' "$CKPT"/*.safetensors)

echo
echo "=== BLIP-2 OPT conversion memory ($PRECISION from $DTYPE) ==="
echo "machine:            $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, node $(node --version)"
echo "checkpoint:         $CKPT"
echo "checkpoint size:    $ckpt_bytes bytes ($(awk -v b="$ckpt_bytes" 'BEGIN {printf "%.2f GB", b/1e9}')) in $(ls "$CKPT"/*.safetensors | wc -l) file(s), written in $gen_seconds"
echo "parameters:         $params"
echo "conversion wall:    $(field 'Elapsed (wall clock) time (h:mm:ss or m:ss)') (user $(field 'User time (seconds)') s, system $(field 'System time (seconds)') s)"
echo "maximum RSS:        $max_rss_kb kB = $max_rss_mb MiB (limit $LIMIT_MB MiB)"
echo "output:"
for onnx in "$OUT"/onnx/*.onnx; do
  data="${onnx}_data"
  bytes=$(( $(stat -c %s "$onnx") + $( [[ -f "$data" ]] && stat -c %s "$data" || echo 0) ))
  printf '  %-34s %14d bytes (%.2f GB)\n' "$(basename "$onnx")" "$bytes" "$(awk -v b="$bytes" 'BEGIN {print b/1e9}')"
done
echo "peak by phase (in-process samples):"
sed -n '/^Peak resident memory by phase/,$p' "$CONVERT_LOG" | tail -n +2

if [[ "${BLIP2_BENCH_KEEP_OUTPUT:-0}" != 1 ]]; then rm -rf "$OUT"; fi
if [[ "${BLIP2_BENCH_CLEAN:-0}" == 1 ]]; then rm -rf "$CKPT"; fi

if (( max_rss_mb > LIMIT_MB )); then
  echo "RESULT: FAIL, peak RSS $max_rss_mb MiB is over $LIMIT_MB MiB"
  exit 1
fi
echo "RESULT: PASS, peak RSS $max_rss_mb MiB is within $LIMIT_MB MiB"
