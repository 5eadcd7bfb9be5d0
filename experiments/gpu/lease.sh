#!/usr/bin/env bash
# The GPU lease (issue 22): bench, then the whole CIFAR study (+exp=cifar_paper_runs) detached.
# Run from the repository root. The logic lives in experiments/gpu/lease/; this script only
# sets up the environment and calls it. Procedure and the exact `run` tool commands:
# experiments/gpu/README.md.
#
#   experiments/gpu/lease.sh prepare   # on the CPU machine: copy wheels and data into .gpu/
#   experiments/gpu/lease.sh start     # GPU: install, decode the data, bench (<= LEASE_BENCH_S), start the sweep, return
#   experiments/gpu/lease.sh poll      # GPU: each run's iteration and images/s
#   experiments/gpu/lease.sh collect   # GPU: one tarball of every record into $OUT
#
# Settings (environment; defaults are the real lease; the CPU rehearsal in tests/test_lease.py
# shrinks them):
#   LEASE_PYTHON=python3        the interpreter (with torch)
#   LEASE_GPU_DIR=.gpu          the ignored folder that travels: the hydra-core/omegaconf/antlr4
#                               wheels and the data (prepare copies them from LEASE_SHARED=../shared)
#   LEASE_INSTALL=1             0: do not install them (the interpreter has Hydra already)
#   LEASE_SITE=/tmp/site        where they are installed (put first on PYTHONPATH)
#   LEASE_DIR=/tmp/lease        bench JSONs and logs, plan.json, sweep logs, environment records
#   LEASE_RUNS=/tmp/runs        the sweep dir is $LEASE_RUNS/cifar_paper_runs
#   LEASE_DATA="data=cifar10_folder data.root=$LEASE_GPU_DIR/cifar10-jpeg.tar.gz" (absolute)
#   LEASE_ARGS="logger=none trainer.progress=false"   overrides for the benches and the sweep
#   LEASE_SWEEP_ARGS=           overrides for the sweep only (the rehearsal: trainer.max_iters=2)
#   LEASE_BENCH_ARGS=           overrides for the benches only
#   LEASE_EXPS= LEASE_SEEDS=    a subset of the sweep's networks / seeds (comma-separated)
#   LEASE_BENCH_S=90            the whole bench, at most (a bench still running then is killed)
#   LEASE_BENCH_ITERS=30 LEASE_BENCH_WARMUP=5
#   LEASE_BENCH_MODES=default,reduce-overhead   trainer.compile modes to compare
#   LEASE_BENCH_EXPS=cifar_resnet20,cifar_resnet110
#   LEASE_BENCH_CONCURRENT=4,2  bench.concurrent levels tried (empty: 1 process)
#   LEASE_BUDGET_S=             device seconds left when start begins (the tool's `status`);
#                               unset: no trainer.max_time
#   LEASE_MARGIN_S=150          runs pause this long before the budget ends
#   LEASE_START_LOOK_S=20       start: seconds to wait before its one poll
#   LEASE_COMMIT=               the git commit of the checkout (the copy on the GPU has no .git)
set -euo pipefail

verb="${1:-}"
cd "$(dirname "$0")/../.."
root="$PWD"
: "${LEASE_PYTHON:=python3}" "${LEASE_GPU_DIR:=.gpu}" "${LEASE_SHARED:=../shared}" "${LEASE_INSTALL:=1}"
: "${LEASE_SITE:=/tmp/site}"
: "${LEASE_DIR:=/tmp/lease}" "${LEASE_RUNS:=/tmp/runs}"
: "${LEASE_DATA:=data=cifar10_folder data.root=$(realpath -m "$LEASE_GPU_DIR")/cifar10-jpeg.tar.gz}"
export LEASE_PYTHON LEASE_DIR LEASE_RUNS LEASE_DATA
export PYTHONPATH="$LEASE_SITE:$root:$root/experiments/gpu" PYTHONUNBUFFERED=1

plan() { "$LEASE_PYTHON" -m lease "$@"; }

case "$verb" in
  prepare)
    case "$(realpath -m "$LEASE_GPU_DIR")/" in  # inside the checkout it must be ignored (it travels by `carry`)
      "$root"/*) git check-ignore -q "$LEASE_GPU_DIR/" \
                   || { echo "error: $LEASE_GPU_DIR/ is not ignored by git" >&2; exit 2; } ;;
    esac
    mkdir -p "$LEASE_GPU_DIR"
    cp "$LEASE_SHARED"/wheels/*.whl "$LEASE_SHARED"/data/cifar10-jpeg.tar.gz "$LEASE_GPU_DIR"/
    ls -l "$LEASE_GPU_DIR"
    ;;
  start)
    since=$(date +%s)
    mkdir -p "$LEASE_DIR"
    if [ "$LEASE_INSTALL" = 1 ]; then
      compgen -G "$LEASE_GPU_DIR/*.whl" > /dev/null \
        || { echo "error: no wheels in $LEASE_GPU_DIR (run \`experiments/gpu/lease.sh prepare\` on the CPU machine)" >&2; exit 2; }
      "$LEASE_PYTHON" -m pip install -q --no-index --no-deps --target "$LEASE_SITE" "$LEASE_GPU_DIR"/*.whl
    fi
    plan env
    plan data
    plan bench
    plan launch --since "$since"
    sleep "${LEASE_START_LOOK_S:-20}"
    plan poll
    ;;
  poll)
    plan poll
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    fi
    ;;
  collect)
    [ -n "${OUT:-}" ] || { echo "error: collect writes into \$OUT, which is not set" >&2; exit 2; }
    plan collect --out "$OUT"
    ;;
  *)
    echo "usage: experiments/gpu/lease.sh prepare|start|poll|collect (got '${verb}')" >&2
    exit 2
    ;;
esac
