"""Ray and local backends produce the same dataset (skipped without Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models.dataset import build_dataset, load_dataset

from .conftest import TINY


def test_ray_equals_local(tmp_path, tiny_data):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        build_dataset("synthetic-train", tmp_path / "ray", num_scenes=3, candidates=TINY, shard_size=2,
                      backend="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    a, b = load_dataset(tmp_path / "ray"), load_dataset(tiny_data)
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.plans, b.plans)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    for k in a.obs:
        np.testing.assert_array_equal(a.obs[k], b.obs[k])
