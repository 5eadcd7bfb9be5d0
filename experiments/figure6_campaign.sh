#!/usr/bin/env bash
# Issue 31's CPU campaign: Figure 6's nets trained to the end of the §4.2 recipe, one net at a
# time, each in its own run dir that resumes. Run it detached from a worktree of main that your
# edits never touch, with a deadline about 20 minutes before your session ends:
#
#   git worktree add --detach /work/campaign main          # once; `git checkout --detach main` there between sittings
#   UNTIL=$(date -d '14:10' +%s) PYTHON=/work/main/.venv/bin/python setsid nohup \
#       /work/campaign/experiments/figure6_campaign.sh > ~/runs/campaign.out 2>&1 < /dev/null &
#
# A step that is stopped (SIGTERM: `kill -TERM <pid>` to pause for a full test run) or paused by
# the deadline ends the script; running it again resumes that step exactly. A finished net goes
# on to the next.
# Run dirs: ~/runs/<exp>-seed0 (RUNS=...), console lines in ~/runs/<exp>-seed0.log.
set -u
cd "$(dirname "$0")/.."
: "${UNTIL:?set UNTIL to the unix time at which the runs pause}"
: "${RUNS:=$HOME/runs}" "${PYTHON:=python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this worktree's code, whatever is installed
mkdir -p "$RUNS"
DATA=(data=cifar10_folder data.root=../shared/data/cifar10-jpeg.tar.gz trainer.progress=false)

# A net is done when its run dir here says so, or when its committed record does: a new machine
# starts with an empty ~/runs, and a finished net is not trained again.
complete() {
  grep -qs '"status": "complete"' "$RUNS/$1-seed0/summary.json" \
    || grep -qs '"status": "complete"' "experiments/results/cifar10-jpeg/$1-seed0/summary.json"
}

step() {  # exp: train it to the end (or the deadline); 0 once complete
  local exp=$1 dir=$RUNS/$1-seed0
  if complete "$exp"; then return 0; fi
  echo "=== $(date -u +%H:%M:%S) $exp" >> "$RUNS/campaign.log"
  "$PYTHON" -m resnet_repro train "+exp=$exp" "${DATA[@]}" trainer.amp=auto "hydra.run.dir=$dir" \
      "trainer.max_time=\${until:$UNTIL}" >> "$dir.log" 2>&1
  local rc=$?
  echo "=== $(date -u +%H:%M:%S) $exp rc=$rc" >> "$RUNS/campaign.log"
  return $rc
}

# The order of issue 31: plain-20, ResNet-56, plain-56; then as time allows.
for exp in cifar_plain20 cifar_resnet56 cifar_plain56 cifar_resnet32 cifar_resnet44 cifar_plain32 cifar_plain44 \
           cifar_resnet110; do
  step "$exp" || exit
  complete "$exp" || exit 0  # paused: the next sitting goes on
done
