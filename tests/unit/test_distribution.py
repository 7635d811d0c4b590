"""What the sdist and the wheel carry, and where the version and licence come from."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

import lvsd

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_the_version_has_one_source_read_by_pyproject() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "lvsd.__version__"}
    assert lvsd.__version__.count(".") == 2
    assert f"## {lvsd.__version__}" in (REPO / "CHANGELOG.md").read_text()


def test_the_licence_is_spdx_and_its_text_is_shipped() -> None:
    assert PYPROJECT["project"]["license"] == "GPL-2.0-or-later"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text


def test_the_wheel_data_files_exist_and_cover_what_operators_install() -> None:
    shipped = [path for patterns in SETUPTOOLS["data-files"].values() for pattern in patterns
               for path in glob.glob(str(REPO / pattern))]
    names = {Path(p).relative_to(REPO).as_posix() for p in shipped}
    for needed in ("systemd/lvsd.service", "systemd/modules-load.d/lvsd.conf",
                   "config/lvsd.toml", "config/prometheus/lvsd-alerts.yml",
                   "config/grafana/lvsd-dashboard.json", "man/lvsd.8", "man/lvsd.toml.5",
                   "completion/lvsd.bash", "completion/_lvsd"):
        assert needed in names
    assert {p.name for p in (REPO / "config" / "examples").glob("*.toml")} <= {
        Path(n).name for n in names}


def test_the_sdist_manifest_takes_every_data_file() -> None:
    manifest = (REPO / "MANIFEST.in").read_text().split()
    for patterns in SETUPTOOLS["data-files"].values():
        for pattern in patterns:
            assert pattern.split("/")[0] in manifest, pattern
    assert {"LICENSE", "CHANGELOG.md"} <= set(manifest)
