#!/usr/bin/env bash
# The GPU evaluation of the CUDA engine, in one run on one GPU host (results/gpu/ holds the
# committed outputs of a run on an H200):
#
#   scripts/bench_gpu.sh [--out DIR] [--shapes "llama-3.2-1b llama-3.1-8b"] [--stages LIST]
#
# Stages (default all but cpu, in this order; a failed stage is reported and the rest still run):
#   build      scripts/build_gpu.sh (Release, build/gpu): every target
#   tests      ctest -L gpu (kernels against CPU references, the engine against the CPU engine,
#              the stories260K goldens, prefix hits, batching, export/import, graphs; cuda_ipc in
#              one process and two; disaggregated serving against one both agent)
#   cpu        the CPU suite (ctest -LE "gpu|rxe") on this machine, beside the tests stage
#   transfer   transfer_bench --transport cuda_ipc, two processes on GPU 0: GB/s and p50/p99 per
#              block size next to a contiguous copy, a copy per block and gather+scatter kernels
#   transfer-tcp  transfer_bench --transport tcp over 127.0.0.1, two processes, the cuda_ipc
#              stage's block sizes: host pools (transfer-tcp-host.json: loopback tcp of host
#              memory, the ceiling of the next) and GPU 0 pools staged through pinned memory
#              (transfer-tcp-cuda.json, each row next to a pinned device→host and host→device
#              copy of its batch)
#   reference  per shape: kvferry-make-model writes random weights from a seed (GGUF +
#              config.json); kvferry-dump-logits runs the engine on fixed prompts;
#              scripts/gpu_reference.py runs transformers' LlamaForCausalLM on the same weights,
#              compares logits and greedy tokens, and measures transformers' throughput
#   bench      per shape: engine_bench --device cuda (prefill 1K/8K, decode batch 1/32/128/256,
#              each next to its ceiling measured in the same run)
#   hf-reference  every architecture (test-llama3/qwen2/qwen3/mistral in float32, qwen2.5-0.5b
#              and qwen3-0.6b in bf16) written as a Hugging Face directory; kvferry-dump-logits
#              (CPU and CUDA engines) against transformers' AutoModelForCausalLM reading the
#              same directory (scripts/hf_reference.py): hf-reference-<shape>.json
#   profile    with the last shape, under ncu (kernel durations only, collection on only around
#              what engine_bench --profile marks): one 1K and one 8K prefill, and two decode steps
#              at batch 1 and 32, summed per kernel by scripts/ncu_summary.py
#              (profile-<shape>-{prefill,decode}.json); then cuda_ipc at 32 KiB blocks: the batch
#              copy kernel's duration under ncu, and transfer_bench with 512- and 2048-block
#              batches, 16 and 64 in flight (profile-cuda_ipc.log)
#   e2e        with the last shape: scripts/gpu_e2e.sh bench (benchmark_client at 1K/4K/8K and
#              shared-prefix prompts, prefill + decode agents over cuda_ipc vs one both agent)
# Every stage writes DIR/<stage>[-<shape>].log and, where it has one, a JSON result.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench-results/gpu"
shapes="llama-3.2-1b llama-3.1-8b"
stages="build tests transfer transfer-tcp reference hf-reference bench profile e2e"
models="${KVFERRY_GPU_MODELS:-/tmp/kvferry-models}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --shapes) shapes="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out" "$models"
build="$root/build/gpu"
failed=()

stage() {  # stage NAME LOG COMMAND...: runs, logs, and remembers a failure
  local name="$1" log="$2"
  shift 2
  echo "== $name ($(date +%H:%M:%S))"
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "   ok in $((SECONDS - started)) s"
  else
    echo "   FAILED in $((SECONDS - started)) s; the end of $log:"
    tail -n 25 "$log" | sed 's/^/   | /'
    failed+=("$name")
  fi
}

wants() { [[ " $stages " == *" $1 "* ]]; }

{
  echo "host: $(hostname), $(nproc) cores"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  nvcc --version 2>/dev/null | tail -1 || /usr/local/cuda/bin/nvcc --version | tail -1
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
} | tee "$out/machine.txt"

wants build && stage build "$out/build.log" "$root/scripts/build_gpu.sh" "$build"
if wants cpu; then  # functional, beside the GPU tests; the benchmarks below run alone
  ( ctest --test-dir "$build" -LE "gpu|rxe" -j 12 --output-on-failure --timeout 300 \
      >"$out/cpu.log" 2>&1; echo "exit $?" >>"$out/cpu.log" ) &
  cpu_pid=$!
fi
wants tests && stage tests "$out/tests.log" \
  ctest --test-dir "$build" -L gpu --output-on-failure --timeout 900
if wants cpu; then
  wait "$cpu_pid"
  tail -n 4 "$out/cpu.log"
  grep -q "^exit 0" "$out/cpu.log" || failed+=("cpu")
