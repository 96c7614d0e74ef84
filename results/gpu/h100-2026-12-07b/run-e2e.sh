#!/usr/bin/env bash
# GPU call: gpu_e2e.sh test (round_robin: every request crosses the pair; checksums on the
# cuda_ipc pair; a corrupting tcp pair) with the agents built from head.tgz (+ change.patch).
set -x
root=$(pwd)
build=/tmp/new/build/gpu
if [ ! -x $build/node_agent/node_agent ]; then
  rm -rf /tmp/new && mkdir -p /tmp/new && tar -xzf bench-results/ab/head.tgz -C /tmp/new && cp -r .deps /tmp/new/
  (cd /tmp/new && patch -s -p1 <"$root/bench-results/ab/change.patch")
  (cd /tmp/new && scripts/build_gpu.sh build/gpu node_agent orchestrator kvferry-make-model > /tmp/build9.log 2>&1; tail -n 2 /tmp/build9.log)
fi
mkdir -p /tmp/e2e9 && rm -rf /tmp/e2e9/*
timeout ${INNER:-200} bash scripts/gpu_e2e.sh test $build /tmp/e2e9/model/model.gguf /tmp/e2e9
echo "gpu_e2e exit $?"
mkdir -p $OUT/e2e && cp /tmp/e2e9/*.log /tmp/e2e9/*.tokens $OUT/e2e/ 2>/dev/null
grep -h "request cmpl" /tmp/e2e9/*orchestrator.log | sed 's/.*: nodes/nodes/' | head -30
grep -h "corrupt\|checksum" /tmp/e2e9/*.log | head -10
