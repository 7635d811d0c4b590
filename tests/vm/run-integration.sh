#!/bin/bash
# run-integration.sh: run the integration suite (tests/integration) inside one VM boot.
#   tests/vm/run-integration.sh [PYTEST ARGS...]
# Fails when pytest fails, when no test ran, or when a test was skipped for want of an IPVS
# kernel: CI must never pass on a suite that silently did not run.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
mkdir -p .lab
REPORTS=$(mktemp -d "$REPO/.lab/integration.XXXXXX")
trap 'rm -rf "$REPORTS"' EXIT
PYTEST=("$PYTHON" -m pytest -p no:cacheprovider -p no:hypothesispytest --durations=25)

# One pytest process by default. TEST_WORKERS=2 runs the whole suite (no test path among the
# arguments) in two phases in one boot: every module but the timed ones on two pytest-xdist
# workers, each module whole on one worker (the scheduler in conftest.py), then the modules
# whose assertions are time bounds one at a time. Not the default: in two of three quiet
# clean-clone runs, tests of the parallel phase missed their bounds (lvsd not ready in 90 s,
# the 10k table not back in 120 s) with both workers busy in the emulated guest.
TIMED=(tests/integration/test_announce_kernel.py tests/integration/test_pair_failover.py
       tests/integration/test_pair_fleet.py tests/integration/test_daemon_kernel.py)
WORKERS=${TEST_WORKERS:-0}
explicit=0
for arg in "$@"; do [[ $arg == tests/* ]] && explicit=1; done
GUEST=$REPORTS/guest.sh
{
    echo 'rc=0'
    if (( explicit )); then
        printf '%q ' "${PYTEST[@]}" --junitxml="$REPORTS/1.xml" "$@"; echo '|| rc=$?'
    elif (( WORKERS > 0 )); then
        printf '%q ' "${PYTEST[@]}" --junitxml="$REPORTS/1.xml" -n "$WORKERS" "$@" \
            $(printf -- '--ignore=%s ' "${TIMED[@]}") tests/integration; echo '|| rc=$?'
        printf '%q ' "${PYTEST[@]}" --junitxml="$REPORTS/2.xml" "$@" "${TIMED[@]}"
        echo '|| rc=$?'
    else
        printf '%q ' "${PYTEST[@]}" --junitxml="$REPORTS/1.xml" "$@" tests/integration
        echo '|| rc=$?'
    fi
    echo 'exit $rc'
} > "$GUEST"

set +e
VM_MEM=${VM_MEM:-3G} VM_TIMEOUT=${VM_TIMEOUT:-3600} "$REPO/tests/vm/run-in-vm.sh" bash "$GUEST"
RC=$?
set -e

"$PYTHON" - "$REPORTS" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

cases = []
for report in sorted(Path(sys.argv[1]).glob("*.xml")):
    try:
        cases += ET.parse(report).getroot().findall(".//testcase")
    except (OSError, ET.ParseError) as exc:
        sys.exit(f"run-integration: no test report from the VM ({report.name}: {exc})")
unrun = [c for c in cases
         if any("needs a kernel with IPVS" in (s.get("message") or "")
                for s in c.findall("skipped"))]
if not cases:
    sys.exit("run-integration: no integration test ran")
if unrun:
    sys.exit(f"run-integration: {len(unrun)} test(s) skipped for want of an IPVS kernel")
print(f"run-integration: {len(cases)} integration tests ran in the VM")
# Where the time went, per module (test time only; module-scoped set-up counts in its first
# test): the suite has a time budget, and --durations shows only the slowest tests.
modules: dict[str, list[float]] = {}
for case in cases:
    parts = (case.get("classname") or "?").split(".")
    module = next((part for part in parts if part.startswith("test_")), parts[-1])
    modules.setdefault(module, []).append(float(case.get("time") or 0))
for module, times in sorted(modules.items(), key=lambda item: -sum(item[1])):
    print(f"run-integration: {sum(times):7.1f} s  {len(times):3d} tests  {module}")
PYEOF
exit "$RC"
