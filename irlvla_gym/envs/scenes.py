"""Old import paths: the process-wide caches (:func:`shared_lru`, :func:`clear_shared_caches`, :class:`LRU`) live in
:mod:`irlvla_gym.cache`, :class:`SceneSource` in :mod:`irlvla_gym.scenes.source` (it serves BC, the reward model and
the leaderboard too); both are re-exported here so ``from irlvla_gym.envs.scenes import ...`` keeps working."""

from __future__ import annotations

from irlvla_gym.cache import LRU, clear_shared_caches, shared_lru
from irlvla_gym.scenes.source import SceneSource, build_split_store, split_store_path

__all__ = ["LRU", "SceneSource", "build_split_store", "clear_shared_caches", "shared_lru", "split_store_path"]


if __name__ == "__main__":  # the old spelling of ``python -m irlvla_gym.scenes.source --build SPLIT``
    from irlvla_gym.scenes.source import main

    main()
