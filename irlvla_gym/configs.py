"""Config dataclasses <-> command lines, and named presets: every setting is written once, as a dataclass field.

**Flags from fields** (CleanRL / tyro style). :func:`add_arguments` adds one argparse argument per field of a config
dataclass and :func:`from_args` builds the dataclass back from the parsed namespace:

* flag: ``--<field name>`` with ``_`` -> ``-``; a ``bool`` field defaulting to True gets ``--<name>`` and
  ``--no-<name>``, one defaulting to False is switched on by ``--<name>``;
* type from the annotation: ``int``, ``float``, ``str``, :class:`~pathlib.Path`, ``X | None`` (default None),
  ``bool``, ``Literal[...]`` (choices), ``tuple[X, ...]`` / ``list[X]`` / ``Sequence[X]`` (one or more values),
  ``tuple[X, X]`` (exactly two), ``dict`` (a JSON object); a field whose type is itself a dataclass contributes
  its own fields (flattened: ``--epochs``, not ``--train.epochs``);
* default: the field's default (or ``default_factory()``);
* help: the field's docstring, i.e. the string literal right after the field in the class body, read with
  :mod:`ast`; ``(default: X)`` is appended unless the text already speaks of a default.

Field metadata (``dataclasses.field(..., metadata={...})`` or :func:`option`) adjusts one argument: ``flag`` (the
option string(s) to use instead, which keeps an existing spelling such as ``--renders`` or ``--no-eval``), ``aliases``
(further spellings), ``renamed`` (old spellings that now stop with an error naming the new one), ``type`` (a
``str -> value`` converter replacing the annotation's), ``nargs``, ``choices``, ``metavar``, ``required``,
``action`` (``"append"``), ``help``, ``positional``, and ``cli=False`` (no argument; the field keeps its default).

**Presets.** :class:`Presets` is the one preset mechanism of the project: named sets of overrides (nested mappings)
of one config, applied by deep merge onto a mapping (the baselines' yaml files) or onto a dataclass instance (the
pipeline budgets, the reward-hacking experiment). ``--preset NAME`` picks one; an unknown name fails with the list
of known ones.

Standard library only (``irlvla --help`` builds every parser; nothing heavy may load).
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import copy
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from pathlib import PurePath
from typing import Any, Iterator, Literal, Mapping, MutableMapping, TypeVar, Union

T = TypeVar("T")
_MISSING = dataclasses.MISSING
_OPTION_KEYS = ("flag", "aliases", "renamed", "type", "nargs", "choices", "metavar", "required", "action", "help",
                "positional", "cli")


def option(default: Any = _MISSING, *, default_factory: Any = _MISSING, **cli: Any) -> Any:
    """``dataclasses.field`` with CLI metadata (keys: see the module docs), e.g.
    ``num_renders: int = option(6, flag="--renders")``."""
    unknown = sorted(set(cli) - set(_OPTION_KEYS))
    if unknown:
        raise TypeError(f"unknown option metadata {unknown}; valid: {list(_OPTION_KEYS)}")
    return dataclasses.field(default=default, default_factory=default_factory, metadata=cli)


# ---- converters for ``option(type=...)`` --------------------------------------------------------------------------


def count_or_all(text: str) -> int | None:
    """A count where 0 means "all" (None), e.g. ``--num-scenes 0``."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: all), got {value}")
    return value or None


def float_or_none(text: str) -> float | None:
    """A float, or ``none`` for None (e.g. ``--safety-margin none``: no margin)."""
    return None if text.strip().lower() == "none" else float(text)


