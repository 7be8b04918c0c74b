"""``key=JSON,key=JSON`` settings of the development scripts (``--setting``, ``--compare``,
``--train``): commas inside brackets or quotes belong to the value, so lists work
(``features=[24,24,48,96,192,24],alpha=2``)."""

from __future__ import annotations

import json


def parse_settings(text: str) -> dict:
    """``'a=1,b=[1,2],c="x"'`` -> ``{"a": 1, "b": [1, 2], "c": "x"}``."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0 and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    out = {}
    for part in filter(None, (p.strip() for p in parts)):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"setting {part!r} is not key=JSON")
        out[key.strip()] = json.loads(value.strip())
    return out
