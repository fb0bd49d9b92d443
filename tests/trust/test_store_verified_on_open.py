"""Every consumer opens stores through SceneSource, which verifies checksums: a same-size corruption is refused."""

from __future__ import annotations

import pytest

from irlvla_gym.scenes.source import SceneSource
from irlvla_gym.scenes.store import CorruptStoreError, build_store
from irlvla_gym.scenes.synthetic import generate_scene


def _store(path):
    build_store([generate_scene(seed, split="synthetic-test") for seed in range(2)], path, split="t",
                source="synthetic", progress=False)
    return path


def test_same_size_corruption_is_refused_naming_the_file(tmp_path):
    out = _store(tmp_path / "store")
    target = max(out.rglob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last payload byte: same size, different content
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=target.name):
        SceneSource(str(out))


def test_intact_store_opens_and_is_hashed_once_per_version(tmp_path, monkeypatch):
    out = _store(tmp_path / "store")
    import irlvla_gym.scenes.store as store_module

    calls = []
    original = store_module.file_blake2b
    monkeypatch.setattr(store_module, "file_blake2b", lambda p: calls.append(p) or original(p))
    assert len(SceneSource(str(out))) == 2
    hashed = len(calls)
    assert hashed > 0
    assert len(SceneSource(str(out))) == 2 and len(calls) == hashed  # same manifest: not hashed again
