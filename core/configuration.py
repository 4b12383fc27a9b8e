"""Strict loading of typed dataclass configs from YAML and dotted command-line overrides.

Every config is a dataclass whose fields carry a one-line ``doc`` in their metadata
(``field(default=..., metadata={"doc": "..."})``, see :func:`doc_field`). Loading is
strict: an unknown key names the valid ones, a wrong type names the expected one.
A field whose type depends on a ``type`` key (the action head) declares a
``polymorphic`` resolver in its metadata: ``type name -> config class``.
"""

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union

import yaml

from core.errors import MissingResourceError, UserError

C = TypeVar("C")

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(UserError, ValueError):
    """A config that cannot be loaded or is invalid; the message says what to fix."""


def doc_field(default: Any = dataclasses.MISSING, doc: str = "", default_factory: Any = dataclasses.MISSING,
              polymorphic: Callable[[str], type] | None = None, choices: Callable[[], list[str]] | None = None) -> Any:
    """A dataclass field with a one-line doc (shown by ``train.py --help``).

    ``polymorphic`` maps the section's ``type`` to its config class; ``choices`` lists the types.
    """
    metadata = {"doc": doc}
    if polymorphic is not None:
        metadata["polymorphic"] = polymorphic
        metadata["choices"] = choices
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in that type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `3e-4` as a string; accept numeric strings for float fields.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan in YAML: no setting of ours means anything with them
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {_type_name(tp)}")


def _unknown_key_message(cls: type, key: str, path: str, valid: list[str]) -> str:
    where = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{where}' in {cls.__name__}.{hint} Valid keys: {', '.join(valid)}"


def from_dict(cls: type[C], data: dict, path: str = "") -> C:
    """Build dataclass ``cls`` from a plain mapping, strictly (see module doc)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(cls, key, path, list(fields)))
        where = f"{path}.{key}" if path else key
        resolver = fields[key].metadata.get("polymorphic")
        if resolver is not None:
            if not isinstance(value, dict) or "type" not in value:
                raise ConfigError(f"{where}: expected a mapping with a 'type' key")
            try:
                target = resolver(value["type"])
            except KeyError as error:
                raise ConfigError(f"{where}.type: {error.args[0]}") from None
            kwargs[key] = from_dict(target, value, where)
        else:
            kwargs[key] = _convert(value, hints[key], where)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if not path or str(error).startswith(f"{path}."):  # the message already names the key
            raise
        raise ConfigError(f"{path or cls.__name__}: {error}") from None
    except TypeError as error:  # a required field was not given
        raise ConfigError(f"{path or cls.__name__}: {error}") from None


def to_dict(config: Any) -> dict:
    """The resolved config as plain data (JSON/YAML ready)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> ``(["train", "lr"], "3e-4")``; values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw != "" else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override '{text}': the value is not valid YAML ({_yaml_problem(error)}); "
                          "quote it, e.g. 'env.tasks=[reach-v3, push-v3]'") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a raw config mapping (before typing).

    Changing a polymorphic section's ``type`` (``action_head.type=regression``) resets that
    section to the new type's defaults, since the old type's options mean nothing to it. Type
    changes apply first, whatever their place on the command line, so the reset clears what the
    file said and never an option given beside it (``action_head.denoiser=mlp action_head.type=flow``).
    """
    data = dict(data)
    parsed = [parse_override(text) for text in overrides]
    for keys, value in sorted(parsed, key=lambda override: override[0][-1] != "type"):  # stable: order kept otherwise
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            child = dict(child) if isinstance(child, dict) else {}
            node[key] = child
            node = child
        if keys[-1] == "type" and node.get("type") not in (None, value):
            node.clear()
        node[keys[-1]] = value
    return data


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key '{key}' appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                  "keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + str(getattr(error, "problem", None) or error).strip()


def load_yaml(path: str | Path) -> dict:
    """A config file as a mapping; syntax errors, duplicate keys and empty files are refused."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; give a YAML file (see configs/)")
    if not path.is_file():
        raise MissingResourceError(f"config file {path} does not exist (see configs/ for the shipped ones)")
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({_yaml_problem(error)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; give a YAML config (see configs/)") from None
    if data is None:
        raise ConfigError(f"{path} is empty; start from one of configs/*.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (env:, policy:, train:, ...)")
    return data


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field, ``section.key (type, default): doc``, for ``--help`` output."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if f.metadata.get("choices") is not None:  # one block of options per type
            lines.append(f"{name}: {f.metadata.get('doc', '')}; {name}.type: {' | '.join(f.metadata['choices']())}")
            for choice in f.metadata["choices"]():
                lines.append(f"  [{name}.type={choice}]")
                lines.extend(f"    {line}" for line in describe(f.metadata["polymorphic"](choice), f"{name}.")
                             if not line.startswith(f"{name}.type "))
            continue
        if dataclasses.is_dataclass(tp):
            lines.append(f"{name}: {f.metadata.get('doc', '')}")
            lines.extend(describe(tp, name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"{name} ({_type_name(tp)}, default {default!r}): {f.metadata.get('doc', '')}")
    return lines
