"""The normalised keepalived model as plain data: a JSON-able dict and a readable text form.

Key order is the model's field order and every container is a list or dict, so the
output is deterministic and suitable for golden files. Source locations are left
out (they are not configuration), addresses become strings, payload bytes hex, and a
checker becomes one flat dict opening with its `type` (TCP_CHECK, HTTP_GET, ...).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from hakeeper.conf.model import CheckerCommon, KeepalivedConfig

__all__ = ["dump_config", "dump_json", "dump_text", "to_data"]

_SKIP = frozenset({"loc", "keyword_locs"})


def to_data(obj: Any) -> Any:
    """Convert a model object (or part of one) to JSON-able data."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple | list):
        return [to_data(x) for x in obj]
    if isinstance(
        obj,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network,
    ):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass(obj)
    raise TypeError(f"cannot dump {type(obj).__name__}")


def _dataclass(obj: Any) -> dict[str, Any]:
    fields = [f.name for f in dataclasses.fields(obj) if f.name not in _SKIP]
    out: dict[str, Any] = {}
    if "kind" in fields:  # a checker: flat, opening with its type
        out["type"] = obj.kind
        fields.remove("kind")
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, CheckerCommon):
            out.update(_dataclass(value))
        else:
            out[name] = to_data(value)
    return out


def dump_config(config: KeepalivedConfig) -> dict[str, Any]:
    return _dataclass(config)


def dump_json(config: KeepalivedConfig) -> str:
    return json.dumps(dump_config(config), indent=2, ensure_ascii=False) + "\n"


def dump_text(config: KeepalivedConfig) -> str:
    """An indented, YAML-like rendering; empty and unset values are left out."""
    lines: list[str] = []
    _text(dump_config(config), 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return " ".join(_scalar(v) for v in value)
    return str(value)


def _is_scalar_list(value: list[Any]) -> bool:
    return all(not isinstance(v, dict | list) for v in value) or all(
        isinstance(v, list) and all(not isinstance(x, dict | list) for x in v) for v in value
    )


def _text(data: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in data.items():
        if value is None or (isinstance(value, list | dict) and not value):
            continue
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            _text(value, depth + 1, lines)
        elif isinstance(value, list) and not _is_scalar_list(value):
            lines.append(f"{pad}{key}:")
            for item in value:
                if isinstance(item, dict):
                    head = _item_head(item)
                    lines.append(f"{pad}  - {head}")
                    _text({k: v for k, v in item.items() if k not in _HEAD_KEYS}, depth + 2, lines)
                else:
                    lines.append(f"{pad}  - {_scalar(item)}")
        elif isinstance(value, list) and value and isinstance(value[0], list):
            lines.append(f"{pad}{key}: " + ", ".join("-".join(map(_scalar, v)) for v in value))
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")


_HEAD_KEYS = ("type", "name", "ip", "address", "path")


def _item_head(item: dict[str, Any]) -> str:
    parts = [f"{k} {_scalar(item[k])}" for k in _HEAD_KEYS if item.get(k) is not None]
    return ", ".join(parts) if parts else ""
