"""PPO resume unpickles model.zip only when this run wrote it (hash in state.json) or the user trusts pickles."""

from __future__ import annotations

import pytest

from baselines.sb3_ppo import trusted_checkpoint
from irlvla_gym.agents import UntrustedInputError, file_sha256


def test_resume_needs_the_runs_own_hash_or_the_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("IRLVLA_TRUST_PICKLE", raising=False)
    (tmp_path / "model.zip").write_bytes(b"stand-in for an SB3 zip")
    recorded = {"step": 64, "zip_sha256": file_sha256(tmp_path / "model.zip")}
    assert trusted_checkpoint(tmp_path, recorded) == tmp_path / "model.zip"
    (tmp_path / "model.zip").write_bytes(b"swapped by someone else")
    with pytest.raises(UntrustedInputError, match=r"model\.zip.*--trust-pickle"):
        trusted_checkpoint(tmp_path, recorded)
    with pytest.raises(UntrustedInputError):
        trusted_checkpoint(tmp_path, {"step": 64})  # written before hashes were recorded
    monkeypatch.setenv("IRLVLA_TRUST_PICKLE", "1")
    assert trusted_checkpoint(tmp_path, {"step": 64}) == tmp_path / "model.zip"