def comma_list(text: str) -> tuple[str, ...]:
    """``"a,b, c"`` -> ``("a", "b", "c")`` (empty items dropped)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line, e.g. ``'{"hidden": 96}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


# ---- reading a config class ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}``: the string literal right after each field in the class body (base classes
    included; a subclass's text wins). Classes without readable source give ``{}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(X, True) for ``X | None``; (tp, False) otherwise."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _nested(tp: Any) -> type | None:
    """The dataclass of a nested-config field (flattened into the parent's flags), else None."""
    tp, _ = _strip_optional(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _scalar(tp: Any, where: str) -> dict[str, Any]:
    """argparse ``type`` / ``choices`` of one value of annotation ``tp``."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        return {"type": type(choices[0]), "choices": choices}
    if tp in (int, float, str) or (isinstance(tp, type) and issubclass(tp, PurePath)):
        return {"type": tp}
    if tp is Any:
        return {}
    raise TypeError(f"{where}: no command-line form for type {tp!r}; give option(type=...) or option(cli=False)")


def _value_spec(tp: Any, where: str) -> dict[str, Any]:
    """argparse keyword arguments (type, nargs, choices) of a field annotated ``tp`` (Optional stripped)."""
    tp, _ = _strip_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return {"type": json_object}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"nargs": "+", **_scalar(args[0], where)}
        if args and all(a == args[0] for a in args):
            return {"nargs": len(args), **_scalar(args[0], where)}
    if origin in (list, collections.abc.Sequence):
        return {"nargs": "+", **_scalar(args[0] if args else Any, where)}
    return _scalar(tp, where)


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


# ---- dataclass -> argparse ------------------------------------------------------------------------------------------


class _Renamed(argparse.Action):
    """An old spelling of a renamed flag: stops with an error that names the new one."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="*", help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed to {self.new}")


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, exclude: tuple[str, ...] = (),
                  prefix: str = "") -> None:
    """Add one argument per field of dataclass ``cls`` to ``parser`` (or an argument group); see the module docs.

    Args:
        exclude: field names left out (they keep their defaults in :func:`from_args`).
        prefix: dest prefix of nested configs (``"train."``); set by the recursion.
    """
    docs, hints = field_docs(cls), _hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not f.init or f.name in exclude or meta.get("cli", True) is False:
            continue
        nested = _nested(hints[f.name]) if "type" not in meta else None
        if nested is not None:
            add_arguments(parser, nested, prefix=f"{prefix}{f.name}.")
            continue
        _add_field(parser, cls, f, hints[f.name], docs.get(f.name, ""), prefix)


