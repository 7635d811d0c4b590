#!/bin/bash
# The whole test suite: lint and types, unit tests and the benchmarks' smoke on this machine,
# then the real-kernel integration tests inside a throw-away VM booting a kernel with IPVS
# (one boot).
# Exit status is non-zero if anything failed or if the integration tests did not run.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
bash tests/bootstrap.sh || exit 1
echo "=== bootstrap: $SECONDS s"
failed=()
# Each step says how long it took: the whole suite has a time budget (30 min on CI).
step() {
    local name=$1 began=$SECONDS; shift
    echo; echo "=== $name"
    "$@" || failed+=("$name")
    echo "=== $name: $((SECONDS - began)) s"
}
step "ruff" .venv/bin/ruff check lvsd tests bench
step "mypy --strict" .venv/bin/mypy lvsd
step "unit tests (host)" .venv/bin/pytest -q -p no:cacheprovider -n 2 tests/unit
# The benchmarks' host parts at tiny sizes, so their code cannot rot (the VM parts run as
# tests/integration/test_bench_smoke.py in the integration step's boot). Figures not judged.
step "benchmark smoke (host parts)" .venv/bin/python bench/report.py --smoke \
    --only probes metrics daemon start
step "integration tests (real IPVS kernel in a VM)" bash tests/vm/run-integration.sh
echo
if (( ${#failed[@]} )); then
    echo "FAILED: ${failed[*]} (after $SECONDS s)"
    exit 1
fi
echo "all test steps passed in $SECONDS s"
