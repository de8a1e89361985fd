"""A closed, typed YAML decoder: YAML nodes -> frozen dataclasses, with line numbers in every error.

Unknown keys are errors (a misspelt key must never be silently ignored), and every value is checked
against the dataclass field's annotation.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that does not fit the schema; the message names the key, the file and the line."""


class InvalidAt(ValueError):
    """A dataclass's own check that can say which value is wrong: `at` is that value's path below the mapping being
    decoded (keys and list indexes), so the ConfigError names its line rather than the mapping's."""

    def __init__(self, message: str, *at: str | int) -> None:
        super().__init__(message)
        self.at = at


def _node_at(node: yaml.Node, at: tuple[str | int, ...]) -> tuple[yaml.Node, str]:
    """The node at `at` below `node` (as far as the file spells it out) and its path, like `models[2].name`."""
    label = ""
    for step in at:
        child = None
        if isinstance(step, int) and isinstance(node, yaml.SequenceNode) and step < len(node.value):
            child, name = node.value[step], f"{label}[{step}]"
        elif isinstance(step, str) and isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step), None)
            name = f"{label}.{step}" if label else step
        if child is None:
            break
        node, label = child, name
    return node, label


def _where(node: yaml.Node, source: str) -> str:
    return f"{source}:{node.start_mark.line + 1}"


def _scalar(node: yaml.Node) -> Any:
    # Re-resolve the scalar with the safe loader's rules (ints, floats, bools, null).
    return _safe_value(node)


def _safe_value(node: yaml.Node) -> Any:
    """The node's value under the safe loader; a tag it refuses (`!!python/name:...`) is a ConfigError at the node's
    line, not a traceback."""
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"unsupported YAML value {node.tag!r} at line {node.start_mark.line + 1}: {problem}") from exc


def decode(node: yaml.Node | None, cls: Any, source: str, path: str) -> Any:
    """Decode one YAML node into the annotated type `cls`; `path` names the key for messages."""
    origin = get_origin(cls)
    if origin in (Union, types.UnionType):
        options = get_args(cls)
        if node is None or (isinstance(node, yaml.ScalarNode) and _scalar(node) is None):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return decode(node, option, source, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: no allowed type fits ({'; '.join(errors)})")
    if node is None:
        raise ConfigError(f"{path}: a value is required ({source})")
    if not isinstance(node, yaml.ScalarNode) and node.tag not in yaml.SafeLoader.yaml_constructors:
        # A list or mapping under a tag the safe loader refuses (`!!python/object/apply:...`) is refused as a scalar
        # under one is (`_safe_value`), never decoded as if the tag were not there.
        raise ConfigError(f"unsupported YAML value {node.tag!r} at line {node.start_mark.line + 1}: a tag the safe "
                          "loader refuses")  # fmt: skip
    if dataclasses.is_dataclass(cls):
        return _decode_dataclass(node, cast(type, cls), source, path)
    if origin in (list, tuple) or cls in (list, tuple):
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{path}: expected a list at {_where(node, source)}")
        (item_type, *_) = get_args(cls) or (Any,)
        return tuple(decode(item, item_type, source, f"{path}[{i}]") for i, item in enumerate(node.value))
    if origin in (dict, collections.abc.Mapping) or cls is dict:
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{path}: expected a mapping at {_where(node, source)}")
        key_type, value_type = get_args(cls) or (str, Any)
        out = {}
        for key_node, value_node in node.value:
            key = decode(key_node, key_type, source, f"{path} key")
            if key in out:
                raise ConfigError(f"duplicate key {key!r} in {path} at {_where(key_node, source)}")
            out[key] = decode(value_node, value_type, source, f"{path}.{key}")
        return types.MappingProxyType(out)
    if origin is Literal:
        value = _scalar(node) if isinstance(node, yaml.ScalarNode) else None
        allowed = get_args(cls)
        if isinstance(value, bool) and node.value in allowed:
            value = node.value  # YAML 1.1 reads a bare off/on/no/yes as a boolean; here it is the word written
        if value not in allowed:
            raise ConfigError(
                f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))} at {_where(node, source)}"
            )
        return value
    if cls is Any:
        return _safe_value(node)
    if not isinstance(node, yaml.ScalarNode):
        got = "a mapping (quote a string that holds ': ')" if isinstance(node, yaml.MappingNode) else "a list"
        raise ConfigError(f"{path}: expected a {cls.__name__}, got {got} at {_where(node, source)}")
    value = _scalar(node)
    if cls is str and isinstance(value, bool) and node.style is None:
        value = node.value  # YAML 1.1 reads a bare no/on/yes as a boolean; a string field means the word (Norwegian)
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if cls in (int, float) and isinstance(value, bool) or not isinstance(value, cls):
        raise ConfigError(
            f"{path}: expected {cls.__name__}, got {type(value).__name__} {value!r} at {_where(node, source)}"
        )
    return value


def _decode_dataclass(node: yaml.Node, cls: type[T], source: str, path: str) -> T:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping at {_where(node, source)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls))}
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {path or 'the top level'} at {_where(key_node, source)}{hint}; "
                f"allowed: {', '.join(sorted(fields))}"
            )
        if key in values:
            raise ConfigError(f"duplicate key {key!r} in {path or 'the top level'} at {_where(key_node, source)}")
        values[key] = decode(value_node, hints[key], source, f"{path}.{key}" if path else key)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path or 'the top level'}: missing required key {name!r} ({_where(node, source)})")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        target, below = _node_at(node, exc.at if isinstance(exc, InvalidAt) else ())
        where = ".".join(p for p in (path, below) if p) or "the top level"
        raise ConfigError(f"{where} at {_where(target, source)}: {exc}") from exc


def load_yaml(text: str, cls: type[T], source: str = "<config>") -> T:
    """Parse YAML text and decode it into `cls`, raising ConfigError with a line number on any mismatch."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if node is None:
        raise ConfigError(f"{source}: the file is empty")
    return typing.cast(T, decode(node, cls, source, ""))
