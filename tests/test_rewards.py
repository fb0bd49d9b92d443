"""The reward registry (irlvla_gym.rewards): specs parsed once, rewards found by name, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401  (registers the env ids)
from irlvla_gym import rewards
from irlvla_gym.rewards import RewardSpec, parse_reward, register_reward, registered_rewards
from irlvla_gym.scenes.testing import straight_road_scene


def test_parse_round_trips_and_flags():
    assert parse_reward("epdms") == RewardSpec("epdms") and not parse_reward("epdms").learned
    spec = parse_reward("rwm:policy_aware")
    assert (spec.name, spec.argument, str(spec), spec.learned) == ("rwm", "policy_aware", "rwm:policy_aware", True)
    assert parse_reward("rwm").argument is None
    assert parse_reward(spec) is spec
    fn = parse_reward(lambda scene, plan: 0.5)
    assert fn.name == "callable" and fn.make()(None, None) == 0.5


@pytest.mark.parametrize("bad", ["", "foo", "rwm:", "epdms:x", 3, None])
def test_bad_specs_name_the_argument_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"reward must be one of 'epdms'.*'rwm'"):
        parse_reward(bad)


def test_reward_models_register_through_entry_points():
    """The envs never import reward_models: 'rwm' and 'rwm-ensemble' come from the package's entry points."""
    assert {"epdms", "rwm", "rwm-ensemble"} <= set(registered_rewards())


def test_registered_reward_reaches_the_env():
    calls = []

    def factory(argument, **options):
        def reward(scene, plan):
            calls.append(argument)
            return float(argument)
        return reward

    register_reward("constant", factory)
    try:
        env = gym.make("IRLVLA-Navsim-v2", scenes=[straight_road_scene(token="road")], reward="constant:0.25")
        env.reset(seed=0)
        _, reward, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
    finally:
        rewards._FACTORIES.pop("constant")
    assert reward == 0.25 and calls == ["0.25"]
    with pytest.raises(ValueError, match="reward name"):
        register_reward("epdms", factory)


def test_make_offers_options_only_to_factories_that_take_them():
    seen = {}

    def plain(argument):
        return lambda scene, plan: 1.0

    def sized(argument, *, cache_size=8):
        seen["cache_size"] = cache_size
        return lambda scene, plan: 2.0

    for name, factory in (("plain", plain), ("sized", sized)):
        register_reward(name, factory)
    try:
        assert parse_reward("plain").make(cache_size=99)(None, None) == 1.0
        assert parse_reward("sized").make(cache_size=99)(None, None) == 2.0 and seen == {"cache_size": 99}
    finally:
        rewards._FACTORIES.pop("plain")
        rewards._FACTORIES.pop("sized")
