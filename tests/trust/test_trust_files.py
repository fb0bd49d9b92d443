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
