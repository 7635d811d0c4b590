"""The committed man pages and completion files are the generator's output, and render."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lvsd import manpages
from lvsd.checks import CHECKS
from lvsd.cli import build_parser
from lvsd.config import ServiceSchema

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(manpages.generated()))
def test_the_committed_file_is_what_the_generator_writes(relative: str) -> None:
    committed = (REPO / relative).read_text(encoding="utf-8")
    assert committed == manpages.generated()[relative], (
        f"{relative} is stale: run .venv/bin/python -m lvsd.manpages .")


def test_lvsd_8_has_every_command_and_option_of_the_cli() -> None:
    page = manpages.lvsd_8()
    for name, _, sub in manpages._subcommands(build_parser()):
        assert f".SS {manpages._escape(name)}\n" in page
        for action in manpages._options(sub):
            for option in action.option_strings:
                assert manpages._escape(option) in page


def test_lvsd_toml_5_has_every_key_of_the_schema_and_every_check_type() -> None:
    page = manpages.lvsd_toml_5()
    for key in ServiceSchema.model_fields:
        assert f".B {manpages._escape(key)}\n" in page
    for name in CHECKS:
        assert f'check type = "{name}"' in page


@pytest.mark.parametrize("page", ["lvsd.8", "lvsd.toml.5"])
def test_the_pages_render_with_groff_without_a_warning(page: str) -> None:
    groff = shutil.which("groff")
    assert groff, "groff is missing: tests/bootstrap.sh installs man-db (groff-base)"
    result = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(REPO / "man" / page)],
                            capture_output=True, text=True, check=True, timeout=60)
    assert result.stderr == ""
    text = subprocess.run(["man", "-l", str(REPO / "man" / page)], capture_output=True,
                          text=True, check=True, timeout=60,
                          env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin"}).stdout
    assert "lvsd" in text and "NAME" in text


def test_bash_completion_completes_subcommands_and_their_options() -> None:
    script = REPO / "completion" / "lvsd.bash"

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        out = subprocess.run(
            ["bash", "-c", f'source "{script}"; COMP_WORDS=({line}); '
                           f"COMP_CWORD={len(words) - 1}; _lvsd; "
                           'printf "%s\\n" "${COMPREPLY[@]}"'],
            capture_output=True, text=True, check=True, timeout=30).stdout
        return out.split()

    assert complete("lvsd", "im") == ["import"]
    assert {"ipvsadm-save", "keepalived"} <= set(complete("lvsd", "import", ""))
    assert "--config-id" in complete("lvsd", "import", "keepalived", "--")
    assert complete("lvsd", "check-config", "--j") == ["--json"]
