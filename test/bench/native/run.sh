#!/usr/bin/env bash
# Builds and runs the kernel measurements of this folder (see docs/performance.md, "Kernels beyond onnxruntime 1.30"):
#   bash test/bench/native/run.sh
# needs gcc on x86-64 with AVX-512 VNNI (q4-gemv.c is written for it); fetches node-llama-cpp's prebuilt ggml
# (npm registry) and writes a 1.4 GB weight file, both under ~/.cache/blip2-bench/native. Run it on a quiet
# machine: nothing else benchmarking, no test suite.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${BLIP2_BENCH_CACHE:-$HOME/.cache/blip2-bench}/native"
version=3.22.1
mkdir -p "$work"
cd "$work"
if [ ! -d "ggml-$version" ]; then
  rm -rf pkg && mkdir pkg && (cd pkg && npm pack --silent "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >/dev/null)
  tar -xzf "pkg/node-llama-cpp-$version.tgz" -C pkg package/llama/gitRelease.bundle
  git clone -q pkg/package/llama/gitRelease.bundle pkg/llama.cpp
  mkdir -p "ggml-$version"
  tar -xzf "pkg/node-llama-cpp-linux-x64-$version.tgz" -C "ggml-$version" --strip-components=3 package/bins/linux-x64
  cp -r pkg/llama.cpp/ggml/include "ggml-$version/include"
  rm -rf pkg
fi
grep -q avx512_vnni /proc/cpuinfo || { echo "q4-gemv.c needs AVX-512 VNNI; this CPU has none" >&2; exit 1; }
gcc -O3 -march=native -pthread "$here/q4-gemv.c" -o q4-gemv -lm
lib="$work/ggml-$version"
variant=$(grep -q amx_int8 /proc/cpuinfo && echo sapphirerapids || (grep -q avx512_vnni /proc/cpuinfo && echo icelake || echo haswell))
gcc -O2 "$here/ggml-gemv.c" -I"$lib/include" -L"$lib" -l:libggml-base.so -l:"libggml-cpu-$variant.so" -Wl,-rpath,"$lib" -o ggml-gemv
lscpu | grep -E 'Model name' ; echo "flags: $(grep -o -w 'avx2\|avx512f\|avx512_vnni\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"; echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== our 4-bit GEMV kernels (MatMulNBits layout; 16 columns to a vector), and a plain read of the same mapping"
./q4-gemv q4-gemv.weights 2 10
for buft in AMX CPU_REPACK; do
  for rows in 1 33; do
    echo "== ggml q4_0, $rows row(s), weights in $buft"
    BUFT=$buft ./ggml-gemv q4_0 "$rows" 6 2>/dev/null | grep -E '^(weights in|best)'
  done
done
