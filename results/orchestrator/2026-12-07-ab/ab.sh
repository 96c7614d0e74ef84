#!/usr/bin/env bash
# Two builds' orchestrator and fake_agent, interleaved round by round, with one client:
#   BASE=dir NEW=dir RATES="200 3000" ROUNDS=8 results/orchestrator/2026-12-07-ab/ab.sh
# (dir: a build tree with orchestrator/orchestrator and bench/fake_agent/fake_agent).
set -u
here=$(dirname "$0")
for r in $(seq "${ROUNDS:-3}"); do
  for v in base new; do
    dir=${BASE:?}; [ $v = new ] && dir=${NEW:?}
    for rate in ${RATES:-200 3000}; do
      n=$(( rate <= 200 ? 1000 : 9000 ))
      echo "round $r $v rate $rate: $(ORCH=$dir/orchestrator/orchestrator \
        FAKE=$dir/bench/fake_agent/fake_agent RATE=$rate N=$n bash "$here/measure.sh")"
    done
  done
done
