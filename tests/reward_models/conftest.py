"""Shared tiny fixtures: a 3-scene, K = 8 dataset and a model trained on it for a few steps (built once)."""

from __future__ import annotations

import pytest

from reward_models.dataset import CandidateConfig

TINY = CandidateConfig(num_candidates=8, vocab_near=2, vocab_random=2, policy=2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from reward_models.dataset import build_dataset

    out = tmp_path_factory.mktemp("rwm") / "data"
    build_dataset("synthetic-train", out, num_scenes=3, candidates=TINY, shard_size=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_data):
    from reward_models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("rwm") / "ckpt"
    train(str(tiny_data), str(out), TrainConfig(epochs=2, batch_scenes=2, val_fraction=0.34), progress=False)
    return out
