"""RayVecEnv (irlvla_gym.envs.ray_vector) on a local multi-node Ray cluster vs the local native env.

One module-scoped cluster: a head node and a worker node, each its own raylet process with 1 CPU, started by
``ray.cluster_utils.Cluster`` on this machine (Ray 2.60 rewrites 127.0.0.1 to the machine's own address, so the nodes
bind that; every process is local) and shut down by the fixture's finaliser. Skipped when Ray is missing or cannot
start.

What "equal" means after a worker is killed (module docs of ray_vector): in the plan-once envs every episode is one
step, so a killed worker is replaced, its rows' current scenes are redrawn from the RNG states the driver kept and the
lost step is run again: PPO through a RayVecEnv whose worker is killed mid-rollout ends with exactly the weights,
rollout statistics and episode infos of PPO on the local BatchedVecEnv where nothing died. In the closed-loop env
the rows of the killed worker are mid-episode: their episodes are truncated (TimeLimit.truncated, the last
observation as terminal_observation) and each row continues with the scene it would have drawn next, checked
against the local env when that row's episode ends there.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from irlvla_gym.envs.testing import assert_same, small_kwargs

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    nodes = None
    try:
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
        nodes.wait_for_nodes(timeout=60)
    except Exception as exc:  # noqa: BLE001 - no Ray here: skip, never fail
        ray.shutdown()
        if nodes is not None:
            nodes.shutdown()
        pytest.skip(f"cannot start a local Ray cluster: {type(exc).__name__}: {exc}")
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _kill(actor) -> None:
    """``ray.kill`` and wait until Ray reports the actor dead (the kill is asynchronous)."""
    ray.kill(actor)
    for _ in range(200):
        try:
            ray.get(actor.location.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


_same = assert_same  # exact equality of nested obs / infos, failures name the entry


def _same_infos(ours, theirs, path) -> None:
    for k, (a, b) in enumerate(zip(ours, theirs)):
        a, b = dict(a), dict(b)
        ea, eb = a.pop("episode", None), b.pop("episode", None)
        assert (ea is None) == (eb is None), f"{path} env {k}: episode"
        if ea is not None:  # "t" is seconds since the VecEnv was made: differs
            assert (ea["r"], ea["l"]) == (eb["r"], eb["l"]), f"{path} env {k}"
        _same(a, b, f"{path} env {k}")


def test_ray_vec_env_equals_local_and_truncates_on_failure(cluster, synthetic):
    from irlvla_gym.envs.ray_vector import RayVecEnv
    from irlvla_gym.envs.sb3 import BatchedVecEnv

    env_id, kwargs = "IRLVLA-Navsim-ClosedLoop-v2", small_kwargs(synthetic)
    local = BatchedVecEnv(env_id, 5, **kwargs)
    remote = RayVecEnv(env_id, 5, num_workers=2, **kwargs)  # shards of 3 and 2 rows
    try:
        assert len({loc["node_id"] for loc in remote.worker_locations()}) == 2  # one actor per node (SPREAD)
        local.seed(11)
        remote.seed(11)
        _same(remote.reset(), local.reset(), "reset")
        _same_infos(remote.reset_infos, local.reset_infos, "reset infos")
        actions = np.zeros((5, 24), np.float32)  # the "keep the log" plan: episodes of 8 steps in these scenes
        for t in range(3):
            o1, r1, d1, i1 = remote.step(actions)
            o2, r2, d2, i2 = local.step(actions)
            _same(o1, o2, f"obs {t}")
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(d1, d2)
            assert r1.dtype == np.float32 and not d1[3:].any()
            _same_infos(i1, i2, f"infos {t}")
        last = {k: v.copy() for k, v in o1.items()}
        _kill(remote.actors[1])  # rows 3 and 4, three steps into their episodes
        o1, r1, d1, i1 = remote.step(actions)
        o2, r2, d2, i2 = local.step(actions)
        assert remote.restarts == [(1, "truncated")]
        assert d1[3:].tolist() == [True, True] and r1[3:].tolist() == [0.0, 0.0]
        np.testing.assert_array_equal(d1[:3], d2[:3])
        _same({k: v[:3] for k, v in o1.items()}, {k: v[:3] for k, v in o2.items()}, "surviving rows")
        for i in (3, 4):
            assert i1[i]["TimeLimit.truncated"] and i1[i]["worker_restarted"]
            _same(i1[i]["terminal_observation"], {k: v[i] for k, v in last.items()}, "terminal obs")
            assert i1[i]["episode"]["l"] == 3
        restarted = {i: ({k: v[i] for k, v in o1.items()}, remote.reset_infos[i]["token"]) for i in (3, 4)}
        for _ in range(20):  # the local rows end their episodes: same next scene as the restarted rows
            for i in (3, 4):
                if d2[i] and i in restarted:
                    first, token = restarted.pop(i)
                    _same(first, {k: v[i] for k, v in o2.items()}, f"row {i}'s next episode")
                    assert token == local.reset_infos[i]["token"]
            if not restarted:
                break
            o2, _, d2, _ = local.step(actions)
        assert not restarted
    finally:
        remote.close()
        local.close()


def _ppo(venv, kill_at: int | None = None):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class KillWorker(BaseCallback):
        """Kills Ray worker 1 after env step ``kill_at`` (its next step is lost and must be replayed)."""

        def _on_step(self) -> bool:
            if kill_at is not None and self.num_timesteps == kill_at * venv.num_envs:
                _kill(venv.actors[1])
            return True

    torch.set_num_threads(1)
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=2, seed=3, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=3 * 8 * venv.num_envs, callback=KillWorker())
    return model


def test_ppo_with_a_killed_worker_equals_local_ppo(cluster, synthetic):
    import torch

    from irlvla_gym.envs.ray_vector import RayVecEnv
    from irlvla_gym.envs.sb3 import BatchedVecEnv

    env_id, kwargs = "IRLVLA-Navsim-Residual-v2", {"scenes": synthetic}
    local = BatchedVecEnv(env_id, 4, **kwargs)
    remote = RayVecEnv(env_id, 4, num_workers=2, **kwargs)
    try:
        reference = _ppo(local)
        model = _ppo(remote, kill_at=13)  # mid-way through the second rollout of 8 steps
        assert remote.restarts == [(1, "replayed")]
        for (name, a), (_, b) in zip(reference.policy.state_dict().items(), model.policy.state_dict().items()):
            assert torch.equal(a, b), name
        assert [(e["r"], e["l"]) for e in model.ep_info_buffer] == \
               [(e["r"], e["l"]) for e in reference.ep_info_buffer]
        np.testing.assert_array_equal(model.rollout_buffer.rewards, reference.rollout_buffer.rewards)
        np.testing.assert_array_equal(model.rollout_buffer.observations, reference.rollout_buffer.observations)
    finally:
        remote.close()
        local.close()


def test_bad_arguments_name_the_argument():
    from irlvla_gym.envs.ray_vector import RayVecEnv

    with pytest.raises(ValueError, match="num_workers"):
        RayVecEnv("IRLVLA-Navsim-v2", 2, num_workers=3)
    with pytest.raises(ValueError, match="num_envs"):
        RayVecEnv("IRLVLA-Navsim-v2", 0)


def test_a_hung_worker_times_out_and_is_replaced(cluster, synthetic):
    """A worker that stops answering (SIGSTOP) costs ``step_timeout_s``, then is killed and replaced; the one-step
    episodes are replayed, so the numbers stay the local env's."""
    import os
    import signal

    from irlvla_gym.envs.ray_vector import RayVecEnv
    from irlvla_gym.envs.sb3 import BatchedVecEnv

    env_id, kwargs = "IRLVLA-Navsim-Residual-v2", {"scenes": synthetic}
    local = BatchedVecEnv(env_id, 4, **kwargs)
    remote = RayVecEnv(env_id, 4, num_workers=2, step_timeout_s=3.0, **kwargs)
    try:
        local.seed(5)
        remote.seed(5)
        _same(remote.reset(), local.reset(), "reset")
        actions = np.random.default_rng(2).uniform(-1, 1, (3, 4, 4)).astype(np.float32)
        o1, r1, *_ = remote.step(actions[0])
        o2, r2, *_ = local.step(actions[0])
        os.kill(remote.worker_locations()[1]["pid"], signal.SIGSTOP)
        start = time.monotonic()
        for a in actions[1:]:
            o1, r1, d1, _ = remote.step(a)
            o2, r2, d2, _ = local.step(a)
            _same(o1, o2, "obs")
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(d1, d2)
        assert remote.restarts == [(1, "replayed")] and time.monotonic() - start >= 3.0
    finally:
        remote.close()
        local.close()
