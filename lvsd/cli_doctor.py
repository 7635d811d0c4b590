"""``lvsd doctor [-c CONFIG] [--json]``: what on this director would make IPVS misbehave.

Exit codes: the worst finding's severity — 0 none or notes only, 1 a warning, 2 an error;
2 also for a config that does not load (its problems printed, nothing checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from lvsd.errors import ConfigError

EXIT_BAD_INPUT = 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("doctor", help="check this director's kernel, sysctls, addresses "
                                           "and firewall against the config; each finding "
                                           "with its fix")
    parser.add_argument("-c", "--config", type=Path, default=Path("/etc/lvsd/lvsd.toml"))
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: worst severity and findings as "
                             "{check, severity, subject, message, fix}")


def run(args: argparse.Namespace) -> int:
    from lvsd.config import load
    from lvsd.doctor.gather import gather
    from lvsd.doctor.registry import CHECKS, diagnose, worst

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    findings = diagnose(asyncio.run(gather(config)))
    severity = worst(findings)
    if args.json:
        print(json.dumps({"config": config.source, "checks": list(CHECKS),
                          "worst": severity.word if findings else None,
                          "findings": [finding.as_json() for finding in findings]}, indent=2))
        return int(severity)
    for finding in findings:
        print(finding)
    counts = {word: sum(1 for f in findings if f.severity.word == word)
              for word in ("error", "warning", "note")}
    summary = ", ".join(f"{count} {word}(s)" for word, count in counts.items() if count)
    print(f"{config.source}: {summary or 'no findings'}")
    return int(severity)
