"""Gymnasium's vector wrappers on the native vector envs, with the documented settings (irlvla_gym.envs.vector docs):
``autoreset_mode=NEXT_STEP`` as a plain ``gym.make_vec`` keyword, float observation entries only. Each wrapped native
env equals the same wrapper over ``SyncVectorEnv`` of single envs with the same seeds (observations, rewards,
terminations, truncations, episode statistics), and the NEXT_STEP reset step is checked explicitly."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import small_kwargs
from irlvla_gym.envs.vector import autoreset_mode_of

NEXT = gym.vector.AutoresetMode.NEXT_STEP
SAME = gym.vector.AutoresetMode.SAME_STEP
W = gym.wrappers.vector


def _flat_normalized(envs):
    return W.NormalizeObservation(W.FlattenObservation(envs))


WRAPPERS = {
    "FlattenObservation": W.FlattenObservation,
    "NormalizeObservation": _flat_normalized,
    "NormalizeReward": W.NormalizeReward,
    "RecordEpisodeStatistics": W.RecordEpisodeStatistics,
}


def _pair(env_id, scenes, n, mode, wrap, **extra):
    kwargs = small_kwargs(scenes, **extra)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs)
    sync = gym.vector.SyncVectorEnv([functools.partial(gym.make, env_id, **kwargs) for _ in range(n)],
                                    autoreset_mode=mode)
    return wrap(native), wrap(sync)


def _assert_obs_equal(a, b, msg):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), msg
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{msg} {k}")
    else:
        np.testing.assert_array_equal(a, b, err_msg=msg)


def _run(native, sync, steps, seed):
    """Step both with the same actions; compare; return the (terminated | truncated) history and rewards."""
    o1, _ = native.reset(seed=seed)
    o2, _ = sync.reset(seed=seed)
    _assert_obs_equal(o1, o2, "reset")
    rng = np.random.default_rng(seed)
    history = []
    for step in range(steps):
        actions = rng.uniform(-0.3, 0.3, (native.num_envs, 24)).astype(np.float32)
        r1, r2 = native.step(actions), sync.step(actions)
        _assert_obs_equal(r1[0], r2[0], f"obs step {step}")
        for j, name in ((1, "rewards"), (2, "terminated"), (3, "truncated")):
            np.testing.assert_array_equal(r1[j], r2[j], err_msg=f"{name} step {step}")
        if "episode" in r1[4] or "episode" in r2[4]:
            for key in ("r", "l"):
                np.testing.assert_array_equal(r1[4]["episode"][key], r2[4]["episode"][key], err_msg=f"episode {key}")
            np.testing.assert_array_equal(r1[4]["_episode"], r2[4]["_episode"])
        history.append((r1[0], r1[1], r1[2] | r1[3], r1[4]))
    return history


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_wrappers_on_next_step_equal_sync(synthetic, name):
    """Plan-once env (every step ends an episode: NEXT_STEP alternates steps and resets), ego observations."""
    native, sync = _pair("IRLVLA-Navsim-v2", synthetic, 3, NEXT, WRAPPERS[name], obs_keys=("ego",))
    history = _run(native, sync, steps=4, seed=5)
    dones = np.array([d for _, _, d, _ in history])
    np.testing.assert_array_equal(dones, [[True] * 3, [False] * 3] * 2)  # step, reset, step, reset
    if name != "NormalizeReward":  # NormalizeReward scales rewards; 0 stays 0 either way
        assert np.all(history[1][1] == 0.0) and np.all(history[3][1] == 0.0)
    if name == "RecordEpisodeStatistics":
        assert history[0][3]["_episode"].all() and np.all(history[0][3]["episode"]["l"] == 1)
        assert "episode" not in history[1][3]
    native.close()
    sync.close()


def test_closed_loop_next_step_reset_step(synthetic):
    """Closed loop, compact observations, flattened + normalised: across an episode end the step after the done is
    the reset step (new episode's first observation = a fresh single env's reset observation, reward 0)."""
    wrap = lambda e: W.RecordEpisodeStatistics(_flat_normalized(e))  # noqa: E731
    native, sync = _pair("IRLVLA-Navsim-ClosedLoop-v2", synthetic, 2, NEXT, wrap, obs_keys=("compact",))
    history = _run(native, sync, steps=12, seed=3)
    ends = [(t, i) for t, (_, _, d, _) in enumerate(history[:-1]) for i in np.flatnonzero(d)]
    assert ends, "no episode ended in 12 closed-loop steps"
    for t, i in ends:
        _, rewards, dones, _ = history[t + 1]
        assert rewards[i] == 0.0 and not dones[i]
        assert history[t][3]["_episode"][i] and history[t][3]["episode"]["l"][i] == t + 1 - _last_end(ends, t, i)
    native.close()
    sync.close()


def _last_end(ends, t, i):
    """The step index after which env i's episode ending at step t started (its previous reset step)."""
    before = [s for s, j in ends if j == i and s < t]
    return before[-1] + 2 if before else 0


