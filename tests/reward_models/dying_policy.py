"""A policy sampler for the dataset tests that kills its worker process on one scene (standing in for a segfault or
an OOM kill): the scene is named by the SHA-1 of its ``ego`` observation in ``$IRLVLA_TEST_KILL_EGO``."""

from __future__ import annotations

import hashlib
import os

import numpy as np


def ego_digest(ego: np.ndarray) -> str:
    return hashlib.sha1(np.round(np.asarray(ego, np.float64), 4).tobytes()).hexdigest()


def policy(obs, num, rng):
    if os.environ.get("IRLVLA_TEST_KILL_EGO") == ego_digest(obs["ego"]):
        os._exit(3)
    return np.zeros((num, 8, 3))
