"""A dynamic batcher modelled on Triton's, running engine instances as threads in-process.

Requests queue in arrival order. When an engine instance is free it takes the largest preferred
batch size the queue can fill; with no preferred size reachable it waits, and runs what is
queued (up to `max_batch_size`) once the oldest request has waited `max_queue_delay_us`. With
no preferred sizes, `max_batch_size` is the one preferred size. This is Triton's
`dynamic_batching { preferred_batch_size, max_queue_delay_microseconds }` with an
`instance_group` of `instances`, so a measured batcher exports as it ran.

The instances are threads; engines release the GIL while they compute (ONNX Runtime, torch),
so they overlap each other and the load generator's own thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from paretotune.errors import ConfigError, TaskError

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """A built engine: one synchronous call on a batch (axis 0), returning one row per input row."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


def _positive_int(field_name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"batcher {field_name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class BatcherConfig:
    """Triton's dynamic-batching settings; validated when built, JSON round trip."""

    max_batch_size: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1

    FIELDS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances")

    def __post_init__(self) -> None:
        size = _positive_int("max_batch_size", self.max_batch_size, 1)
        delay = _positive_int("max_queue_delay_us", self.max_queue_delay_us, 0)
        instances = _positive_int("instances", self.instances, 1)
        raw = self.preferred_batch_sizes
        if isinstance(raw, (str, bytes)) or not isinstance(raw, (Sequence, np.ndarray)):
            raise ConfigError(
                f"batcher preferred_batch_sizes must be a list of integers, got {raw!r}"
            )
        preferred = []
        for value in raw:
            p = _positive_int("preferred_batch_sizes entry", value, 1)
            if p > size:
                raise ConfigError(
                    f"batcher preferred_batch_sizes entry {p} exceeds max_batch_size {size}; "
                    f"allowed: 1..{size}"
                )
            preferred.append(p)
        if len(set(preferred)) != len(preferred):
            raise ConfigError(
                f"batcher preferred_batch_sizes must not repeat a size, got {list(raw)}"
            )
        object.__setattr__(self, "max_batch_size", size)
        object.__setattr__(self, "max_queue_delay_us", delay)
        object.__setattr__(self, "instances", instances)
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(preferred)))

    @property
    def targets(self) -> tuple[int, ...]:
        """The sizes a batch runs at without waiting (the preferred sizes, else the maximum)."""
        return self.preferred_batch_sizes or (self.max_batch_size,)

    def batch_size_for(self, queued: int, oldest_wait_us: float) -> int:
        """How many queued requests a free instance takes now; 0 means wait for more.

        The largest target the queue fills runs at once; otherwise what is queued runs when the
        oldest request has waited `max_queue_delay_us` (at once when that is 0).
        """
        if queued <= 0:
            return 0
        for target in reversed(self.targets):
            if queued >= target:
                return target
        if oldest_wait_us >= self.max_queue_delay_us:
            return min(queued, self.max_batch_size)
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "max_queue_delay_us": self.max_queue_delay_us,
            "instances": self.instances,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatcherConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"batcher must be a mapping of {list(cls.FIELDS)}, got {data!r}")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise ConfigError(f"batcher: unknown key(s) {unknown}; allowed: {list(cls.FIELDS)}")
        return cls(
            max_batch_size=data.get("max_batch_size", 1),
            preferred_batch_sizes=tuple(data.get("preferred_batch_sizes", ())),
            max_queue_delay_us=data.get("max_queue_delay_us", 0),
            instances=data.get("instances", 1),
        )


@dataclass
class BatcherStats:
    """What the batcher saw since its last reset: formed batches and where latency went."""

    batch_sizes: list[int] = field(default_factory=list)
    queue_ns: int = 0  # summed over requests: arrival to the start of its batch
    latency_ns: int = 0  # summed over requests: arrival to completion
    requests: int = 0
    arrivals_ns: list[int] | None = None  # each request's arrival, when kept (keep_arrivals)

    @property
    def mean_batch_size(self) -> float | None:
        return float(np.mean(self.batch_sizes)) if self.batch_sizes else None

    @property
    def queue_share(self) -> float | None:
        """Share of the requests' total latency spent queued, before their batch started."""
        return self.queue_ns / self.latency_ns if self.latency_ns > 0 else None

    def to_dict(self) -> dict[str, Any]:
        mean = self.mean_batch_size
        share = self.queue_share
        return {
            "batches": len(self.batch_sizes),
            "requests": self.requests,
            "mean_batch_size": None if mean is None else round(mean, 3),
            "max_batch_size_formed": max(self.batch_sizes) if self.batch_sizes else None,
            "queue_share": None if share is None else round(share, 4),
        }