fi
if wants transfer; then
  transfer() {
    local blob="$out/ipc.blob"
    rm -f "$blob"
    "$build/bench/transfer_bench" --role target --transport cuda_ipc --blob-file "$blob" \
      --pool-bytes 2G &
    local target=$!
    "$build/bench/transfer_bench" --role initiator --transport cuda_ipc --blob-file "$blob" \
      --pool-bytes 2G --block-sizes 2K,8K,32K,128K,512K,2M,4M --batch 512 \
      --max-batch-bytes 64M --queue-depth 16 --duration 1 --json "$out/transfer-cuda_ipc.json"
    local status=$?
    kill -INT "$target"
    wait "$target"
    return $status
  }
  stage transfer "$out/transfer.log" transfer
  cat "$out/transfer.log"
fi
if wants transfer-tcp; then
  transfer_tcp() {  # MEMORY: host or cuda
    local blob="$out/tcp-$1.blob"
    rm -f "$blob"
    "$build/bench/transfer_bench" --role target --transport tcp --memory "$1" --blob-file "$blob" \
      --pool-bytes 2G &
    local target=$!
    "$build/bench/transfer_bench" --role initiator --transport tcp --memory "$1" \
      --blob-file "$blob" --pool-bytes 2G --block-sizes 2K,8K,32K,128K,512K,2M,4M --batch 512 \
      --max-batch-bytes 64M --queue-depth 16 --duration 1 --json "$out/transfer-tcp-$1.json"
    local status=$?
    kill -INT "$target"
    wait "$target"
    return $status
  }
  stage "transfer-tcp host" "$out/transfer-tcp-host.log" transfer_tcp host
  stage "transfer-tcp cuda" "$out/transfer-tcp-cuda.log" transfer_tcp cuda
  cat "$out/transfer-tcp-host.log" "$out/transfer-tcp-cuda.log"
fi

# Fixed prompts: token ids from a fixed LCG, lengths across tiles and blocks.
prompts="$out/prompts.json"
python3 - "$prompts" <<'PY'
import json, sys
state, prompts = 12345, []
for length in (5, 17, 33, 48, 64, 80, 100, 128, 150, 200):
    ids = [1]
    while len(ids) < length:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        ids.append(3 + (state >> 33) % 120000)
    prompts.append(ids)
json.dump(prompts, open(sys.argv[1], "w"))
PY

for shape in $shapes; do
  dir="$models/$shape"
  if wants reference || wants bench; then
    [ -f "$dir/model.gguf" ] || stage "model $shape" "$out/model-$shape.log" \
      "$build/model/kvferry-make-model" --shape "$shape" --out "$dir" --seed 1
  fi
  if wants reference; then
    stage "dump $shape" "$out/dump-$shape.log" "$build/bench/kvferry-dump-logits" \
      --model "$dir/model.gguf" --prompts "$prompts" --out "$dir/logits.bin" \
      --tokens "$out/tokens-$shape.json" --steps 32
    stage "reference $shape" "$out/reference-$shape.log" env PYTHONUNBUFFERED=1 python3 \
      "$root/scripts/gpu_reference.py" --gguf "$dir/model.gguf" --config "$dir/config.json" \
      --prompts "$prompts" --logits "$dir/logits.bin" --tokens "$out/tokens-$shape.json" \
      --bench --json "$out/reference-$shape.json"
    rm -f "$dir/logits.bin"
  fi
  if wants bench; then
    stage "bench $shape" "$out/bench-$shape.log" "$build/bench/engine_bench" --device cuda \
      --model "$dir/model.gguf" --name "$shape" --json "$out/bench-$shape.json"
  fi
done

if wants hf-reference; then
  # Every architecture as a Hugging Face directory, against transformers reading that directory:
  # the test shapes in float32 (CPU and CUDA engines), two real shapes in bf16 (CUDA engine).
  hf_reference() {
    local shape="$1" type="$2" engines="$3" dir="$models/hf-$1" ours=() engine
    "$build/model/kvferry-make-model" --shape "$shape" --format hf --type "$type" --out "$dir" \
      --seed 3 >/dev/null || return 1
    python3 - "$dir/config.json" "$dir/prompts.json" <<'PY' || return 1
import json, sys
vocab, state, prompts = json.load(open(sys.argv[1]))["vocab_size"], 99, []
for length in (3, 16, 40, 77):
    ids = []
    while len(ids) < length:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        ids.append(3 + (state >> 33) % (vocab - 3))
    prompts.append(ids)
json.dump(prompts, open(sys.argv[2], "w"))
PY
    for engine in $engines; do
      "$build/bench/kvferry-dump-logits" --model "$dir" --device "$engine" --steps 8 \
        --prompts "$dir/prompts.json" --out "$dir/$engine.bin" --tokens "$dir/$engine.tokens.json" ||
        return 1
      ours+=(--ours "$engine=$dir/$engine.bin,$dir/$engine.tokens.json")
    done
    python3 "$root/scripts/hf_reference.py" --dir "$dir" --prompts "$dir/prompts.json" "${ours[@]}" \
      --json "$out/hf-reference-$shape.json"
  }
  for spec in test-llama3:f32:"cpu cuda" test-qwen2:f32:"cpu cuda" test-qwen3:f32:"cpu cuda" \
    test-mistral:f32:"cpu cuda" qwen2.5-0.5b:bf16:cuda qwen3-0.6b:bf16:cuda; do
    IFS=: read -r shape type engines <<<"$spec"
    stage "hf-reference $shape" "$out/hf-reference-$shape.log" hf_reference "$shape" "$type" \
      "$engines"
    tail -n 2 "$out/hf-reference-$shape.log"
  done
