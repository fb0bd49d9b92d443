"""Env rewards by name: the reward spec parsed once into a :class:`RewardSpec`, and a registry of reward factories.

A reward spec is what users pass as the env's ``reward`` argument (and ``--set reward=...`` on the command line):

* ``"epdms"``: the built-in rule-based scorer (no factory; the env scores plans itself).
* ``"<name>"`` or ``"<name>:<argument>"``: a registered reward, e.g. ``"rwm"`` (the shipped reward world model) or
  ``"rwm:<shipped name or checkpoint dir>"``; the argument is handed to the factory unparsed.
* a callable ``reward(scene, plan) -> float`` (optionally with a batched ``.score(scene, plans) -> (K,)``).

Rewards register themselves, so this core module never imports the packages that provide them: a factory is added
with :func:`register_reward` at run time, or declared as a package entry point in the group ``irlvla_gym.rewards``
(``name = "module:factory"``), which is how ``reward_models`` provides ``"rwm"`` (see ``pyproject.toml``). A factory
is called as ``factory(argument, **options)`` and returns the reward callable.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any, Callable

ENTRY_POINT_GROUP = "irlvla_gym.rewards"
BUILTIN = "epdms"
"""The rule-based scorer: the env's own reward, no factory."""

_FACTORIES: dict[str, Callable[..., Any]] = {}
_ENTRY_POINTS: dict[str, importlib.metadata.EntryPoint] | None = None


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:  # listing is a metadata scan (a few ms): once per process
        _ENTRY_POINTS = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _ENTRY_POINTS


def register_reward(name: str, factory: Callable[..., Any]) -> None:
    """Make ``reward="<name>"`` / ``"<name>:<argument>"`` build ``factory(argument, **options)`` (overrides an entry
    point of the same name)."""
    if not name or ":" in name or name == BUILTIN:
        raise ValueError(f"reward name must be non-empty, without ':' and not {BUILTIN!r}, got {name!r}")
    _FACTORIES[name] = factory


def registered_rewards() -> list[str]:
    """Every reward name a spec may use: ``"epdms"`` and the registered / entry-point names."""
    return sorted({BUILTIN, *_FACTORIES, *_entry_points()})


@dataclass(frozen=True)
class RewardSpec:
    """A parsed reward spec.

    Attributes:
        name: ``"epdms"``, a registered reward name, or ``"callable"`` for a user callable.
        argument: the text after ``"<name>:"`` (e.g. a checkpoint dir); None when absent.
        fn: the user callable (name ``"callable"``), else None.
    """

    name: str
    argument: str | None = None
    fn: Callable[..., Any] | None = None

    @property
    def is_builtin(self) -> bool:
        """True for the rule-based scorer (``"epdms"``)."""
        return self.name == BUILTIN

    @property
    def learned(self) -> bool:
        """True for anything but the rule-based scorer (a model or a user callable)."""
        return not self.is_builtin

    def __str__(self) -> str:
        if self.fn is not None:
            return getattr(self.fn, "__name__", "callable")
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def make(self, **options: Any) -> Callable[..., Any] | None:
        """The reward callable (None for ``"epdms"``: the env scores itself). ``options`` (e.g. ``cache_size``) go to
        the factory, those its signature does not name left out, so callers can offer settings every learned reward
        may or may not use."""
        if self.fn is not None:
            return self.fn
        if self.is_builtin:
            return None
        factory = _FACTORIES.get(self.name)
        if factory is None:
            factory = _entry_points()[self.name].load()
        return factory(self.argument, **_accepted(factory, options))


def _accepted(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``factory`` takes as keyword arguments (all of them if it has ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: hand everything over
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return options
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = {p.name for p in params if p.kind in named}
    return {k: v for k, v in options.items() if k in names}


def parse_reward(spec: Any, *, argument: str = "reward") -> RewardSpec:
    """The :class:`RewardSpec` of ``spec`` (a spec string, a callable or a RewardSpec); one clear error otherwise.

    Args:
        spec: what the user passed.
        argument: the name of the user-facing argument, for the error message.
    """
    if isinstance(spec, RewardSpec):
        return spec
    if callable(spec):
        return RewardSpec("callable", fn=spec)
    if isinstance(spec, str) and spec:
        name, sep, arg = spec.partition(":")
        if name in registered_rewards() and not (sep and not arg) and not (name == BUILTIN and sep):
            return RewardSpec(name, arg if sep else None)
    names = ", ".join(f"'{n}'" for n in registered_rewards())
    raise ValueError(f"{argument} must be one of {names} (optionally '<name>:<argument>', e.g. "
                     f"'rwm:<checkpoint dir>') or a callable (scene, plan) -> float, got {spec!r}")


def make_reward(spec: Any, **options: Any) -> Callable[..., Any] | None:
    """Parse ``spec`` and build its reward: None for ``"epdms"``, else the reward callable."""
    return parse_reward(spec).make(**options)


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "RewardSpec", "make_reward", "parse_reward", "register_reward",
           "registered_rewards"]
