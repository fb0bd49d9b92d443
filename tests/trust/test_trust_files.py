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


def test_env_rejects_what_it_used_to_coerce():
    """Complex actions and fractional vocabulary indices are invalid (zero reward, flagged), not cast; a fractional
    or boolean scene_index and an impossible num_scenes raise naming the argument (issue trust, item 10)."""
    import gymnasium as gym
    import numpy as np

    import irlvla_gym  # noqa: F401
    from irlvla_gym.plans.codec import TrajectoryAction, VocabularyAction

    assert TrajectoryAction().decode(np.zeros(24) + 0.1j).invalid
    assert not TrajectoryAction().decode(np.zeros(24)).invalid
    vocab = VocabularyAction(np.zeros((4, 8, 3)))
    assert vocab.decode(1.7).invalid and vocab.decode(np.array(1 + 2j)).invalid
    assert not vocab.decode(np.float32(2.0)).invalid and not vocab.decode(np.int64(3)).invalid

    env = gym.make("IRLVLA-Navsim-v2", num_scenes=4).unwrapped  # (the passive checker wraps only the first reset)
    with pytest.raises(TypeError, match=r"options\['scene_index'\] must be an int, got 1.5"):
        env.reset(options={"scene_index": 1.5})
    with pytest.raises(TypeError, match="scene_index"):
        env.reset(options={"scene_index": True})
    env.reset(options={"scene_index": np.int64(2)})
    _, reward, _, _, info = env.step(np.zeros(24) + 0.5j)
    assert reward == 0.0 and info["invalid_action"]
    with pytest.raises(ValueError, match=r"num_scenes=6000: expected an integer from 1 to 5000"):
        gym.make("IRLVLA-Navsim-v2", num_scenes=6000).reset(seed=0)