fi

last="${shapes##* }"
dir="$models/$last"
if { wants profile || wants e2e; } && [ ! -f "$dir/model.gguf" ]; then
  stage "model $last" "$out/model-$last.log" \
    "$build/model/kvferry-make-model" --shape "$last" --out "$dir" --seed 1
fi

if wants profile; then
  ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
  # profile_engine WHAT ENGINE_BENCH_ARGS...: one ncu report of the marked range, summarized.
  profile_engine() {
    local what="$1" report="$out/profile-$last-$1"
    shift
    [ -n "$ncu" ] || { echo "no ncu on this machine"; return 1; }
    "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
      --export "$report" --force-overwrite "$build/bench/engine_bench" --device cuda \
      --model "$dir/model.gguf" --name "$last" --profile "$what" "$@" || return 1
    "$ncu" --import "$report.ncu-rep" --csv --page raw --print-kernel-base function \
      >"$report.csv" || return 1
    python3 "$root/scripts/ncu_summary.py" "$report.csv" --json "$report.json" \
      --title "$last $what ($*)"
  }
  stage "profile prefill" "$out/profile-prefill.log" profile_engine prefill --prefill 1024,8192 \
    --batch 1
  stage "profile decode" "$out/profile-decode.log" profile_engine decode --prefill 1024 \
    --batch 1,32 --decode-steps 8
  cuda_ipc_probe() {
    local blob="$out/probe.blob" status=0 depth batch
    [ -n "$ncu" ] || { echo "no ncu on this machine"; return 1; }
    run_pair() {  # run_pair INITIATOR_PREFIX... -- ARGS...: a target, then an initiator
      rm -f "$blob"
      "$build/bench/transfer_bench" --role target --transport cuda_ipc --blob-file "$blob" \
        --pool-bytes 2G --queue-depth 64 &
      local target=$!
      "$@"
      local result=$?
      kill -INT "$target"
      wait "$target"
      return $result
    }
    for depth in 16 64; do
      for batch in 512 2048; do
        echo "-- 32 KiB blocks, $batch per batch, $depth in flight"
        run_pair "$build/bench/transfer_bench" --role initiator --transport cuda_ipc \
          --blob-file "$blob" --pool-bytes 2G --block-sizes 32K --batch "$batch" \
          --max-batch-bytes 64M --queue-depth "$depth" --duration 1 || status=1
      done
    done
    echo "-- the batch copy kernel, 32 KiB blocks, 512 per batch, under ncu"
    run_pair "$ncu" --clock-control none --metrics gpu__time_duration.sum -k regex:batchCopy \
      --launch-skip 200 --launch-count 20 --export "$out/profile-batch-copy" --force-overwrite \
      "$build/bench/transfer_bench" --role initiator --transport cuda_ipc --blob-file "$blob" \
      --pool-bytes 2G --block-sizes 32K --batch 512 --max-batch-bytes 64M --queue-depth 16 \
      --duration 1 || status=1
    "$ncu" --import "$out/profile-batch-copy.ncu-rep" --csv --page raw \
      --print-kernel-base function >"$out/profile-batch-copy.csv" &&
      python3 "$root/scripts/ncu_summary.py" "$out/profile-batch-copy.csv" \
        --title "batch copy, 512 × 32 KiB" || status=1
    return $status
  }
  stage "profile cuda_ipc" "$out/profile-cuda_ipc.log" cuda_ipc_probe
  grep -hv "^==" "$out/profile-prefill.log" "$out/profile-decode.log" | tail -n 40
  grep -v "^==" "$out/profile-cuda_ipc.log" | head -40
fi

if wants e2e; then
  stage "e2e $last" "$out/e2e.log" "$root/scripts/gpu_e2e.sh" bench "$build" "$dir/model.gguf" \
    "$out/e2e"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "bench_gpu.sh: failed: ${failed[*]}"
  exit 1
fi
echo "bench_gpu.sh: all stages passed; results in $out"
