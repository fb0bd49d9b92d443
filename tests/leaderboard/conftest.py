"""Fixtures of the leaderboard tests: the demo plug-in made discoverable without installing it."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugin_pkg"


def write_dist_info(site: Path, pyproject: Path) -> Path:
    """A ``<name>-<version>.dist-info`` directory (METADATA + entry_points.txt from the pyproject's
    ``[project.entry-points]``) in ``site``: exactly what ``importlib.metadata`` reads for an installed package."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    return info


@pytest.fixture
def demo_plugin(tmp_path, monkeypatch):
    """The demo plug-in on sys.path with its entry points registered (removed after the test)."""
    site = tmp_path / "site"
    write_dist_info(site, PLUGIN_DIR / "pyproject.toml")
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("irlvla_demo_plugin", None)


@pytest.fixture(scope="session")
def test_scenes():
    """The first 3 synthetic-test scenes."""
    from irlvla_gym.scenes.synthetic import iter_scenes

    return list(iter_scenes("synthetic-test", num=3))
