"""The BC observation cache says where it writes and how much, and its folder is bounded (least recently used
entries evicted beyond ``$IRLVLA_BC_CACHE_GB``; entries in use, incomplete or just built stay)."""

from __future__ import annotations

import os
import time

import pytest

from irlvla_gym.policies.bc import (CACHE_LIMIT_ENV, build_obs_cache, cache_entries, cache_limit_bytes,
                                    evict_obs_caches)


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path / "meta.json", (t, t))


def test_build_prints_where_and_how_big(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(CACHE_LIMIT_ENV, raising=False)
    cache = build_obs_cache("synthetic-test", None, 3, ("ego",), str(tmp_path), progress=False)
    err = capsys.readouterr().err
    assert f"in {cache.path}" in err and "MB" in err and "$IRLVLA_CACHE" in err and CACHE_LIMIT_ENV in err
    assert "wrote" in err
    build_obs_cache("synthetic-test", None, 3, ("ego",), str(tmp_path), progress=False)  # a hit: silent
    assert capsys.readouterr().err == ""


def test_least_recently_used_entries_are_evicted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(CACHE_LIMIT_ENV, "0")  # no bound while the entries are made
    paths = [build_obs_cache("synthetic-test", None, n, ("ego",), str(tmp_path), progress=False).path
             for n in (2, 3, 4)]
    for age, p in zip((3 * 3600, 5 * 3600, 4 * 3600), paths):
        _age(p, age)
    (tmp_path / "incomplete-entry").mkdir()  # no meta.json: maybe being built elsewhere; never removed
    build_obs_cache("synthetic-test", None, 2, ("ego",), str(tmp_path), progress=False)  # a hit marks it used now
    capsys.readouterr()
    assert evict_obs_caches(tmp_path, limit=None) == []
    removed = evict_obs_caches(tmp_path, limit=1)  # 1 byte: everything evictable goes, oldest first
    assert removed == [paths[1], paths[2]]  # paths[0] was used just now
    assert "least recently used" in capsys.readouterr().err
    assert set(cache_entries(tmp_path)) == {paths[0], tmp_path / "incomplete-entry"}

    # through the environment variable, after a build: the new entry stays, old ones above the bound go
    _age(paths[0], 7200)
    monkeypatch.setenv(CACHE_LIMIT_ENV, "1e-9")
    new = build_obs_cache("synthetic-test", None, 5, ("ego",), str(tmp_path), progress=False).path
    assert set(cache_entries(tmp_path)) == {new, tmp_path / "incomplete-entry"}


def test_cache_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(CACHE_LIMIT_ENV, raising=False)
    assert cache_limit_bytes() == 2_000_000_000
    monkeypatch.setenv(CACHE_LIMIT_ENV, "0.5")
    assert cache_limit_bytes() == 500_000_000
    monkeypatch.setenv(CACHE_LIMIT_ENV, "0")
    assert cache_limit_bytes() is None
    monkeypatch.setenv(CACHE_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=CACHE_LIMIT_ENV):
        cache_limit_bytes()
