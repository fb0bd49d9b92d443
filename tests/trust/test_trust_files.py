"""Item 5 of the trust issue: files written by atomic_write get the umask's mode, not 0600."""

from __future__ import annotations

import os
import stat

import pytest

from irlvla_gym.utils import atomic_write, current_umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        with atomic_write(tmp_path / "f.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "f.txt").read_text() == "x"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "f.txt", "w") as fh:
            fh.write("half")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_truncated_json_files_name_the_file(tmp_path):
    """Truncated stages/*.json, preset.json, a VLA config.json or a run's config.json: ValueError naming the file and
    the position, not a bare JSONDecodeError (issue trust, item 10)."""
    from baselines.common import read_json as baselines_read_json
    from irlvla_gym.policies.config import VLAConfig
    from irlvla_gym.utils import read_json

    bad = tmp_path / "preset.json"
    bad.write_text('{"preset": "quick", "seed"')
    with pytest.raises(ValueError, match=r"preset\.json: not valid JSON .* line 1, column \d+"):
        read_json(bad)
    with pytest.raises(ValueError, match=r"preset\.json: not valid JSON"):
        baselines_read_json(bad)
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "config.json").write_text('{"hidden": 3')
    with pytest.raises(ValueError, match=r"net/config\.json: not valid JSON"):
        VLAConfig.load(tmp_path / "net")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_json(tmp_path / "nothing.json")
