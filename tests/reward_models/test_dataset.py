"""RWM dataset: determinism, scorer labels, resume, candidate sources, policy hook."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reward_models.dataset import (
    DatasetError, build_dataset, load_dataset, load_policy_sampler, perturb_plans, CandidateConfig,
)

from .conftest import TINY


def _same(a, b) -> None:
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.plans, b.plans)
    np.testing.assert_array_equal(a.sources, b.sources)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    for k in a.obs:
        np.testing.assert_array_equal(a.obs[k], b.obs[k])


def test_same_seed_same_dataset_and_resume(tmp_path, tiny_data):
    # built in two steps (2 scenes, then rerun for 3: resumes, writes only the missing shard)
    out = tmp_path / "data"
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False)
    first = json.loads((out / "manifest.json").read_text())
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False)
    assert json.loads((out / "manifest.json").read_text()) == first  # nothing rebuilt
    _same(load_dataset(out), load_dataset(tiny_data))


def test_resume_after_interruption(tmp_path, tiny_data):
    out = tmp_path / "data"
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    # simulate a crash before shard 1 was listed: drop it from the manifest and delete its files
    m["shards"] = [s for s in m["shards"] if s["name"] == "shard-00000"]
    (out / "manifest.json").write_text(json.dumps(m))
    for f in (out / "shards").glob("shard-00001*"):
        f.unlink()
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False)
    _same(load_dataset(out), load_dataset(tiny_data))


def test_other_seed_differs_and_settings_mismatch_is_an_error(tmp_path, tiny_data):
    out = tmp_path / "data"
    build_dataset("synthetic-train", out, num_scenes=1, candidates=TINY, seed=1, progress=False)
    a, b = load_dataset(out), load_dataset(tiny_data)
    assert not np.array_equal(a.plans[0], b.plans[0])
    with pytest.raises(DatasetError, match="different settings"):
        build_dataset("synthetic-train", out, num_scenes=1, candidates=TINY, seed=2, progress=False)


def test_labels_equal_the_scorer(tiny_data):
    from irlvla_gym.scenes.source import SceneSource
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import pdm_reference_progress

    data = load_dataset(tiny_data)
    assert data.manifest["ep_normaliser"] == "pdm_closed"
    src = SceneSource("synthetic-train")
    import pyarrow.parquet as pq

    table = pq.read_table(tiny_data / "shards" / "shard-00000.parquet")
    plans64 = np.asarray(table.column("plan").combine_chunks().flatten().to_numpy()).reshape(-1, 8, 3)
    for i, index in enumerate(data.scenes[:2]):
        scene = src.load(int(index))
        M = data.plans.shape[1]
        plans = plans64[i * M:(i + 1) * M]
        np.testing.assert_array_equal(plans[0], scene.ego.future)  # expert kept as the demonstration (slot 0)
        r = score_plans(scene, plans, reference_progress=pdm_reference_progress(scene))
        for name in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms"):
            np.testing.assert_allclose(data.labels[name][i], getattr(r, name).astype(np.float32), rtol=0, atol=1e-7)


def test_candidate_sources(tiny_data):
    data = load_dataset(tiny_data)
    assert data.plans.shape == (3, 9, 8, 3)
    # no policy given: the policy slots are perturbations
    assert (data.sources[:, 0] == 0).all()
    counts = np.bincount(data.sources[0], minlength=5)
    assert counts.tolist() == [1, 2, 2, 4, 0]


def test_policy_sampler_hook(tmp_path):
    calls = []

    def policy(obs, num, rng):
        calls.append(num)
        return np.tile(np.linspace(1, 8, 8)[:, None] * np.array([2.0, 0.0, 0.0]), (num, 1, 1))

    out = tmp_path / "p"
    build_dataset("synthetic-train", out, num_scenes=1, candidates=TINY, policy=policy, progress=False)
    data = load_dataset(out)
    assert calls == [2]
    assert (data.sources[0] == 4).sum() == 2
    assert load_policy_sampler(None) is None


def test_perturbations_are_finite_and_vary():
    expert = np.stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)], axis=-1)
    p = perturb_plans(expert, 32, np.random.default_rng(0), CandidateConfig())
    assert p.shape == (32, 8, 3) and np.isfinite(p).all()
    assert p[:, -1, 0].std() > 1.0 and p[:, -1, 1].std() > 0.3
    standing = perturb_plans(np.zeros((8, 3)), 4, np.random.default_rng(0), CandidateConfig())
    assert np.isfinite(standing).all()


def test_vla_policy_samples(tmp_path):
    pytest.importorskip("transformers")
    policies = pytest.importorskip("irlvla_gym.policies")
    try:
        policies.resolve_checkpoint("bc_default")
    except Exception:
        pytest.skip("no shipped VLA checkpoint")
    out = tmp_path / "vla"
    build_dataset("synthetic-train", out, num_scenes=1, candidates=TINY, policy="bc_default", progress=False)
    data = load_dataset(out)
    sel = data.sources[0] == 4
    assert sel.sum() == 2 and np.isfinite(data.plans[0][sel]).all()
    assert data.manifest["policy"] == "bc_default"


DYING_POLICY = '"""A policy sampler for the dataset tests that kills its worker process on one scene (standing in for a segfault or\nan OOM kill): the scene is named by the SHA-1 of its ``ego`` observation in ``$IRLVLA_TEST_KILL_EGO``."""\n\nfrom __future__ import annotations\n\nimport hashlib\nimport os\n\nimport numpy as np\n\n\ndef ego_digest(ego: np.ndarray) -> str:\n    return hashlib.sha1(np.round(np.asarray(ego, np.float64), 4).tobytes()).hexdigest()\n\n\ndef policy(obs, num, rng):\n    if os.environ.get("IRLVLA_TEST_KILL_EGO") == ego_digest(obs["ego"]):\n        os._exit(3)\n    return np.zeros((num, 8, 3))\n'
"""Source of the ``dying_policy`` module the worker-death tests write at test time (nothing executable committed)."""


def _dying_policy_module(tmp_path, monkeypatch):
    """Write ``dying_policy.py`` into ``tmp_path`` and make it importable here, in spawned workers and in Ray's."""
    (tmp_path / "dying_policy.py").write_text(DYING_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def test_a_dying_worker_is_isolated_and_named_and_the_other_shards_are_written(tmp_path, monkeypatch):
    """Issue trust, item 4: a worker that dies (os._exit) while building one shard neither hangs the build nor loses
    the other shards; the shard is named, left out of the manifest, and a rerun without the fault completes it."""
    _dying_policy_module(tmp_path, monkeypatch)
    from dying_policy import ego_digest

    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.dataset import OBS_KEYS, CandidateConfig, WorkerDiedError, build_dataset, read_manifest

    scene = SceneSource("synthetic-train").load(3)
    monkeypatch.setenv("IRLVLA_TEST_KILL_EGO", ego_digest(ObservationBuilder(OBS_KEYS).observe(scene)["ego"]))
    cand = CandidateConfig(num_candidates=6, vocab_near=1, vocab_random=1, policy=2)
    out = tmp_path / "data"
    with pytest.raises(WorkerDiedError, match=r"shard 1 \(scenes 2-3\)"):
        build_dataset("synthetic-train", out, num_scenes=6, candidates=cand, policy="dying_policy:policy",
                      workers=2, shard_size=2, progress=False)
    assert sorted(s["name"] for s in read_manifest(out)["shards"]) == ["shard-00000", "shard-00002"]
    monkeypatch.delenv("IRLVLA_TEST_KILL_EGO")
    manifest = build_dataset("synthetic-train", out, num_scenes=6, candidates=cand, policy="dying_policy:policy",
                             workers=2, shard_size=2, progress=False)
    assert len(manifest["shards"]) == 3


def test_a_dying_ray_task_is_named_and_the_other_shards_are_written(tmp_path, monkeypatch):
    """The Ray backend: a shard whose worker dies (after Ray's retry) is named; the others are written."""
    ray = pytest.importorskip("ray")
    _dying_policy_module(tmp_path, monkeypatch)
    from dying_policy import ego_digest

    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.dataset import OBS_KEYS, CandidateConfig, WorkerDiedError, build_dataset, read_manifest

    scene = SceneSource("synthetic-train").load(3)
    monkeypatch.setenv("IRLVLA_TEST_KILL_EGO", ego_digest(ObservationBuilder(OBS_KEYS).observe(scene)["ego"]))
    cand = CandidateConfig(num_candidates=6, vocab_near=1, vocab_random=1, policy=2)
    out = tmp_path / "data"
    try:
        with pytest.raises(WorkerDiedError, match=r"shard 1 \(scenes 2-3\)"):
            build_dataset("synthetic-train", out, num_scenes=6, candidates=cand, policy="dying_policy:policy",
                          backend="ray", workers=2, shard_size=2, progress=False)
    finally:
        ray.shutdown()
    assert sorted(s["name"] for s in read_manifest(out)["shards"]) == ["shard-00000", "shard-00002"]