def test_next_step_raw_reset_obs_equals_single_env(synthetic):
    """Unwrapped NEXT_STEP: the reset step's observation is the one a single env gives at its second reset."""
    kwargs = small_kwargs(synthetic, obs_keys=("ego",))
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=2, vectorization_mode="vector_entry_point",
                        autoreset_mode=NEXT, **kwargs)
    envs.reset(seed=7)
    actions = np.zeros((2, 24), np.float32)
    envs.step(actions)
    obs, rewards, terminated, truncated, _ = envs.step(actions)
    assert np.all(rewards == 0.0) and not terminated.any() and not truncated.any()
    for i in range(2):
        single = gym.make("IRLVLA-Navsim-v2", **kwargs)
        single.reset(seed=7 + i)
        single.step(actions[i])
        second, _ = single.reset()
        np.testing.assert_array_equal(obs["ego"][i], second["ego"])
    envs.close()


def test_same_step_refusals_and_what_works(synthetic):
    """The default SAME_STEP: observation wrappers refuse it (gymnasium's error); NormalizeReward and
    RecordEpisodeStatistics accept it and match SyncVectorEnv; vector_kwargs is refused in vector_entry_point mode."""
    kwargs = small_kwargs(synthetic, obs_keys=("ego",))
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    for wrapper in (W.FlattenObservation, W.NormalizeObservation):
        with pytest.raises(ValueError, match="Expected autoreset_mode to be NEXT_STEP or DISABLED"):
            wrapper(envs)
    envs.close()
    with pytest.raises(gym.error.Error, match="vector_kwargs"):
        gym.make_vec("IRLVLA-Navsim-v2", num_envs=2, vectorization_mode="vector_entry_point",
                     vector_kwargs={"autoreset_mode": NEXT}, **kwargs)
    wrap = lambda e: W.RecordEpisodeStatistics(W.NormalizeReward(e))  # noqa: E731
    native, sync = _pair("IRLVLA-Navsim-v2", synthetic, 2, SAME, wrap, obs_keys=("ego",))
    history = _run(native, sync, steps=3, seed=1)
    assert all(h[3]["_episode"].all() for h in history)  # every SAME_STEP step ends (and restarts) an episode
    native.close()
    sync.close()


def test_flatten_obs_env_normalizes_directly_and_mode_names(synthetic):
    """``flatten_obs=True`` gives a Box: NormalizeObservation needs no FlattenObservation. Mode names parse."""
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=2, vectorization_mode="vector_entry_point",
                        autoreset_mode="next_step", **small_kwargs(synthetic, obs_keys=("ego",), flatten_obs=True))
    assert envs.metadata["autoreset_mode"] is NEXT
    wrapped = W.NormalizeObservation(envs)
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (2, 21) and obs.dtype == np.float32
    wrapped.step(np.zeros((2, 24), np.float32))
    envs.close()
    for name in ("NEXT_STEP", "NextStep", "nextstep", NEXT):
        assert autoreset_mode_of(name) is NEXT
    assert autoreset_mode_of("same_step") is SAME
    with pytest.raises(ValueError, match="autoreset_mode"):
        autoreset_mode_of("sometimes")
