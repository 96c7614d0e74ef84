#!/usr/bin/env bash
# The device command that made this directory (run from the repository root, with .deps/ and
# bench-results/ab/ carried; bench-results/ab/ held this script, rdma.patch = `git diff cd6fbf3
# 116e117 -- rdma/` for the base build, and nsys_gaps.py; files came back as one tarball).
# GPU call 2: build (+ a transfer_bench whose batches all take turns over the four streams),
# e2e (three clusters), the streams A/B, an nsys timeline of one 8K prefill, the profile stage.
root=$(pwd)
res=bench-results/gpu
rm -rf .deps/root /tmp/var && mkdir -p /tmp/var "$res"
tar --exclude=./build --exclude=./bench-results -cf - . | tar -xf - -C /tmp/var
sed -i 's/constexpr uint64_t kTurnBytes = 32ull << 20;/constexpr uint64_t kTurnBytes = 0;/' /tmp/var/rdma/cuda_ipc/cuda_ipc_transport.cc
grep -n "kTurnBytes = " /tmp/var/rdma/cuda_ipc/cuda_ipc_transport.cc
(cd /tmp/var && scripts/build_gpu.sh /tmp/var/build transfer_bench >"$root/$res/var-build.log" 2>&1; echo "var build exit $?" >>"$root/$res/var-build.log") &
timeout 565 bash -c "
scripts/bench_gpu.sh --out $res --stages build
until grep -q 'var build exit' $res/var-build.log 2>/dev/null; do sleep 2; done
tail -1 $res/var-build.log
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages e2e
cat $res/e2e.log | tail -40
KVFERRY_AB_SIZES=8K,32K,128K scripts/ab_cuda_ipc.sh build/gpu /tmp/var/build $res/ab-streams 3
nsys=\$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)
echo nsys=\$nsys
if [ -n \"\$nsys\" ]; then
  \$nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda -o /tmp/pf --force-overwrite true build/gpu/bench/engine_bench --device cuda --model /tmp/kvferry-models/llama-3.1-8b/model.gguf --name llama-3.1-8b --profile prefill --prefill 8192 --batch 1 >$res/nsys.log 2>&1
  \$nsys stats -r cuda_gpu_trace,cuda_api_sum -f csv -o /tmp/pf /tmp/pf.nsys-rep >>$res/nsys.log 2>&1
  cp /tmp/pf_cuda_gpu_trace.csv /tmp/pf_cuda_api_sum.csv $res/ 2>/dev/null
  python3 bench-results/ab/nsys_gaps.py $res/pf_cuda_gpu_trace.csv
  head -12 $res/pf_cuda_api_sum.csv
fi
scripts/bench_gpu.sh --out $res --shapes llama-3.1-8b --stages profile
"
tar czf "$OUT/r2.tgz" -C bench-results gpu
