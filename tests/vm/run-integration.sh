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
REPORT=$(mktemp "$REPO/.lab/integration.XXXXXX.xml")
trap 'rm -f "$REPORT"' EXIT

# Without a test path among the arguments, run the whole suite.
TARGET=(tests/integration)
for arg in "$@"; do [[ $arg == tests/* ]] && TARGET=(); done

set +e
VM_TIMEOUT=${VM_TIMEOUT:-3600} "$REPO/tests/vm/run-in-vm.sh" \
    "$PYTHON" -m pytest -p no:cacheprovider -p no:hypothesispytest --durations=25 --junitxml="$REPORT" \
    "$@" "${TARGET[@]}"
RC=$?
set -e

"$PYTHON" - "$REPORT" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as exc:
    sys.exit(f"run-integration: no test report from the VM ({exc})")
cases = root.findall(".//testcase")
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
