"""What every scene source (adapter) yields, so long conversions keep going past one bad item and report it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Union

from irlvla_gym.scenes.scene import Scene


@dataclass(frozen=True)
class SkippedItem:
    """An input item an adapter could not convert.

    Attributes:
        item: what was skipped (file path, log name + frame index, scene token...).
        error: one-line reason, naming the file and field where known.
        reason: short category shared by like items ('ego not valid through the window', ...) so a build report
            can count them; '' lets :func:`skip_reason` derive one from ``error``. Not compared, not stored (a
            store's manifest keeps item and error).
    """

    item: str
    error: str
    reason: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.item}: {self.error}"


SourceItem = Union[Scene, SkippedItem]
"""Adapters' ``iter_scenes(...)`` yield scenes, and a :class:`SkippedItem` for each input they could not convert."""

SceneIterator = Iterator[SourceItem]

_REASON_MAX_CHARS = 90


def skip_reason(item: SkippedItem) -> str:
    """``item.reason``, else its error with the item's name, paths, quoted values and numbers taken out (so items
    that failed the same way share one reason), shortened to 90 characters."""
    if item.reason:
        return item.reason
    text = item.error.replace(item.item, "")
    text = re.sub(r"\S*/\S*", "<path>", text)  # file paths
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "<x>", text)  # quoted ids and field names
    text = re.sub(r"(?<![A-Za-z_])\d+(\.\d+)?(e[-+]?\d+)?", "#", text)  # numbers, not the 2 of 'AV2'
    text = " ".join(text.split()).strip(" :") or "no reason given"
    return text if len(text) <= _REASON_MAX_CHARS else text[: _REASON_MAX_CHARS - 3] + "..."


def skipped_by_reason(items: Iterable[SkippedItem]) -> list[tuple[str, int, SkippedItem]]:
    """(reason, count, first item) per :func:`skip_reason`, most frequent first."""
    items = list(items)
    counts = Counter(skip_reason(s) for s in items)
    first: dict[str, SkippedItem] = {}
    for s in items:
        first.setdefault(skip_reason(s), s)
    return [(reason, n, first[reason]) for reason, n in counts.most_common()]
