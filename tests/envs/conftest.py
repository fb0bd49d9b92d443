"""Shared fixtures for the env tests: a few small scenes and a small observation config (fast tests)."""

from __future__ import annotations

import pytest

from irlvla_gym.scenes.scene import Scene
from irlvla_gym.scenes.testing import straight_road_scene


@pytest.fixture(scope="session")
def synthetic() -> list[Scene]:
    """Three synthetic-train scenes (generated once per session)."""
    from irlvla_gym.scenes.synthetic import generate_scene

    return [generate_scene(seed, split="synthetic-train") for seed in range(3)]


@pytest.fixture(scope="session")
def empty_road() -> Scene:
    """A straight two-lane road, no other agents (the expert drives straight at 10 m/s)."""
    return straight_road_scene(token="empty-road", length_ahead=200.0)


@pytest.fixture(scope="session")
def stopped_car() -> Scene:
    """The ego at 10 m/s with a stopped car 20 m ahead in its lane (the logged expert would hit it)."""
    return straight_road_scene(token="stopped-car", agents=[dict(x=20.0, y=0.0)])