def _add_field(parser: Any, cls: type, f: dataclasses.Field, tp: Any, doc: str, prefix: str) -> None:
    meta, default, dest = f.metadata, _default(f), prefix + f.name
    where = f"{cls.__name__}.{f.name}"
    if "flag" in meta:  # an existing spelling, kept as it is
        flags = [meta["flag"]] if isinstance(meta["flag"], str) else list(meta["flag"])
    else:
        flags = ["--" + f.name.replace("_", "-")]
    flags += list(meta.get("aliases", ()))
    kwargs: dict[str, Any] = {}
    if tp is bool and "type" not in meta:  # on by default: --name / --no-name; off by default: --name
        kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
    else:
        kwargs.update({"type": meta["type"]} if "type" in meta else _value_spec(tp, where))
        for key in ("nargs", "choices", "metavar", "action"):
            if key in meta:
                kwargs[key] = meta[key]
        if kwargs.get("action") == "append":
            kwargs.pop("nargs", None)
    text = " ".join(meta.get("help", doc).split()).replace("%", "%%")
    required = bool(meta.get("required", default is _MISSING))
    if not required and "default" not in text.lower() and default is not None and default is not _MISSING \
            and not (tp is bool and default is False) and default not in ((), [], {}):
        text = f"{text} (default: {_show(default)})" if text else f"default: {_show(default)}"
    if kwargs.get("action") == "append":
        default = None  # argparse appends to its default: start from None, from_args puts the field default back
    if meta.get("positional"):
        kwargs.pop("metavar", None)
        parser.add_argument(dest, help=text or None, **({} if required else {"nargs": "?", "default": default}),
                            **kwargs)
    else:
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if "metavar" not in kwargs and tp is not bool and "choices" not in kwargs:
            kwargs["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()  # argparse's own choice
        parser.add_argument(*flags, dest=dest, help=text or None, **kwargs)
    for old in meta.get("renamed", ()):
        parser.add_argument(old, action=_Renamed, new=flags[0])


def from_args(cls: type[T], namespace: argparse.Namespace | Mapping[str, Any], *, prefix: str = "",
              **overrides: Any) -> T:
    """Build ``cls`` from a parsed namespace (fields without an argument keep their defaults; ``overrides`` win).
    Values given as lists for tuple fields become tuples."""
    ns = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        nested = _nested(hints[f.name]) if "type" not in f.metadata else None
        if nested is not None and f.metadata.get("cli", True) is not False:
            values[f.name] = from_args(nested, ns, prefix=f"{prefix}{f.name}.")
            continue
        dest = prefix + f.name
        if dest not in ns:
            continue
        value = ns[dest]
        if value is None and f.metadata.get("action") == "append":
            continue  # nothing given: the field's default
        if isinstance(value, list) and typing.get_origin(_strip_optional(hints[f.name])[0]) is tuple:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def from_mapping(cls: type[T], values: Mapping[str, Any] | T, *, owner: str | None = None) -> T:
    """Build dataclass ``cls`` from a (yaml / json) mapping: nested dataclass fields from nested mappings; unknown
    keys raise ValueError naming ``owner`` and the valid keys. An instance of ``cls`` is returned as it is."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(f"{owner or cls.__name__} must be a mapping, got {values!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {owner or cls.__name__} key(s) {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        value, nested = values[name], _nested(hints[name])
        if nested is not None and isinstance(value, Mapping):
            value = from_mapping(nested, value, owner=f"{owner}.{name}" if owner else name)
        kwargs[name] = _number(copy.deepcopy(value), hints[name], f"{owner}.{name}" if owner else name)
    return cls(**kwargs)


def _number(value: Any, hint: Any, where: str) -> Any:
    """A numeric string for an ``int`` / ``float`` field as that number (YAML 1.1 reads ``1e-4``, without a dot, as
    a string, and ``--set ppo.learning_rate=1e-4`` must mean the number); a whole float for an ``int`` field as the
    int, a fractional one an error. Other values pass unchanged."""
    tp, _ = _strip_optional(hint)
    if tp is int and isinstance(value, float):
        number = value
    elif not isinstance(value, str) or tp not in (int, float):
        return value
    else:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        if not number.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    return number


# ---- presets --------------------------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in (nested mappings merge, everything else is replaced); copies."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_into(obj: T, update: Mapping[str, Any]) -> T:
    """A copy of dataclass ``obj`` with ``update`` merged in: nested dataclasses and mappings merge, other fields are
    replaced (``dataclasses.replace``: ``__post_init__`` validates the result). Unknown names raise ValueError."""
    names = {f.name for f in dataclasses.fields(obj) if f.init}
    unknown = sorted(set(update) - names)
    if unknown:
        raise ValueError(f"unknown {type(obj).__name__} field(s) {unknown}; valid: {sorted(names)}")
    changes = {}
    for key, value in update.items():
        current = getattr(obj, key)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current) and not isinstance(current, type):
            changes[key] = merge_into(current, value)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            changes[key] = deep_merge(current, value)
        else:
            changes[key] = copy.deepcopy(value)
    return dataclasses.replace(obj, **changes)


class Presets(MutableMapping[str, Mapping[str, Any]]):
    """Named presets of one config: ``name -> overrides`` (a nested mapping), applied by deep merge.

    Args:
        owner: what the presets belong to, for error messages (``"pipeline"``, ``"ppo-vla-rwm.yaml"``, ...).
        presets: the initial ``{name: overrides}``; more can be added like dict items.
    """

    def __init__(self, owner: str, presets: Mapping[str, Mapping[str, Any] | None] | None = None):
        self.owner = owner
        self._items: dict[str, Mapping[str, Any]] = {}
        for name, overrides in (presets or {}).items():
            self[name] = overrides

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._items[name]

    def __setitem__(self, name: str, overrides: Mapping[str, Any] | None) -> None:
        if overrides is not None and not isinstance(overrides, Mapping):
            raise TypeError(f"preset {name!r} of {self.owner} must be a mapping of overrides, got "
                            f"{type(overrides).__name__}")
        self._items[str(name)] = dict(overrides or {})

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Presets({self.owner!r}, {sorted(self._items)})"

    def resolve(self, name: str) -> Mapping[str, Any]:
        """The overrides of preset ``name``; ValueError naming the known presets otherwise."""
        if name not in self._items:
            raise ValueError(f"{self.owner} has no preset {name!r} (has {sorted(self._items)})")
        return self._items[name]

    def apply(self, base: T, name: str | None) -> T:
        """``base`` (a mapping or a dataclass instance) with preset ``name`` merged in; None: ``base`` unchanged."""
        if name is None:
            return base
        overrides = self.resolve(name)
        if dataclasses.is_dataclass(base) and not isinstance(base, type):
            return merge_into(base, overrides)
        return deep_merge(base, overrides)  # type: ignore[return-value]


__all__ = ["Presets", "add_arguments", "comma_list", "count_or_all", "deep_merge", "field_docs", "float_or_none",
           "from_args", "from_mapping", "json_object", "merge_into", "option"]
