"""IRLVLA-Navsim-ClosedLoop-v2: checkers, truncation, termination, shifted scoring, determinism, rewards."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.closed_loop import NavsimClosedLoopEnv
from irlvla_gym.envs.testing import assert_same, rollout, small_kwargs


def run_expert(env, **reset_kwargs):
    env.reset(**reset_kwargs)
    infos, rewards = [], []
    while True:
        _, r, te, tr, info = env.step(env.expert_action())
        infos.append(info)
        rewards.append(r)
        if te or tr:
            return te, tr, rewards, infos


def test_gymnasium_and_sb3_check_env(synthetic):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(NavsimClosedLoopEnv(**small_kwargs(synthetic)), skip_render_check=True)
        sb3_check_env(NavsimClosedLoopEnv(**small_kwargs(synthetic)), warn=True)


@pytest.mark.parametrize("traffic", ["log", "idm"])
def test_runs_to_truncation_at_end_of_log(empty_road, traffic):
    env = NavsimClosedLoopEnv(**small_kwargs([empty_road], traffic=traffic))
    terminated, truncated, rewards, infos = run_expert(env)
    assert truncated and not terminated and len(infos) == 8
    assert infos[-1]["end_of_log"] and infos[-1]["time"] == pytest.approx(4.0)
    assert all(r > 0.9 for r in rewards)
    assert infos[0]["rewards"]["ec"] == 1.0 and all("ec" in i["rewards"] for i in infos)
    # The ego executed 0.5 s of each plan: 40 m at 10 m/s.
    assert env.ego_state[0] == pytest.approx(40.0, abs=1.0)
    assert env.driven_states.shape == (41, 11)


@pytest.mark.parametrize("traffic", ["log", "idm"])
def test_synthetic_episode_ends(synthetic, traffic):
    env = NavsimClosedLoopEnv(**small_kwargs(synthetic[:2], traffic=traffic))
    terminated, truncated, rewards, infos = run_expert(env, seed=0)
    assert terminated or truncated
    assert all(0.0 <= r <= 1.0 for r in rewards)


def test_terminates_on_collision_with_stopped_car(stopped_car):
    env = NavsimClosedLoopEnv(**small_kwargs([stopped_car], human_filter=False))
    terminated, truncated, rewards, infos = run_expert(env)  # constant 10 m/s into a car 20 m ahead
    assert terminated and not truncated and infos[-1]["collision"]
    assert len(infos) <= 4 and rewards[-1] == 0.0


def test_terminates_off_road(empty_road):
    from irlvla_gym.plans.codec import plan_to_action

    env = NavsimClosedLoopEnv(**small_kwargs([empty_road]))
    env.reset()
    plan = np.stack([np.arange(1, 9) * 5.0, np.arange(1, 9) ** 2 * 0.6, np.zeros(8)], 1)  # swerve left
    done = False
    for _ in range(8):
        _, _, te, tr, info = env.step(plan_to_action(plan))
        if te or tr:
            done = te
            break
    assert done and info["off_road"]


def test_idm_agents_react_and_observation_follows(stopped_car):
    """With IDM traffic, the observation's agents are the simulated ones (a stopped car stays stopped here)."""
    env = NavsimClosedLoopEnv(**small_kwargs([stopped_car], traffic="idm", obs_keys=("agents",)))
    env.reset()
    obs, *_ = env.step(np.zeros(24, np.float32))  # brake
    assert obs["agents_mask"].sum() == 1


def test_first_step_equals_plan_once(synthetic):
    """At t0 the closed-loop reward is the plan-once reward of the same plan."""
    from irlvla_gym.envs.navsim_env import NavsimEnv

    once = NavsimEnv(**small_kwargs(synthetic))
    loop = NavsimClosedLoopEnv(**small_kwargs(synthetic))
    for env in (once, loop):
        env.reset(options={"scene_index": 1})
    a = np.clip(once.expert_action() * 0.9, -1, 1)
    assert once.step(a)[1] == loop.step(a)[1]


def test_shifted_scoring_matches_direct_scorer_call(synthetic):
    """Step k's reward equals score_states on the states simulated from the current state (documented recipe)."""
    from irlvla_gym.plans.codec import action_to_plan
    from irlvla_gym.envs.scoring import context_at, score_states, window
    from irlvla_gym.scenes.geometry import to_global
    from irlvla_gym.sim import simulate_plans

    env = NavsimClosedLoopEnv(**small_kwargs(synthetic))
    env.reset(options={"scene_index": 0})
    env.step(env.expert_action())
    prev = env.previous_states[None]
    history = env.trace[-16:-1]  # the 1.5 s driven before the current state
    state = env.ego_state
    action = env.expert_action()
    plan = action_to_plan(action)
    world = plan.copy()
    world[:, :2] = to_global(plan[:, :2], state[:2], state[2])
    world[:, 2] = plan[:, 2] + state[2]
    states = simulate_plans(state[None], world[None])
    b = env.bundle
    boxes, valid = env.agent_tracks
    expected = score_states(b, states, window(boxes, valid, b.log_agents.category, 5), previous_states=prev,
                            ctx=context_at(b, 5, history))
    _, reward, *_ = env.step(action)
    assert reward == pytest.approx(float(expected.epdms[0]), abs=1e-12)


def test_determinism(synthetic):
    acts = [np.clip(np.random.default_rng(i).normal(0, 0.1, 24), -1, 1).astype(np.float32) for i in range(5)]
    for traffic in ("log", "idm"):
        a = NavsimClosedLoopEnv(**small_kwargs(synthetic, traffic=traffic))
        b = NavsimClosedLoopEnv(**small_kwargs(synthetic, traffic=traffic))
        assert_same(rollout(a, 3, acts, 5), rollout(b, 3, acts, 5))


def test_custom_reward_gets_shifted_scene(empty_road):
    seen = []

    def reward(scene, plan):
        seen.append(scene)
        return 1.0

    env = NavsimClosedLoopEnv(**small_kwargs([empty_road], reward=reward))
    env.reset()
    env.step(env.expert_action())
    _, r, *_, info = env.step(env.expert_action())
    assert r == 1.0 and info["rewards"]["custom"] == 1.0 and "epdms" in info["rewards"]
    shifted = seen[1]
    np.testing.assert_allclose(shifted.ego.history[-1], 0.0, atol=1e-9)
    # The expert keeps driving straight at 10 m/s in the new frame.
    np.testing.assert_allclose(shifted.ego.future[:, 0], np.arange(1, 9) * 5.0, atol=0.5)
    # The road was shifted back by the 5 m driven.
    assert shifted.map.drivable_area.rings.points[:, 0].min() == pytest.approx(-65.0, abs=0.5)


def test_nan_action_continues(empty_road):
    env = NavsimClosedLoopEnv(**small_kwargs([empty_road]))
    env.reset()
    obs, r, te, tr, info = env.step(np.full(24, np.nan, np.float32))
    assert r == 0.0 and info["invalid_action"] and env.observation_space.contains(obs)
    obs, r, te, tr, info = env.step(env.expert_action())
    assert not info["invalid_action"] and np.isfinite(r)


def test_render_closed_loop(empty_road):
    env = NavsimClosedLoopEnv(**small_kwargs([empty_road], render_mode="rgb_array", render_size=(64, 64)))
    env.reset()
    env.step(env.expert_action())
    assert env.render().shape == (64, 64, 3)
