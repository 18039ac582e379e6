"""nginx's value syntax shared by every nginx.conf reader: times and sizes (pure).

Follows ngx_parse_time / ngx_parse_size as the nginx docs describe "Measurement units":
times are a run of `N[ms|s|m|h|d]` parts (no unit = seconds), sizes `N[k|m|g]`.
"""

from __future__ import annotations

import re

_TIME = re.compile(r"(\d+)(ms|s|m|h|d)?")
_SIZE = re.compile(r"(\d+)([kKmMgG])?")
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, None: 1}


def parse_time(text: str) -> float | None:
    """nginx time: `500ms`, `30s`, `1m`, `2h`, `1m30s`, plain seconds; None if malformed."""
    total = 0.0
    pos = 0
    for m in _TIME.finditer(text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _TIME_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and text else None


def parse_size(text: str) -> int | None:
    """nginx size: `1m`, `8k`, plain bytes; None if malformed."""
    m = _SIZE.fullmatch(text)
    if not m:
        return None
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _SIZE_UNITS[unit]