class _Rows:
    """The query sample library's rows, gathered into batches (padding cut per batch)."""

    def __init__(self, inputs: Mapping[str, np.ndarray], padding_mask: str | None) -> None:
        if not inputs:
            raise TaskError("serving inputs must hold at least one named array, got none")
        self.arrays = {str(k): np.asarray(v) for k, v in inputs.items()}
        counts = {name: a.shape[0] if a.ndim else 0 for name, a in self.arrays.items()}
        self.count = next(iter(counts.values()))
        if self.count < 1 or len(set(counts.values())) != 1:
            raise TaskError(f"serving inputs must share one row count >= 1 on axis 0, got {counts}")
        self.mask_name = padding_mask
        self.lengths: np.ndarray | None = None
        if padding_mask is not None:
            mask = self.arrays.get(padding_mask)
            if mask is None or mask.ndim != 2:
                raise TaskError(
                    f"padding_mask must name a (rows, sequence) input, got {padding_mask!r}; "
                    f"inputs: {sorted(self.arrays)}"
                )
            used = mask != 0
            last = mask.shape[1] - np.argmax(used[:, ::-1], axis=1)
            self.lengths = np.where(used.any(axis=1), last, 1)
            self.masked = [n for n, a in self.arrays.items() if a.shape[:2] == mask.shape]

    def batch(self, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """Rows concatenated as a server would: cut to the longest real row of this batch."""
        index = np.asarray(rows, dtype=np.intp)
        out = {name: array[index] for name, array in self.arrays.items()}
        if self.lengths is not None:
            length = int(self.lengths[index].max())
            for name in self.masked:
                out[name] = np.ascontiguousarray(out[name][:, :length])
        return out


@dataclass
class _Request:
    sample_id: int
    row: int
    arrived_ns: int


class DynamicBatcher:
    """Requests in (`submit`), batches through engine instances, completions out (`complete`).

    One thread per runner. Thread safety: `submit` may be called from any thread (LoadGen's
    issue thread); `complete` is called from the instance threads with the sample ids of one
    finished batch. If a runner raises, the batcher records the first error, completes every
    pending and later request at once (so the load generator drains instead of hanging) and
    `error` holds the exception for the caller to raise.
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        inputs: Mapping[str, np.ndarray],
        config: BatcherConfig,
        complete: Callable[[list[int]], None],
        *,
        padding_mask: str | None = None,
        keep_arrivals: bool = False,
    ) -> None:
        if len(runners) != config.instances:
            raise ConfigError(
                f"batcher instances is {config.instances} but {len(runners)} runner(s) were given"
            )
        self.config = config
        self.rows = _Rows(inputs, padding_mask)
        self._runners = list(runners)
        self._complete = complete
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._keep_arrivals = keep_arrivals
        self._stats = self._new_stats()
        self.error: BaseException | None = None

    def _new_stats(self) -> BatcherStats:
        return BatcherStats(arrivals_ns=[] if self._keep_arrivals else None)

    # -- lifecycle ------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run every instance once at each size it may form (first calls pay allocation)."""
        sizes = sorted({1, *self.config.targets, self.config.max_batch_size})
        for runner in self._runners:
            for size in sizes:
                rows = [i % self.rows.count for i in range(size)]
                self._check_output(runner.run(self.rows.batch(rows)), size)

    def start(self) -> None:
        for i, runner in enumerate(self._runners):
            thread = threading.Thread(
                target=self._serve, args=(runner,), name=f"paretotune-instance-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def __enter__(self) -> DynamicBatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests -------------------------------------------------------------------------

    def submit(self, requests: Sequence[tuple[int, int]]) -> None:
        """Queue (sample id, row index) pairs, all arriving now."""
        now = time.perf_counter_ns()
        with self._cond:
            if self.error is None:
                self._queue.extend(_Request(sid, row, now) for sid, row in requests)
                if self._stats.arrivals_ns is not None:
                    self._stats.arrivals_ns.extend([now] * len(requests))
                self._cond.notify()
                return
        self._complete([sid for sid, _ in requests])  # failed: drain at once

    def stats(self) -> BatcherStats:
        with self._cond:
            stats = self._stats
            return BatcherStats(
                list(stats.batch_sizes),
                stats.queue_ns,
                stats.latency_ns,
                stats.requests,
                None if stats.arrivals_ns is None else list(stats.arrivals_ns),
            )

    def reset_stats(self) -> None:
        with self._cond:
            self._stats = self._new_stats()

    # -- the instance threads -------------------------------------------------------------

    def _take(self) -> list[_Request] | None:
        """Block until a batch is due (None when stopping); called with the lock released."""
        delay_ns = self.config.max_queue_delay_us * 1000
        with self._cond:
            while True:
                if self._stopping:
                    return None
                timeout = None
                if self._queue:
                    now = time.perf_counter_ns()
                    waited_ns = now - self._queue[0].arrived_ns
                    size = self.config.batch_size_for(len(self._queue), waited_ns / 1000.0)
                    if size:
                        batch = [self._queue.popleft() for _ in range(size)]
                        if self._queue:
                            self._cond.notify()  # another free instance may take the rest
                        return batch
                    timeout = max(delay_ns - waited_ns, 0) / 1e9
                self._cond.wait(timeout)

    def _serve(self, runner: Runner) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.perf_counter_ns()
            try:
                if self.error is None:
                    out = runner.run(self.rows.batch([r.row for r in batch]))
                    self._check_output(out, len(batch))
            except BaseException as exc:  # noqa: BLE001 - reported to the caller via .error
                self._fail(exc)
            done = time.perf_counter_ns()
            with self._cond:
                stats = self._stats
                stats.batch_sizes.append(len(batch))
                stats.requests += len(batch)
                stats.queue_ns += sum(started - r.arrived_ns for r in batch)
                stats.latency_ns += sum(done - r.arrived_ns for r in batch)
            self._complete([r.sample_id for r in batch])

    def _check_output(self, out: Any, size: int) -> None:
        rows = getattr(out, "shape", (None,))[0] if getattr(out, "ndim", 0) else None
        if rows != size:
            raise TaskError(
                f"the engine returned {rows} output row(s) for a batch of {size}; a runner "
                f"must return one row per input row"
            )

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
                logger.warning("engine instance failed while serving: %r", exc)
            pending = list(self._queue)
            self._queue.clear()
        if pending:
            self._complete([r.sample_id for r in pending])
