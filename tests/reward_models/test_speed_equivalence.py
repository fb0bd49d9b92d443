"""The fast inference path of the reward world model reproduces the outputs the first shipped checkpoint (``v1``,
the default of the published baselines and reward-hacking results) gave before it.

``data/rwm_reference.npz`` was written by ``python -m tests.reward_models.test_speed_equivalence --write`` from the
code as it was BEFORE the speed work (commit 693d9f9: eager per-op torch features, eager network): for 4
``synthetic-test`` scenes x 64 plans (48 vocabulary entries + 16 perturbed / out-of-view / yaw-wrapping plans) it
holds the shipped model's expected sub-scores and reward, and per scene the mean / max / min over plans and poses of
every plan-feature column. Results in the repo (eval reports, baselines) were produced with the old path, so the
new one must match to float noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reward_models.checkpoint import SHIPPED_DIR

REFERENCE = Path(__file__).parent / "data" / "rwm_reference.npz"
NUM_SCENES, NUM_PLANS = 4, 64
V1 = SHIPPED_DIR / "v1"
needs_ckpt = pytest.mark.skipif(not (V1 / "model.safetensors").exists(), reason="no shipped v1 checkpoint")


def reference_inputs() -> tuple[list[dict], np.ndarray]:
    """Observations of 4 synthetic-test scenes and (4, 64, 8, 3) float32 plans (deterministic)."""
    from irlvla_gym.plans.vocabulary import load_vocabulary
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models.model import OBS_KEYS

    spec = SPLITS["synthetic-test"]
    builder = ObservationBuilder(OBS_KEYS)
    obs = [builder.observe(generate_scene(spec.first_seed + i, spec.config, spec.name)) for i in range(NUM_SCENES)]
    vocab = load_vocabulary(256)
    rng = np.random.default_rng(1234)
    plans = []
    for s in range(NUM_SCENES):
        base = vocab[rng.choice(len(vocab), 48, replace=False)]
        pert = vocab[rng.choice(len(vocab), 16, replace=False)].copy()
        pert[:4, :, :2] *= rng.uniform(1.5, 4.0, (4, 1, 1))          # far, partly outside the BEV / map raster
        pert[4:8, :, 1] += rng.uniform(-12, 12, (4, 1))                # lateral offsets (off-road)
        pert[8:12, :, 2] += np.linspace(0, 1, 8) * rng.uniform(2.5, 3.5, (4, 1))  # yaw across +-pi
        pert[12:, :, :] += rng.normal(0, 0.6, (4, 8, 3))               # jitter (jerk, yaw rate)
        pert[15] = 0.0                                                 # standing still
        plans.append(np.concatenate([base, pert]))
    return obs, np.stack(plans).astype(np.float32)


def _stack(obs: list[dict]) -> dict:
    return {k: np.stack([o[k] for o in obs]) for k in obs[0]}


def compute(model) -> dict[str, np.ndarray]:
    """Batched (4 scenes at once) outputs: sub-scores, reward, feature column summaries."""
    obs, plans = reference_inputs()
    with torch.no_grad():
        enc = model.encode_scene(_stack(obs))
        feats = model.plan_features(enc, plans)  # (B, K, 8, F)
        pred = model.score(enc, plans)
    out = {f"sub_{k}": v.numpy() for k, v in pred.expected.items()}
    out["reward"] = pred.reward.numpy()
    f = feats.flatten(1, 2)
    out["feat_mean"], out["feat_max"], out["feat_min"] = (f.mean(1).numpy(), f.amax(1).numpy(), f.amin(1).numpy())
    return out


@pytest.fixture(scope="module")
def model():
    from reward_models import load_model

    return load_model(V1).eval()


@needs_ckpt
def test_batched_outputs_match_the_reference(model):
    ref = np.load(REFERENCE)
    got = compute(model)
    assert set(ref.files) == set(got)
    for k in ref.files:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=2e-5, err_msg=k)


@needs_ckpt
def test_single_scene_api_matches_the_reference(model):
    """``predict_reward`` / ``predict_subscores`` one scene at a time (the fast B = 1 path) give the same values."""
    ref = np.load(REFERENCE)
    obs, plans = reference_inputs()
    for s in range(NUM_SCENES):
        np.testing.assert_allclose(model.predict_reward(obs[s], plans[s]), ref["reward"][s], rtol=0, atol=2e-5)
        subs = model.predict_subscores(obs[s], plans[s])
        for k, v in subs.items():
            want = ref["reward"][s] if k == "reward" else ref[f"sub_{k}"][s]
            np.testing.assert_allclose(v, want, rtol=0, atol=2e-5, err_msg=k)


@needs_ckpt
def test_features_keep_gradients_and_training_mode(model):
    """Training and refit call ``score`` with grad enabled in train mode: the fast path must not break autograd."""
    obs, plans = reference_inputs()
    model.train()
    try:
        enc = model.encode_scene(obs[0])
        pred = model.score(enc, plans[0])
        pred.reward.sum().backward()
        assert all(p.grad is not None for p in model.plan_in.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    ref = np.load(REFERENCE)
    np.testing.assert_allclose(pred.reward.detach().numpy()[0], ref["reward"][0], rtol=0, atol=2e-5)


if __name__ == "__main__":
    import sys

    from reward_models import load_model

    if "--write" in sys.argv:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(REFERENCE, **compute(load_model(V1).eval()))
        print("wrote", REFERENCE, REFERENCE.stat().st_size, "bytes")
