"""Scenarios and batcher settings: validation with clear errors, JSON round trips."""

from __future__ import annotations

import json

import pytest

from paretotune.errors import ConfigError
from paretotune.evaluators.serving import (
    INSTALL_LINE,
    SCENARIO_KINDS,
    BatcherConfig,
    Offline,
    Server,
    SingleStream,
    harness,
    require_loadgen,
    scenario_from_dict,
)


@pytest.mark.parametrize(
    "scenario",
    [SingleStream(), Server(p99_ms=25), Server(p99_ms=2.5, budget_s=30, tolerance=0.1), Offline()],
)
def test_scenarios_round_trip_through_json(scenario) -> None:
    data = json.loads(json.dumps(scenario.to_dict()))
    assert scenario_from_dict(data) == scenario
    assert data["kind"] in SCENARIO_KINDS


def test_default_scenario_is_single_stream() -> None:
    assert scenario_from_dict(None) == SingleStream()
    assert scenario_from_dict({}) == SingleStream()


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), "25", True, None])
def test_server_p99_must_be_a_positive_number(bad) -> None:
    with pytest.raises(ConfigError, match="p99_ms") as info:
        Server(p99_ms=bad)
    assert repr(bad) in str(info.value)


def test_server_p99_zero_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"p99_ms must be > 0 .* got 0"):
        scenario_from_dict({"kind": "server", "p99_ms": 0})


def test_server_needs_its_bound() -> None:
    with pytest.raises(ConfigError, match="p99_ms is required"):
        scenario_from_dict({"kind": "server"})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "server", "p99_ms": 25, "budget_s": 0.5}, "budget_s"),
        ({"kind": "server", "p99_ms": 25, "tolerance": 0}, "tolerance"),
        ({"kind": "server", "p99_ms": 25, "tolerance": 1.5}, "tolerance"),
        ({"kind": "offline", "budget_s": -3}, "budget_s"),
    ],
)
def test_other_fields_are_checked(data, field) -> None:
    with pytest.raises(ConfigError, match=field):
        scenario_from_dict(data)


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict({"kind": "multi_stream"})
    message = str(info.value)
    assert "'multi_stream'" in message
    for kind in ("single_stream", "server", "offline"):
        assert kind in message


def test_unknown_keys_are_refused_not_dropped() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['p99'\]"):
        scenario_from_dict({"kind": "server", "p99_ms": 25, "p99": 10})
    with pytest.raises(ConfigError, match="unknown key"):
        scenario_from_dict({"kind": "single_stream", "p99_ms": 25})


def test_a_scenario_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="scenario must be a mapping"):
        scenario_from_dict("server")  # type: ignore[arg-type]


def test_batcher_round_trips_and_sorts_preferred_sizes() -> None:
    config = BatcherConfig(
        max_batch_size=16, preferred_batch_sizes=[8, 4], max_queue_delay_us=500, instances=2
    )
    assert config.preferred_batch_sizes == (4, 8)
    data = json.loads(json.dumps(config.to_dict()))
    assert BatcherConfig.from_dict(data) == config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
        ({"instances": 0}, "instances"),
        ({"max_batch_size": 4, "preferred_batch_sizes": (8,)}, "exceeds max_batch_size 4"),
        ({"max_batch_size": 4, "preferred_batch_sizes": (2, 2)}, "must not repeat"),
        ({"max_batch_size": 4, "preferred_batch_sizes": "4"}, "list of integers"),
    ],
)
def test_batcher_validates_itself(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=field):
        BatcherConfig(**kwargs)


def test_batcher_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['delay_us'\]"):
        BatcherConfig.from_dict({"max_batch_size": 4, "delay_us": 100})


def test_batch_rule_is_tritons() -> None:
    config = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=1000)
    assert config.batch_size_for(0, 1e9) == 0
    assert config.batch_size_for(3, 10) == 0  # no preferred size yet: wait
    assert config.batch_size_for(3, 1000) == 3  # the oldest waited the delay: run what is there
    assert config.batch_size_for(5, 0) == 4  # the largest preferred size the queue fills
    assert config.batch_size_for(20, 0) == 8
    greedy = BatcherConfig(max_batch_size=8)  # no preferred sizes, no delay: run what is there
    assert greedy.batch_size_for(3, 0) == 3
    assert greedy.batch_size_for(20, 0) == 8
    ones = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(1,))
    assert ones.batch_size_for(20, 0) == 1


def test_require_loadgen_refuses_with_the_install_line(monkeypatch) -> None:
    monkeypatch.setattr(harness, "loadgen_problem", lambda: "mlperf_loadgen is not importable")
    with pytest.raises(ConfigError) as info:
        require_loadgen(Server(p99_ms=25))
    assert INSTALL_LINE in str(info.value)
    assert "'server'" in str(info.value)
    require_loadgen(SingleStream())  # today's timing needs no LoadGen


def test_require_loadgen_passes_where_it_is_installed(loadgen) -> None:
    require_loadgen(Server(p99_ms=25))
    require_loadgen(Offline())
