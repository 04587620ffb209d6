"""`Config`: one resolved point of a search space, frozen and content-addressed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Config(Mapping[str, Any]):
    """A read-only mapping of dimension name to value (``config["engine"]``).

    Only active dimensions are present. Its canonical JSON form (sorted keys, no spaces) is
    what is stored and hashed, so two equal configs have the same ``hash`` in every process.
    """

    __slots__ = ("_values", "_json")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: Mapping[str, Any] = _freeze(values)
        self._json = json.dumps(_thaw(self._values), sort_keys=True, separators=(",", ":"))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._json == other._json
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._json)

    def __repr__(self) -> str:
        return f"Config({self._json})"

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy."""
        return _thaw(self._values)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """The canonical JSON form."""
        return self._json

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls(json.loads(text))

    @property
    def hash(self) -> str:
        """A stable content hash (sha256 of the canonical JSON, 16 hex digits)."""
        return hashlib.sha256(self._json.encode()).hexdigest()[:16]

    def without(self, *keys: str) -> Config:
        """A copy without ``keys``: for cache keys that ignore, say, the batch size."""
        return Config({k: v for k, v in self._values.items() if k not in keys})
