"""The Agent protocol, the built-in agents, spec resolution, entry-point discovery and algorithm training."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.agents import (
    Agent, AgentSpecError, FunctionAgent, SB3ModelAgent, available_agents, available_algorithms, load_agent,
    obs_keys_of_space, train_algorithm,
)


@pytest.mark.parametrize("name", ["human", "constant-velocity", "pdm-closed", "constant_velocity", "stand-still",
                                  "stand_still"])
def test_builtin_agents_satisfy_the_protocol(name, test_scenes):
    agent = load_agent(name)
    assert isinstance(agent, Agent)
    assert isinstance(agent.name, str) and agent.obs_keys == ()
    plan = agent.plan({}, test_scenes[0])
    assert plan.shape == (8, 3) and np.all(np.isfinite(plan))
    batch = agent.plan_batch({}, test_scenes)
    np.testing.assert_array_equal(batch[1], agent.plan({}, test_scenes[1]))


def test_human_agent_returns_the_expert(test_scenes):
    np.testing.assert_array_equal(load_agent("human").plan({}, test_scenes[0]), test_scenes[0].ego.future)


def test_stand_still_plans_zeros(test_scenes):
    agent = load_agent("stand-still")
    assert agent.name == "stand-still"
    np.testing.assert_array_equal(agent.plan({}, test_scenes[0]), np.zeros((8, 3)))
    assert agent.plan_batch({}, test_scenes).shape == (3, 8, 3)


def test_shipped_checkpoints_are_listed_and_resolve_by_name(tmp_path, monkeypatch, capsys):
    """Every folder of irlvla_gym/policies/checkpoints with a config.json is an agent name (listing imports no
    torch); a new one (here a stand-in 'irlvla_default') needs no code change."""
    import irlvla_gym.agents as agents
    from irlvla_gym.cli import main

    assert "bc_default" in agents.shipped_checkpoints()
    assert available_agents()["bc_default"].startswith("shipped VLA checkpoint")
    assert main(["leaderboard", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "bc_default" in listed and "stand-still" in listed
    fake = tmp_path / "checkpoints"
    for name in ("bc_default", "irlvla_default"):
        (fake / name).mkdir(parents=True)
        (fake / name / "config.json").write_text("{}")
    (fake / "notes").mkdir()  # no config.json: not a checkpoint
    monkeypatch.setattr(agents, "SHIPPED_CHECKPOINT_DIR", fake)
    assert list(agents.shipped_checkpoints()) == ["bc_default", "irlvla_default"]
    assert agents.shipped_checkpoint("irlvla-default") == fake / "irlvla_default"
    assert agents.shipped_checkpoint("notes") is None and "irlvla_default" in available_agents()


def test_bc_default_resolves_by_name_and_plans_like_the_network(test_scenes):
    pytest.importorskip("torch")
    from irlvla_gym.agents import SHIPPED_CHECKPOINT_DIR, VLANetworkAgent
    from irlvla_gym.obs import ObservationBuilder
    from irlvla_gym.policies import VLANetwork
    from irlvla_gym.policies.network import CHECKPOINT_DIR

    assert SHIPPED_CHECKPOINT_DIR == CHECKPOINT_DIR
    agent = load_agent("bc_default")
    assert isinstance(agent, VLANetworkAgent) and isinstance(agent, Agent)
    assert agent.name == "bc_default" and agent.obs_keys == ("camera", "ego", "instruction")
    obs = ObservationBuilder(agent.obs_keys).observe(test_scenes[0])
    expected = VLANetwork.from_pretrained("bc_default").eval().plan({k: np.array(v[None]) for k, v in obs.items()})[0]
    np.testing.assert_allclose(agent.plan(obs, test_scenes[0]), expected, atol=1e-6)
    stacked = {k: np.stack([ObservationBuilder(agent.obs_keys).observe(s)[k] for s in test_scenes]) for k in obs}
    np.testing.assert_allclose(agent.plan_batch(stacked, test_scenes)[0], expected, atol=1e-5)


def test_unknown_and_malformed_specs_raise_clearly():
    with pytest.raises(AgentSpecError, match="unknown agent"):
        load_agent("no-such-agent")
    with pytest.raises(AgentSpecError, match="cannot import"):
        load_agent("no_such_module_xyz:Agent")
    with pytest.raises(AgentSpecError, match="has no attribute"):
        load_agent("irlvla_gym.agents:NoSuchThing")
    with pytest.raises(FileNotFoundError):
        load_agent("missing/model.zip")


def test_entry_point_discovery(demo_plugin, test_scenes):
    assert available_agents()["demo-straight"].startswith("entry point irlvla_demo_plugin:StraightAgent")
    assert "demo-fit" in available_algorithms()
    agent = load_agent("demo-straight")
    assert isinstance(agent, Agent) and agent.name == "demo-straight" and agent.obs_keys == ("ego",)
    from irlvla_gym.obs import ObservationBuilder

    obs = ObservationBuilder(agent.obs_keys).observe(test_scenes[0])
    plan = agent.plan(obs, None)
    assert plan.shape == (8, 3)
    np.testing.assert_allclose(plan[-1, 0], 4.0 * test_scenes[0].ego.speed, rtol=1e-5)


def test_entry_points_vanish_without_the_plugin():
    assert "demo-straight" not in available_agents()


def test_module_class_and_function_specs(demo_plugin, test_scenes):
    cls_agent = load_agent("irlvla_demo_plugin:StraightAgent")
    assert isinstance(cls_agent, Agent)
    fn_agent = load_agent("irlvla_demo_plugin:straight_plan")
    assert isinstance(fn_agent, FunctionAgent) and fn_agent.name == "straight_plan" and fn_agent.obs_keys == ("ego",)
    from irlvla_gym.obs import ObservationBuilder

    obs = ObservationBuilder(("ego",)).observe(test_scenes[1])
    np.testing.assert_array_equal(cls_agent.plan(obs, test_scenes[1]), fn_agent.plan(obs, test_scenes[1]))


def _tiny_env(num_scenes: int = 3):
    import gymnasium as gym

    import irlvla_gym  # noqa: F401 - registers the envs

    return lambda: gym.make("IRLVLA-Navsim-v2", split="synthetic-test", num_scenes=num_scenes, obs_keys=("ego",))


def test_train_callable_algorithm_from_entry_point(demo_plugin):
    agent = train_algorithm("demo-fit", _tiny_env(), budget=3, seed=0)
    assert isinstance(agent, Agent) and agent.name == "demo-fit"


def test_sb3_model_zip_agent(tmp_path, test_scenes):
    """PPO for 64 steps on the env with the ego observation only; saved, re-loaded from the zip, planned like the
    env decodes the model's action."""
    env_fn = _tiny_env()
    agent = train_algorithm("ppo", env_fn, budget=64, seed=0, n_steps=32, batch_size=32, n_epochs=1)
    assert isinstance(agent, SB3ModelAgent) and agent.obs_keys == ("ego",)
    path = agent.save(tmp_path / "ppo_tiny.zip")
    assert path.is_file() and path.with_suffix(".irlvla.json").is_file()
    loaded = load_agent(str(path), trust_pickle=True)  # our own file: trusted explicitly
    assert isinstance(loaded, SB3ModelAgent) and loaded.name == "ppo_tiny" and loaded.obs_keys == ("ego",)
    env = env_fn()
    obs, _ = env.reset(options={"scene_index": 0})
    action, _ = loaded.model.predict(obs, deterministic=True)
    expected = env.unwrapped.decode_action(action).plan
    np.testing.assert_allclose(loaded.plan(obs, None), expected)
    np.testing.assert_allclose(loaded.plan(obs, None), agent.plan(obs, None), atol=1e-6)
    assert obs_keys_of_space(env.observation_space) == ("ego",)
    # ... and it lands on the leaderboard by its zip path.
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    result = run_leaderboard(LeaderboardConfig(agents=("human", str(path)), num_scenes=2, progress=False,
                                                 trust_pickle=True))
    row = result.rows[1]
    assert row["agent"] == "ppo_tiny" and row["scenes"] == 2 and row["errors"] == 0
    assert 0.0 <= row["epdms"] <= 1.0
