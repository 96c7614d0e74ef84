#!/usr/bin/env bash
# Dev-time oracle for the engine's forward pass: llama.cpp, built from the source the
# node-llama-cpp npm package carries (llama/gitRelease.bundle), runs the random-weight test
# models of every architecture (model/random_shapes.h: test-llama, test-llama3, test-mistral,
# test-qwen2, test-qwen3; float32 weights, seed 7) written as GGUF by kvferry-make-model, and its
# logits for every position of a fixed prompt become tests/data/llama_cpp/logits/SHAPE.json, which
# tests/node_agent/engine/architecture_test.cc compares with the CPU engine's on the GGUF and on the Hugging
# Face directory of the same weights. Nothing here runs at test time; rerun it when the shapes
# or the writer change.
#
#   scripts/llama_cpp_goldens.sh [BUILD_DIR]     (default build/default; needs npm, cmake, g++)
#
# WORK (default /tmp/kvferry-llama-cpp) keeps the unpacked source and llama.cpp's build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/default}"
work="${WORK:-/tmp/kvferry-llama-cpp}"
version=3.22.1  # node-llama-cpp: llama.cpp release v0.5.0, commit de3ff815ea7d (2026-09-28)
out="$root/tests/data/llama_cpp/logits"
shapes="test-llama test-llama3 test-mistral test-qwen2 test-qwen3"
seed=7
tokens="1,350,17,42,99,200,7,300,5,64,128,255,256,11,380,2"

mkdir -p "$work" "$out"
cmake --build "$build" --target kvferry-make-model >/dev/null
cd "$work"
if [ ! -d llama.cpp ]; then
  npm pack "node-llama-cpp@$version" >/dev/null
  tar xzf "node-llama-cpp-$version.tgz"
  git clone -q package/llama/gitRelease.bundle llama.cpp
fi
commit="$(git -C llama.cpp rev-parse HEAD)"
if [ ! -f llama.cpp/build/src/libllama.a ]; then
  # CPU only, no OpenMP (one thread below), static libraries; only the library is built.
  cmake -S llama.cpp -B llama.cpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF >/dev/null
  cmake --build llama.cpp/build --target llama
fi
lib=llama.cpp/build
g++ -O2 -std=c++17 "$root/scripts/llama_cpp_goldens/logits.cpp" -I llama.cpp/include \
  -I llama.cpp/ggml/include -o logits "$lib/src/libllama.a" "$lib/ggml/src/libggml.a" \
  "$lib/ggml/src/libggml-cpu.a" "$lib/ggml/src/libggml-base.a" -lpthread -ldl

for shape in $shapes; do
  "$build/model/kvferry-make-model" --shape "$shape" --type f32 --format gguf --seed "$seed" \
    --out "$work/$shape" >/dev/null
  ./logits "$work/$shape/model.gguf" "$tokens" >"$work/$shape/logits.json"
  python3 - "$work/$shape/logits.json" "$out/$shape.json" "$shape" "$seed" "$tokens" "$commit" <<'PY'
import json, sys
src, dst, shape, seed, tokens, commit = sys.argv[1:]
result = json.load(open(src))
golden = {"shape": shape, "seed": int(seed), "type": "f32", "llama_cpp_commit": commit,
          "settings": "CPU, 1 thread, F32 KV cache, flash attention off, one batch",
          "tokens": [int(t) for t in tokens.split(",")], "n_vocab": result["n_vocab"],
          "logits": result["logits"]}
with open(dst, "w") as f:
    json.dump(golden, f, separators=(",", ":"))
    f.write("\n")
PY
  echo "llama_cpp_goldens: $shape -> $out/$shape.json"
done
