"""MLPerf LoadGen as the load generator, our dynamic batcher and engine as its system under test.

LoadGen (`mlperf_loadgen`, from the optional `mlcommons-loadgen` package) schedules the queries
(Poisson arrivals in its Server scenario, one big query in Offline), times every one of them and
judges the run. We never generate load or recompute its verdict: each run's result is read back
from the detail log LoadGen writes (`mlperf_log_detail.txt`, one `:::MLLOG {json}` record a
line), with the summary's "Result is" line as a cross-check.

The query sample library is the caller's inputs, one sample per row, all resident in memory
(load and unload are no-ops). Responses carry no data: runs are PerformanceOnly.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paretotune.errors import ConfigError, EvaluationError, ParetotuneError
from paretotune.evaluators.serving.batcher import BatcherConfig, DynamicBatcher, Runner
from paretotune.space.scenario import Scenario, SingleStream

logger = logging.getLogger(__name__)

INSTALL_LINE = "pip install 'paretotune[serving]'"
MLPERF_MIN_DURATION_S = 600.0  # MLPerf Inference's minimum run duration for a result
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
# LoadGen keeps process-wide state (its logger): one session at a time in a process (not
# reentrant: don't open a session inside another)
_LOCK = threading.Lock()


def loadgen_problem() -> str | None:
    """Why MLPerf LoadGen cannot be used here, or None when `mlperf_loadgen` imports."""
    try:
        import mlperf_loadgen  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - an ImportError or a broken binary wheel
        return f"mlperf_loadgen is not importable ({type(exc).__name__}: {exc})"
    return None


def loadgen_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return None


def require_loadgen(scenario: Scenario) -> None:
    """Refuse a server or offline scenario where LoadGen is missing (run at study creation)."""
    if isinstance(scenario, SingleStream):
        return
    problem = loadgen_problem()
    if problem is not None:
        raise ConfigError(
            f"scenario {scenario.kind!r} is measured with MLPerf LoadGen, but {problem}; "
            f"install it with: {INSTALL_LINE}"
        )


@dataclass(frozen=True)
class LoadGenRun:
    """One LoadGen test as LoadGen judged it (times in ms), plus what our batcher saw."""

    scenario: str
    target_qps: float
    valid: bool
    min_duration_met: bool
    min_queries_met: bool
    early_stopping_met: bool
    perf_constraints_met: bool | None  # server only: the p99 bound
    query_count: int
    overlatency_count: int | None
    scheduled_qps: float | None  # server
    completed_qps: float | None  # server
    samples_per_second: float | None  # offline
    latency_ms: dict[str, float]  # min, mean, max and the percentiles ("p99", "p99.9", ...)
    min_duration_s: float
    min_query_count: int
    wall_s: float
    invalid_reason: str
    early_stopping: str
    batcher: dict[str, Any]
    arrivals_s: tuple[float, ...] | None = None  # issue times from the first, when kept

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["p99"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile_name(key: str) -> str:
    value = float(key)
    return f"p{value:g}"


def parse_detail_log(path: str | Path) -> dict[str, Any]:
    """LoadGen's detail log as key -> value (the last record of each key wins)."""
    records: dict[str, Any] = {}
    errors: list[str] = []
    for line in Path(path).read_text(errors="replace").splitlines():
        start = line.find(":::MLLOG ")
        if start < 0:
            continue
        try:
            record = json.loads(line[start + len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        records[record.get("key")] = record.get("value")
        if record.get("metadata", {}).get("is_error"):
            errors.append(f"{record.get('key')}: {record.get('value')}")
    records["_errors"] = errors
    return records


_RESULT_LINE = re.compile(r"^Result is\s*:\s*(\S+)", re.MULTILINE)


def summary_validity(path: str | Path) -> str | None:
    """The "Result is : VALID" line of LoadGen's summary, or None when it has none."""
    match = _RESULT_LINE.search(Path(path).read_text(errors="replace"))
    return match.group(1) if match else None


def _need(records: Mapping[str, Any], key: str, where: Path) -> Any:
    if key not in records:
        raise EvaluationError(f"LoadGen's detail log {where} has no {key!r} record")
    return records[key]


def read_run(
    outdir: Path,
    *,
    scenario: str,
    target_qps: float,
    min_duration_s: float,
    min_query_count: int,
    wall_s: float,
    batcher: dict[str, Any],
    arrivals_s: tuple[float, ...] | None = None,
) -> LoadGenRun:
    """Build a `LoadGenRun` from the log files LoadGen wrote to `outdir`."""
    detail = outdir / "mlperf_log_detail.txt"
    if not detail.is_file():
        raise EvaluationError(f"LoadGen wrote no detail log in {outdir}")
    records = parse_detail_log(detail)
    if records["_errors"]:
        raise EvaluationError(f"LoadGen reported errors: {'; '.join(records['_errors'])}")
    validity = _need(records, "result_validity", detail)
    summary = outdir / "mlperf_log_summary.txt"
    in_summary = summary_validity(summary) if summary.is_file() else None
    if in_summary is not None and in_summary != validity:
        raise EvaluationError(
            f"LoadGen's summary says {in_summary} but its detail log says {validity} ({outdir})"
        )
    latency = {
        "min": _need(records, "result_min_latency_ns", detail) / 1e6,
        "mean": _need(records, "result_mean_latency_ns", detail) / 1e6,
        "max": _need(records, "result_max_latency_ns", detail) / 1e6,
    }
    for p in PERCENTILES:
        latency[_percentile_name(p)] = (
            _need(records, f"result_{p}_percentile_latency_ns", detail) / 1e6
        )
    server = scenario == "server"
    return LoadGenRun(
        scenario=scenario,
        target_qps=float(target_qps),
        valid=validity == "VALID",
        min_duration_met=bool(_need(records, "result_min_duration_met", detail)),
        min_queries_met=bool(_need(records, "result_min_queries_met", detail)),
        early_stopping_met=bool(records.get("early_stopping_met", True)),
        perf_constraints_met=(
            bool(_need(records, "result_perf_constraints_met", detail)) if server else None
        ),
        query_count=int(_need(records, "result_query_count", detail)),
        overlatency_count=(
            int(_need(records, "result_overlatency_query_count", detail)) if server else None
        ),
        scheduled_qps=(
            float(_need(records, "result_scheduled_samples_per_sec", detail)) if server else None
        ),
        completed_qps=(
            float(_need(records, "result_completed_samples_per_sec", detail)) if server else None
        ),
        samples_per_second=(
            None if server else float(_need(records, "result_samples_per_second", detail))
        ),
        latency_ms={k: round(v, 4) for k, v in latency.items()},
        min_duration_s=min_duration_s,
        min_query_count=min_query_count,
        wall_s=round(wall_s, 3),
        invalid_reason=str(records.get("result_invalid_reason", "")).strip(),
        early_stopping=" ".join(str(records.get("early_stopping_result", "")).split()),
        batcher=batcher,
        arrivals_s=arrivals_s,
    )


class LoadGenSession:
    """The SUT and QSL of one serving measurement; run LoadGen tests against them in turn.

    Use as a context manager: entering builds the runners, warms them up, starts the batcher's
    instance threads and registers the SUT/QSL with LoadGen; leaving tears it all down. A
    runner that raises mid-run makes that run raise `EvaluationError` (the batcher drains the
    queries so LoadGen finishes first). keep_arrivals: record when each query reached the
    batcher (`LoadGenRun.arrivals_s`), to check the harness against a queueing model.
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        inputs: Mapping[str, np.ndarray],
        batcher: BatcherConfig,
        *,
        padding_mask: str | None = None,
        log_dir: str | Path | None = None,
        keep_arrivals: bool = False,
    ) -> None:
        problem = loadgen_problem()
        if problem is not None:
            raise ConfigError(
                f"serving needs MLPerf LoadGen, but {problem}; install it with: {INSTALL_LINE}"
            )
        import mlperf_loadgen as lg

        self._lg = lg
        self.batcher_config = batcher
        self.batcher = DynamicBatcher(
            runners,
            inputs,
            batcher,
            self._complete,
            padding_mask=padding_mask,
            keep_arrivals=keep_arrivals,
        )
        self.rows = self.batcher.rows.count
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_root = Path(log_dir) if log_dir is not None else None
        self._runs = 0
        self._sut: Any = None
        self._qsl: Any = None

    # LoadGen's callbacks: keep them short, they run on LoadGen's issue thread
    def _issue(self, samples: Sequence[Any]) -> None:
        self.batcher.submit([(s.id, s.index) for s in samples])

    def _complete(self, sample_ids: list[int]) -> None:
        lg = self._lg
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in sample_ids])

    def _flush(self) -> None:
        pass

    def __enter__(self) -> LoadGenSession:
        _LOCK.acquire()
        try:
            try:
                self.batcher.warm_up()
            except ParetotuneError:
                raise
            except Exception as exc:  # noqa: BLE001 - the engine's own error, kept as the cause
                raise EvaluationError(f"the engine raised while warming up: {exc!r}") from exc
            if self._log_root is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="paretotune-loadgen-")
                self._log_root = Path(self._tmp.name)
            self._log_root.mkdir(parents=True, exist_ok=True)
            self.batcher.start()
            self._sut = self._lg.ConstructSUT(self._issue, self._flush)
            self._qsl = self._lg.ConstructQSL(
                self.rows, self.rows, lambda _s: None, lambda _s: None
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.batcher.stop()
            if self._qsl is not None:
                self._lg.DestroyQSL(self._qsl)
            if self._sut is not None:
                self._lg.DestroySUT(self._sut)
            self._qsl = self._sut = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        finally:
            _LOCK.release()

    # -- one LoadGen test -----------------------------------------------------------------

    def _settings(self, min_duration_s: float, max_duration_s: float, min_queries: int) -> Any:
        lg = self._lg
        settings = lg.TestSettings()
        settings.mode = lg.TestMode.PerformanceOnly
        settings.min_duration_ms = int(round(min_duration_s * 1000))
        settings.max_duration_ms = int(round(max_duration_s * 1000))
        settings.min_query_count = int(min_queries)
        return settings

    def _start(self, settings: Any, scenario: str, target_qps: float) -> LoadGenRun:
        if self._sut is None or self._log_root is None:
            raise EvaluationError("LoadGenSession used outside its `with` block")
        lg = self._lg
        self._runs += 1
        outdir = self._log_root / f"run{self._runs:02d}-{scenario}-{target_qps:.2f}qps"
        outdir.mkdir(parents=True, exist_ok=True)
        output = lg.LogOutputSettings()
        output.outdir = str(outdir)
        output.copy_summary_to_stdout = False
        output.copy_detail_to_stdout = False
        log = lg.LogSettings()
        log.log_output = output
        log.enable_trace = False
        self.batcher.reset_stats()
        started = time.perf_counter()
        lg.StartTestWithLogSettings(self._sut, self._qsl, settings, log)
        wall = time.perf_counter() - started
        if self.batcher.error is not None:
            error = self.batcher.error
            raise EvaluationError(f"the engine raised while serving: {error!r}") from error
        stats = self.batcher.stats()
        arrivals = None
        if stats.arrivals_ns is not None and stats.arrivals_ns:
            first = stats.arrivals_ns[0]
            arrivals = tuple((t - first) / 1e9 for t in stats.arrivals_ns)
        run = read_run(
            outdir,
            scenario=scenario,
            target_qps=target_qps,
            min_duration_s=settings.min_duration_ms / 1000,
            min_query_count=settings.min_query_count,
            wall_s=wall,
            batcher=stats.to_dict(),
            arrivals_s=arrivals,
        )
        logger.info(
            "LoadGen %s at %.1f QPS: %s, p99 %.2f ms, %d queries, mean batch %s (%.1f s)",
            scenario,
            target_qps,
            "VALID" if run.valid else "INVALID",
            run.p99_ms,
            run.query_count,
            run.batcher.get("mean_batch_size"),
            wall,
        )
        return run

    def server(
        self,
        target_qps: float,
        p99_ms: float,
        *,
        min_duration_s: float,
        min_queries: int,
        max_duration_s: float | None = None,
        seed: int = 0,
    ) -> LoadGenRun:
        """One Server test: Poisson arrivals at `target_qps`, VALID when p99 <= `p99_ms`."""
        lg = self._lg
        # room for the queries asked for at this rate too: a run cut short at its maximum
        # duration is a LoadGen error, not a verdict (MiniLM at 17 QPS needs 30 s for 500)
        needed = 1.5 * min_queries / target_qps + 5.0 if target_qps > 0 else 0.0
        settings = self._settings(
            min_duration_s, max_duration_s or max(3 * min_duration_s + 10.0, needed), min_queries
        )
        settings.scenario = lg.TestScenario.Server
        settings.server_target_qps = float(target_qps)
        settings.server_target_latency_ns = int(round(p99_ms * 1e6))
        settings.server_target_latency_percentile = 0.99
        settings.schedule_rng_seed = seed
        settings.sample_index_rng_seed = seed
        settings.qsl_rng_seed = seed
        return self._start(settings, "server", target_qps)

    def offline(
        self, expected_qps: float, *, min_duration_s: float, max_duration_s: float | None = None
    ) -> LoadGenRun:
        """One Offline test: LoadGen issues expected_qps x min_duration x 1.1 samples at once."""
        lg = self._lg
        settings = self._settings(min_duration_s, max_duration_s or 4 * min_duration_s + 10.0, 1)
        settings.scenario = lg.TestScenario.Offline
        settings.offline_expected_qps = float(expected_qps)
        return self._start(settings, "offline", expected_qps)
