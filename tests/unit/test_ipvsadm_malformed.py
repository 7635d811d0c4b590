"""Malformed restore files, by category: each is one SaveFormatError naming the right line and
what is wrong, never another exception; ``lvsd restore --dry-run`` exits 2 without a traceback
and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.cli import EXIT_BAD_INPUT, main
from lvsd.errors import SaveFormatError
from lvsd.ipvsadm.resolve import NumericResolver
from lvsd.ipvsadm.restore import parse
from tests.unit.ipvsadm_samples import MALFORMED as CASES


@pytest.mark.parametrize(("data", "line_no", "message"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_malformed_file_is_one_error_naming_its_line(data: str | bytes, line_no: int,
                                                       message: str) -> None:
    with pytest.raises(SaveFormatError) as caught:
        parse(data, "/etc/lvsd/rules", resolver=NumericResolver())
    error = caught.value
    assert (error.line_no, message in error.reason) == (line_no, True), error.reason
    assert str(error).startswith(f"/etc/lvsd/rules:{line_no}: {error.reason}: ")
    assert len(str(error)) < 600  # a huge line is quoted cut short


def test_there_are_at_least_fifty_categories_of_malformed_files() -> None:
    assert len({case[0] for case in CASES}) == len(CASES) >= 50


@pytest.mark.parametrize(("data", "line_no"), [case[1:3] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_restore_dry_run_of_a_malformed_file_exits_2_with_one_line(
        data: str | bytes, line_no: int, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.write_bytes(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
    assert main(["restore", "--dry-run", str(rules)]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"lvsd: {rules}:{line_no}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
