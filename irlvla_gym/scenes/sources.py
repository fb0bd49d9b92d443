"""What every scene source (adapter) yields, so long conversions keep going past one bad item and report it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from irlvla_gym.scenes.scene import Scene


@dataclass(frozen=True)
class SkippedItem:
    """An input item an adapter could not convert.

    Attributes:
        item: what was skipped (file path, log name + frame index, scene token...).
        error: one-line reason, naming the file and field where known.
    """

    item: str
    error: str

    def __str__(self) -> str:
        return f"{self.item}: {self.error}"


SourceItem = Union[Scene, SkippedItem]
"""Adapters' ``iter_scenes(...)`` yield scenes, and a :class:`SkippedItem` for each input they could not convert."""

SceneIterator = Iterator[SourceItem]
