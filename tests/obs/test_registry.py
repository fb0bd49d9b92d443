"""Every key's output lies in its declared space; batch equals a loop of singles exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from irlvla_gym.obs import OBSERVATION_TYPES, ObsConfig, ObservationBuilder, make_observation_space, observe_batch
from irlvla_gym.obs.registry import observe

ALL_KEYS = list(OBSERVATION_TYPES)


def _poses_times(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    poses = np.zeros((n, 3))
    poses[1:] = np.c_[rng.uniform(-5, 15, n - 1), rng.uniform(-3, 3, n - 1), rng.uniform(-0.6, 0.6, n - 1)]
    times = np.r_[0.0, rng.uniform(0.0, 4.0, n - 1)]
    return poses, times


def test_space_is_flat_dict_of_boxes():
    space = make_observation_space(ALL_KEYS)
    assert isinstance(space, gym.spaces.Dict)
    assert set(space.spaces) == {"bev", "camera", "ego", "instruction", "agents", "agents_mask", "map", "map_mask"}
    assert all(isinstance(s, gym.spaces.Box) for s in space.spaces.values())
    assert space["bev"].shape == (8, 128, 128) and space["camera"].shape == (128, 256, 3)
    with pytest.raises(KeyError):
        make_observation_space(["bev", "lidar"])


def test_single_and_batch_in_space_and_equal(scenes):
    builder = ObservationBuilder(ALL_KEYS)
    poses, times = _poses_times(len(scenes))
    batch = builder.observe_batch(scenes, poses, times)
    for i, scene in enumerate(scenes):
        single = builder.observe(scene, poses[i], times[i])
        assert builder.space.contains(single), scene.token
        for name, value in single.items():
            assert value.dtype == batch[name].dtype
            np.testing.assert_array_equal(batch[name][i], value, err_msg=f"{name} {scene.token}")
    for name, sub in builder.space.spaces.items():
        assert batch[name].shape == (len(scenes),) + sub.shape
        assert all(sub.contains(batch[name][i]) for i in range(len(scenes)))


def test_module_functions_and_small_config(scenes):
    config = ObsConfig(bev_size=(64, 96), camera_size=(48, 96), instruction_length=16, max_agents=4,
                       max_polylines=8, points_per_polyline=5)
    space = make_observation_space(ALL_KEYS, config)
    one = observe(ALL_KEYS, scenes[0], None, 0.0, config)
    assert space.contains(one)
    assert one["bev"].shape == (8, 64, 96) and one["camera"].shape == (48, 96, 3)
    assert one["agents_mask"].sum() == 4 and one["map"].shape == (8, 5, 11)
    batch = observe_batch(ALL_KEYS, scenes[:2], None, None, config)
    assert batch["bev"].shape == (2, 8, 64, 96)
    empty = observe_batch(ALL_KEYS, [], None, None, config)
    assert empty["camera"].shape == (0, 48, 96, 3)


def test_vectors_nearest_first_in_ego_frame(scenes):
    busy = scenes[0]
    out = observe(["agents", "map"], busy, [10.0, 0.0, np.pi / 2], 0.0)
    agents, mask = out["agents"], out["agents_mask"]
    n = int(mask.sum())
    assert n == 4 and not agents[n:].any()
    dist = np.hypot(agents[:n, 0], agents[:n, 1])
    assert np.all(np.diff(dist) >= 0)
    # the lead car at scene (20, 0) is 10 m ahead; seen from heading +90 deg it lies to the ego's right (y < 0)
    lead = agents[np.argmin(np.abs(agents[:n, 0] - 0.0) + np.abs(agents[:n, 1] + 10.0))]
    np.testing.assert_allclose(lead[:2], [0.0, -10.0], atol=1e-4)
    np.testing.assert_allclose(lead[2:4], [0.0, -1.0], atol=1e-6)  # its heading (scene +x) is ego -y
    np.testing.assert_allclose(lead[4:6], [0.0, -5.0], atol=1e-6)
    assert lead[8] == 1.0  # vehicle one-hot
    m = out["map"][out["map_mask"] == 1]
    assert m[..., 6].any() and m[..., 8].any()  # a crosswalk and a red light among the polylines
    nearest = np.sqrt((m[..., :2] ** 2).sum(-1)).min(1)
    assert np.all(np.diff(nearest) >= -1e-4)


def test_instructions_of_all_scenes_use_known_words(scenes):
    from irlvla_gym.obs.instruction import UNK_ID, build_instruction, decode_instruction, encode_instruction

    for scene in scenes:
        for pose, t in (([0.0, 0.0, 0.0], 0.0), ([8.0, 0.5, 0.1], 1.5)):
            text = build_instruction(scene, pose, t)
            ids = encode_instruction(text)
            assert UNK_ID not in ids and decode_instruction(ids) == text
