"""Native vector envs (vector_entry_point) vs gymnasium's SyncVectorEnv over single envs: same observations, rewards,
terminations, truncations and infos (autoreset included), for both ids and every autoreset mode."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import small_kwargs

ENV_IDS = ["IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"]
MODES = [gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP]


def assert_infos_equal(a, b, path: str = "infos") -> None:
    """Recursive equality of vector-env infos (arrays, masks, object arrays of str / dicts)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            assert_infos_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert b.dtype == object and a.shape == b.shape, path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_infos_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _pair(env_id, scenes, n, mode, **extra):
    kwargs = small_kwargs(scenes, **extra)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs)
    sync = gym.vector.SyncVectorEnv([functools.partial(gym.make, env_id, **kwargs) for _ in range(n)],
                                    autoreset_mode=mode)
    return native, sync


def _compare(native, sync, steps: int, seed: int, rng: np.random.Generator, bad_actions: bool = True):
    o1, i1 = native.reset(seed=seed)
    o2, i2 = sync.reset(seed=seed)
    assert_infos_equal(o1, o2, "obs")
    assert_infos_equal(i1, i2)
    n = native.num_envs
    for step in range(steps):
        actions = rng.uniform(-1, 1, (n, 24)).astype(np.float32)
        if bad_actions and step % 3 == 1:
            actions[0, 3] = np.nan  # invalid: zero-scored, never raises
            actions[-1] *= 3.0  # clipped
        r1, r2 = native.step(actions), sync.step(actions)
        assert_infos_equal(r1[0], r2[0], f"obs step {step}")
        np.testing.assert_array_equal(r1[1], r2[1], err_msg=f"rewards step {step}")
        np.testing.assert_array_equal(r1[2], r2[2])
        np.testing.assert_array_equal(r1[3], r2[3])
        assert_infos_equal(r1[4], r2[4], f"infos step {step}")


# Per id: envs, steps, seed. Closed loop: 20 steps of random actions cross several episode ends.
RUNS = {"IRLVLA-Navsim-v2": (4, 5, 3), "IRLVLA-Navsim-ClosedLoop-v2": (3, 20, 11)}


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_native_equals_sync(synthetic, env_id, mode):
    """The N-row core with autoreset = N one-row cores under SyncVectorEnv, bit for bit."""
    n, steps, seed = RUNS[env_id]
    native, sync = _pair(env_id, synthetic, n, mode)
    assert native.metadata["autoreset_mode"] == mode
    _compare(native, sync, steps, seed=seed, rng=np.random.default_rng(seed))
    native.close()
    sync.close()


def test_closed_loop_idm_and_plan_once_vocabulary(synthetic):
    native, sync = _pair("IRLVLA-Navsim-ClosedLoop-v2", synthetic, 2, MODES[0], traffic="idm")
    _compare(native, sync, 6, seed=2, rng=np.random.default_rng(2))
    kwargs = small_kwargs(synthetic, action_type="vocabulary", obs_keys=("ego", "instruction"))
    native = gym.make_vec("IRLVLA-Navsim-v2", num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.vector.SyncVectorEnv([functools.partial(gym.make, "IRLVLA-Navsim-v2", **kwargs) for _ in range(3)],
                                    autoreset_mode=MODES[0])
    native.reset(seed=0)
    sync.reset(seed=0)
    for actions in ([0, 5, 300], [7, -1, 2]):  # 300 and -1 are invalid indices
        r1, r2 = native.step(np.array(actions)), sync.step(np.array(actions))
        np.testing.assert_array_equal(r1[1], r2[1])
        assert_infos_equal(r1[4], r2[4])


def test_custom_reward_and_reset_mask(synthetic):
    def reward(scene, plan):
        return float(plan[-1, 0]) / 100.0

    native, sync = _pair("IRLVLA-Navsim-v2", synthetic, 3, gym.vector.AutoresetMode.DISABLED, reward=reward)
    _compare(native, sync, 1, seed=4, rng=np.random.default_rng(3), bad_actions=False)
    with pytest.raises(RuntimeError):
        native.step(native.action_space.sample())
    mask = np.array([True, False, True])
    o1, i1 = native.reset(seed=9, options={"reset_mask": mask})
    o2, i2 = sync.reset(seed=9, options={"reset_mask": mask.copy()})
    assert_infos_equal(i1, i2)
    native.close()
    sync.close()


def test_batched_reward_seam(synthetic):
    """A reward with ``score_batch(scenes, plans)`` is called once per step for all valid rows."""
    calls = []

    def reward(scene, plan):
        raise AssertionError("the batched method is used")

    def score_batch(scenes, plans):
        calls.append(len(scenes))
        return plans[:, -1, 0] / 100.0

    reward.score_batch = score_batch
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=3, vectorization_mode="vector_entry_point",
                        **small_kwargs(synthetic, reward=reward))
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 24)).astype(np.float32)
    actions[1, 0] = np.nan
    _, rewards, *_, infos = envs.step(actions)
    plans = infos["final_info"]["plan"]
    assert calls == [2] and rewards[1] == 0.0
    np.testing.assert_array_equal(rewards[[0, 2]], plans[[0, 2], -1, 0] / 100.0)
    envs.close()


def test_make_vec_returns_native_envs(synthetic):
    from irlvla_gym.envs.vector import NavsimClosedLoopVectorEnv, NavsimVectorEnv

    for env_id, cls in zip(ENV_IDS, (NavsimVectorEnv, NavsimClosedLoopVectorEnv)):
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **small_kwargs(synthetic))
        assert isinstance(envs, cls)
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        obs, _ = envs.reset(seed=0)
        assert envs.observation_space.contains(obs)
        envs.close()
