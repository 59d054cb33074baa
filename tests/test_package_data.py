"""The wheel carries the whole page: every file under web/static/, key maps
included, matches one of pyproject's package-data globs (matched the way
setuptools matches them, relative to the package), so an installed
`playcast` serves the same page as a checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "playcast"
STATIC = PACKAGE / "web" / "static"


def package_data_globs() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs: list[str] = config["tool"]["setuptools"]["package-data"]["playcast"]
    return globs


def shipped() -> set[Path]:
    return {p for g in package_data_globs() for p in PACKAGE.glob(g) if p.is_file()}


def test_every_static_file_is_package_data() -> None:
    on_disk = {p for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    missing = sorted(str(p.relative_to(PACKAGE)) for p in on_disk - shipped())
    assert not missing, f"not in the wheel (pyproject [tool.setuptools.package-data]): {missing}"


def test_the_key_maps_are_among_them() -> None:
    maps = {p.name for p in shipped() if p.parent.name == "keymaps"}
    assert "com.supercell.clashroyale.json" in maps
