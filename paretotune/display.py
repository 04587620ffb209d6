"""How a value is shown in a table cell, the same in the CLI's tables and the HTML report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def format_value(value: Any, *, mapping: str = "json") -> str:
    """A cell: floats to 4 significant digits, booleans lower-case, None empty. A mapping (a
    per-layer precision, say) as sorted JSON (``mapping="json"``) or as value counts such as
    ``fp32:3/int8:5`` (``mapping="counts"``, for narrow terminal columns)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        if mapping == "counts":
            counts: dict[str, int] = {}
            for x in value.values():
                counts[str(x)] = counts.get(str(x), 0) + 1
            return "/".join(f"{k}:{n}" for k, n in sorted(counts.items()))
        return json.dumps(dict(value), sort_keys=True)
    return str(value)
