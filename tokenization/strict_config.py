"""One strict dict -> dataclass loader for every config the project reads (stage YAMLs, model
configs, filter rules).

It lives on the lowest floor so `filtering/` and `training/` share it. Unknown keys, values
of the wrong type and missing required keys (fields without a default) raise `ConfigError`, a `UserError` whose message
names the dotted key and the file, so a typo stops the job on the driver in one line:

    >>> @dataclass
    ... class Optim:
    ...     lr: float = 1e-4
    >>> load_dataclass(Optim, {"lrr": 1}, where="stage1.yaml", prefix="optim")
    Traceback (most recent call last):
    ConfigError: stage1.yaml: optim.lrr: unknown key (known: lr)

Nested dataclass fields are built recursively; YAML 1.1 strings such as `1e-4` become
numbers where the field is a number; lists become tuples where the field is a tuple.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from tokenization.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config value the user must fix; the message names the file and the dotted key."""


def read_yaml_mapping(path: str, what: str = "config keys") -> dict:
    """A YAML file's top-level mapping; ConfigError in one line when it cannot be read, is not YAML or is not a
    mapping (an empty file is an empty mapping)."""
    import yaml

    try:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}")
    return d


def config_error(where: str, key: str, problem: str) -> ConfigError:
    """`<where>: <key>: <problem>` (either part left out when empty)."""
    return ConfigError(": ".join(p for p in (where, key, problem) if p))


def load_dataclass(cls: type[T], d: Any, where: str = "", prefix: str = "", noun: str = "key") -> T:
    """Build dataclass `cls` from mapping `d`, strictly.

    Args:
        cls: the dataclass; nested dataclass fields are loaded from nested mappings.
        d: the mapping (e.g. a YAML section); None counts as empty.
        where: the file the mapping came from, for messages.
        prefix: the dotted key of `d` in that file (e.g. "optim"), for messages.
        noun: what a key is called in messages ("rule" for filter rules).
    Returns:
        An instance of `cls`.
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise config_error(where, prefix, f"expected a mapping of {cls.__name__} keys, got {type(d).__name__} {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in d:
        if key not in fields:
            raise config_error(where, _join(prefix, str(key)), f"unknown {noun} (known: {', '.join(sorted(fields))})")
    kwargs = {name: convert(hints[name], value, where, _join(prefix, name)) for name, value in d.items()}
    for name, f in fields.items():  # e.g. model sizes: they have no default on purpose
        if name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise config_error(where, _join(prefix, name), "missing (no default for it: set it, or use a preset)")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a dataclass's own __post_init__ check
        raise config_error(where, prefix, str(exc)) from None


def convert(tp: Any, value: Any, where: str, key: str) -> Any:
    """`value` checked against (and where lossless, converted to) type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for i, option in enumerate(options):
            try:
                return convert(option, value, where, key)
            except ConfigError:
                if i == len(options) - 1:
                    raise
    if dataclasses.is_dataclass(tp):
        return load_dataclass(tp, value, where, key)
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise config_error(where, key, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise config_error(where, key, f"expected a mapping, got {value!r}")
        return dict(value)
    return _scalar(tp, value, where, key)


def _scalar(tp: Any, value: Any, where: str, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise config_error(where, key, f"expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                value = float(value)
            except ValueError:
                raise config_error(where, key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise config_error(where, key, f"expected a number, got {value!r}")
        if tp is int:
            if float(value) != int(value):
                raise config_error(where, key, f"expected a whole number, got {value!r}")
            return int(value)
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise config_error(where, key, f"expected a string, got {value!r}")
    if value is None:
        raise config_error(where, key, "missing value")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
