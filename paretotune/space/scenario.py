"""Scenarios: what a trial's timing means (MLPerf's names, one JSON form each).

`SingleStream` is today's closed loop of calls at one batch size (the timing harness). `Server`
asks how many requests per second the engine behind the dynamic batcher sustains with its p99
within a bound; `Offline` asks for its throughput with every request queued at once. Both are
driven by MLPerf LoadGen (`serving.harness`). Each validates itself when built, so a spec with a
bad scenario is refused at creation, never in the middle of a study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from paretotune.errors import ConfigError

DEFAULT_SERVER_BUDGET_S = 60.0
DEFAULT_OFFLINE_BUDGET_S = 15.0
DEFAULT_TOLERANCE = 0.05
MIN_BUDGET_S = 1.0  # one probe and one LoadGen run need about this much


def _number(kind: str, field: str, value: Any) -> float:
    """`value` as a finite float, or a ConfigError naming the scenario field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{kind} scenario: {field} must be a number, got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{kind} scenario: {field} must be finite, got {value!r}")
    return number


def _budget(kind: str, value: Any) -> float:
    budget = _number(kind, "budget_s", value)
    if budget < MIN_BUDGET_S:
        raise ConfigError(
            f"{kind} scenario: budget_s must be >= {MIN_BUDGET_S:g} (seconds of LoadGen runs "
            f"per trial), got {value!r}"
        )
    return budget


@dataclass(frozen=True)
class SingleStream:
    """One batch at a time, back to back: the timing harness's windows (the default)."""

    kind: ClassVar[str] = "single_stream"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SingleStream:
        _check_keys(cls.kind, data, ())
        return cls()


@dataclass(frozen=True)
class Server:
    """Poisson arrivals; the result is the highest target QPS LoadGen judges VALID at the bound.

    p99_ms: the bound on the 99th percentile of request latency (issue to completion), in ms.
    budget_s: seconds of LoadGen runs one trial may spend on its peak search.
    tolerance: the search stops when the highest VALID QPS is known within this fraction.
    """

    p99_ms: float
    budget_s: float = DEFAULT_SERVER_BUDGET_S
    tolerance: float = DEFAULT_TOLERANCE

    kind: ClassVar[str] = "server"

    def __post_init__(self) -> None:
        p99 = _number(self.kind, "p99_ms", self.p99_ms)
        if p99 <= 0:
            raise ConfigError(
                f"server scenario: p99_ms must be > 0 (the latency bound in milliseconds), "
                f"got {self.p99_ms!r}"
            )
        tolerance = _number(self.kind, "tolerance", self.tolerance)
        if not 0.0 < tolerance < 1.0:
            raise ConfigError(
                f"server scenario: tolerance must be in (0, 1) (e.g. 0.05 for 5%), "
                f"got {self.tolerance!r}"
            )
        object.__setattr__(self, "p99_ms", p99)
        object.__setattr__(self, "budget_s", _budget(self.kind, self.budget_s))
        object.__setattr__(self, "tolerance", tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "p99_ms": self.p99_ms,
            "budget_s": self.budget_s,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Server:
        _check_keys(cls.kind, data, ("p99_ms", "budget_s", "tolerance"))
        if "p99_ms" not in data:
            raise ConfigError(
                "server scenario: p99_ms is required (the p99 latency bound in ms), "
                f"got keys {sorted(data)}"
            )
        return cls(
            p99_ms=data["p99_ms"],
            budget_s=data.get("budget_s", DEFAULT_SERVER_BUDGET_S),
            tolerance=data.get("tolerance", DEFAULT_TOLERANCE),
        )


@dataclass(frozen=True)
class Offline:
    """Every sample issued at once; the result is LoadGen's samples per second.

    budget_s: seconds of LoadGen runs one trial may spend (a short probe, then the timed run).
    """

    budget_s: float = DEFAULT_OFFLINE_BUDGET_S

    kind: ClassVar[str] = "offline"

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget_s", _budget(self.kind, self.budget_s))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "budget_s": self.budget_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Offline:
        _check_keys(cls.kind, data, ("budget_s",))
        return cls(budget_s=data.get("budget_s", DEFAULT_OFFLINE_BUDGET_S))


Scenario = SingleStream | Server | Offline
SCENARIOS: dict[str, type[SingleStream] | type[Server] | type[Offline]] = {
    SingleStream.kind: SingleStream,
    Server.kind: Server,
    Offline.kind: Offline,
}
SCENARIO_KINDS = tuple(SCENARIOS)


def _check_keys(kind: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - {"kind", *allowed})
    if unknown:
        raise ConfigError(
            f"{kind} scenario: unknown key(s) {unknown}; allowed: {['kind', *allowed]}"
        )


def scenario_from_dict(data: Mapping[str, Any] | Scenario | None) -> Scenario:
    """A scenario from its JSON form ({"kind": "server", "p99_ms": 25}); None is single_stream."""
    if data is None:
        return SingleStream()
    if isinstance(data, (SingleStream, Server, Offline)):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"scenario must be a mapping such as {{kind: server, p99_ms: 25}}, "
            f"got {data!r} ({type(data).__name__})"
        )
    kind = data.get("kind", SingleStream.kind)
    cls = SCENARIOS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"scenario kind must be one of {list(SCENARIO_KINDS)}, got {kind!r}")
    return cls.from_dict(data)
