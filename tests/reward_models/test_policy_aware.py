"""The shipped ``policy_aware`` checkpoint loads by name and scores; shipped-name resolution of checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_models import CheckpointError, SceneRewardFn, load_model
from reward_models.checkpoint import SHIPPED_DIR, resolve_checkpoint, shipped_checkpoints

POLICY_AWARE = SHIPPED_DIR / "policy_aware"
needs_ckpt = pytest.mark.skipif(not (POLICY_AWARE / "model.safetensors").exists(), reason="no policy_aware checkpoint")


def test_resolve_names_and_paths(tmp_path):
    assert resolve_checkpoint(None) == SHIPPED_DIR / "default"
    assert resolve_checkpoint("default") == SHIPPED_DIR / "default"
    assert resolve_checkpoint(tmp_path) == tmp_path  # an existing directory is taken as given
    with pytest.raises(CheckpointError, match="shipped: .*default"):
        resolve_checkpoint("no_such_checkpoint")
    with pytest.raises(CheckpointError):
        resolve_checkpoint(tmp_path / "missing")  # a path is never looked up among the shipped names
    assert "default" in shipped_checkpoints()


@needs_ckpt
def test_policy_aware_loads_and_scores():
    from irlvla_gym.scenes.synthetic import generate_scene

    assert "policy_aware" in shipped_checkpoints()
    model = load_model("policy_aware")
    info = model.checkpoint_info
    assert info["format"] == "irlvla-rwm" and info["dataset"]["policy"] == "bc_default"
    assert load_model(POLICY_AWARE) is model  # cached per resolved path
    assert load_model(None) is not model
    from reward_models import RewardWorldModel

    direct = RewardWorldModel.from_pretrained("policy_aware")  # the checkpoint module resolves names too
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), model.state_dict().values()))

    scene = generate_scene(0)
    fn = SceneRewardFn("policy_aware")
    rng = np.random.default_rng(0)
    plans = np.stack([scene.ego.future, scene.ego.future + rng.normal(0, 2.0, scene.ego.future.shape)])
    r = fn.score(scene, plans)
    assert r.shape == (2,) and np.all(np.isfinite(r)) and np.all((r >= 0) & (r <= 1))
    assert r[0] > 0.5  # the logged expert plan is rated as a good plan


@needs_ckpt
def test_env_reward_by_shipped_name():
    import gymnasium as gym

    import irlvla_gym  # noqa: F401  (registers the envs)

    env = gym.make("IRLVLA-Navsim-v2", num_scenes=2, obs_keys=("ego",), reward="rwm:policy_aware")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.unwrapped.expert_action())
    assert terminated and 0.0 <= reward <= 1.0 and info["rewards"] == {"custom": reward}
    env.close()
