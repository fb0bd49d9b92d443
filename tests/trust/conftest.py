"""Hostile inputs of the trust tests, generated at test time (nothing executable is committed).

Every payload, if it ever ran, would create ``marker`` (a file in the test's tmp dir); each test asserts it does not
exist afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest


class _Payload:
    """Pickles to ``os.system("touch <marker>")``: what a hostile pickle in a user file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_pickle(marker: Path) -> bytes:
    """Pickle bytes that create ``marker`` when unpickled."""
    return pickle.dumps(_Payload(marker))


def write_hostile_sb3_zip(path: Path, marker: Path) -> Path:
    """An SB3-style model zip whose ``data`` JSON has ':serialized:' entries holding the payload."""
    blob = base64.b64encode(hostile_pickle(marker)).decode()
    data = {key: {":type:": "<class 'x'>", ":serialized:": blob}
            for key in ("policy_class", "observation_space", "action_space", "lr_schedule")}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", json.dumps(data))
        zf.writestr("_stable_baselines3_version", "2.9.2")
        zf.writestr("policy.pth", b"")
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a payload would create; asserted absent after the test."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a hostile input ran code"


@pytest.fixture(scope="session")
def tiny_rwm_data(tmp_path_factory):
    """A 3-scene, K = 8 RWM dataset (as tests/reward_models builds it)."""
    from reward_models.dataset import CandidateConfig, build_dataset

    out = tmp_path_factory.mktemp("rwm") / "data"
    tiny = CandidateConfig(num_candidates=8, vocab_near=2, vocab_random=2, policy=2)
    build_dataset("synthetic-train", out, num_scenes=3, candidates=tiny, shard_size=2, progress=False)
    return out
