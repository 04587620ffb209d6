"""The study report: one self-contained HTML file (plotly.js embedded) that works offline.

It shows a Pareto scatter for each pair of objectives (the front highlighted, the trials the
95% front adds ringed, infeasible trials grey, each timing with its 95% interval as error
bars), the hypervolume over trials, parallel coordinates of the parameters, both fronts as
tables (with the intervals), the latest confirmation, the A/B comparisons, and every failed
or invalid trial with its reason. Every text taken from the store goes
through `mask` and HTML escaping.

The page sets ``data-rendered`` on ``#pt-status`` as each plot finishes, and lists script
errors in ``#pt-errors``, so a headless browser can check that it rendered cleanly.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import itertools
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretotune.display import format_value
from paretotune.errors import ConfigError, StudyError
from paretotune.search.trial import TrialState
from paretotune.storage import mask

if TYPE_CHECKING:
    from paretotune.search import Study, Trial

log = logging.getLogger(__name__)

COLORS = {"front": "#d62728", "front95": "#ff7f0e", "feasible": "#1f77b4", "infeasible": "#b0b0b0",
          "baseline": "#2ca02c"}
#: a per-layer mapping with more entries than this is shown as counts of each value
MAX_FLAT_MAPPING = 6

_HEAD_SCRIPT = """
window.ptErrors = [];
function ptRecordError(text) {
  window.ptErrors.push(text);
  var box = document.getElementById('pt-errors');
  if (box) { box.textContent = window.ptErrors.join('\\n'); box.dataset.count = window.ptErrors.length; }
}
window.addEventListener('error', function (e) { ptRecordError('error: ' + e.message); });
var ptConsoleError = console.error.bind(console);
console.error = function () {
  ptRecordError('console.error: ' + Array.prototype.join.call(arguments, ' '));
  ptConsoleError.apply(null, arguments);
};
window.addEventListener('unhandledrejection', function (e) { ptRecordError('unhandled rejection: ' + e.reason); });
function ptRendered() {
  window.ptRenderedCount = (window.ptRenderedCount || 0) + 1;
  var status = document.getElementById('pt-status');
  status.dataset.rendered = window.ptRenderedCount;
  if (window.ptRenderedCount >= Number(status.dataset.expected)) { status.textContent = 'rendered'; }
}
"""

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .meta code { background: #f4f4f4; padding: 1px 4px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; gap: 8px; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.grid > div { min-width: 0; }
#pt-status { display: none; } #pt-errors:empty { display: none; }
#pt-errors { color: #b00; white-space: pre-wrap; }
"""


def _text(value: Any) -> str:
    """Mask, then escape: the only way store text enters the page."""
    return html.escape(mask(str(value)))


def _get(config: Mapping[str, Any] | None, key: str) -> Any:
    return None if config is None else config.get(key)


def _label(value: Any) -> str:
    return "(not set)" if value is None else format_value(value)


def _config_label(trial: Trial) -> str:
    config = trial.config.to_dict() if trial.config is not None else {}
    parts = [f"{k}={format_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    return mask(", ".join(parts))


def _hover(trial: Trial, names: Sequence[str]) -> str:
    lines = [f"trial {trial.number}" + (" (baseline)" if trial.is_baseline else "")]
    lines += [f"{m}={trial.metrics[m]:.4g}" for m in names if m in trial.metrics]
    lines.append(_config_label(trial))
    return html.escape("<br>".join(lines)).replace("&lt;br&gt;", "<br>")


# -- figures --------------------------------------------------------------------------------------


def _error_bars(trials: Sequence[Trial], name: str) -> dict[str, Any] | None:
    """Plotly error bars of `name` from the trials' intervals (none when no trial has one)."""
    if name == "trial" or not any(name in t.intervals for t in trials):
        return None
    plus = [t.intervals[name][1] - t.metrics[name] if name in t.intervals else 0.0 for t in trials]
    minus = [t.metrics[name] - t.intervals[name][0] if name in t.intervals else 0.0 for t in trials]
    return {"type": "data", "symmetric": False, "array": [max(v, 0.0) for v in plus],
            "arrayminus": [max(v, 0.0) for v in minus], "thickness": 1, "width": 3}


def _pareto_figures(
    study: Study, completed: list[Trial], front_numbers: set[int], front95_numbers: set[int] | None = None
) -> list[Any]:
    import plotly.graph_objects as go

    names = list(study.objectives)
    pairs = list(itertools.combinations(names, 2)) if len(names) > 1 else [("trial", names[0])]
    figures = []
    for x_name, y_name in pairs:
        fig = go.Figure()
        ties = (front95_numbers or set()) - front_numbers
        groups = {
            "infeasible": [t for t in completed if not t.feasible],
            "feasible": [t for t in completed if t.feasible and t.number not in front_numbers | ties],
            "front95": [t for t in completed if t.number in ties],
            "front": [t for t in completed if t.number in front_numbers],
        }
        for label, trials in groups.items():
            trials = [t for t in trials if (x_name == "trial" or x_name in t.metrics) and y_name in t.metrics]
            if not trials:
                continue
            if label == "front" and x_name != "trial":
                trials.sort(key=lambda t: t.metrics[x_name])
            xs = [t.number if x_name == "trial" else t.metrics[x_name] for t in trials]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[t.metrics[y_name] for t in trials],
                    mode="lines+markers" if label == "front" else "markers",
                    name={"front": "Pareto front", "feasible": "feasible",
                          "front95": "on the 95% front too (tied within the intervals)",
                          "infeasible": "infeasible (violates a constraint)"}[label],
                    marker={
                        "color": COLORS[label],
                        "size": 11 if label == "front" else 8,
                        "symbol": ["star" if t.is_baseline else "circle" for t in trials],
                        "line": {"width": 1, "color": "#333"} if label in ("front", "front95") else {"width": 0},
                    },
                    error_x=_error_bars(trials, x_name),
                    error_y=_error_bars(trials, y_name),
                    line={"dash": "dot", "width": 1, "color": COLORS["front"]},
                    text=[_hover(t, names) for t in trials],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
        fig.update_layout(
            title=f"{y_name} ({study.objectives[y_name]}) vs {x_name}"
            + (f" ({study.objectives[x_name]})" if x_name in study.objectives else ""),
            xaxis_title=x_name,
            yaxis_title=y_name,
            height=440,
            margin={"l": 60, "r": 20, "t": 50, "b": 50},
            legend={"orientation": "h", "y": -0.2},
        )
        figures.append(fig)
    return figures


def _hypervolume_figure(study: Study) -> Any | None:
    import plotly.graph_objects as go

    history = study.hypervolume_history()
    if not history:
        return None
    fig = go.Figure(
        go.Scatter(
            x=[n for n, _ in history],
            y=[hv for _, hv in history],
            mode="lines+markers",
            line={"shape": "hv", "color": COLORS["front"]},
            name="hypervolume",
        )
    )
    fig.update_layout(
        title="Hypervolume of the feasible front over trials (reference: 10% worse than the baseline)",
        xaxis_title="trial",
        yaxis_title="hypervolume",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def _flatten(config: Mapping[str, Any], wide: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            if key in wide:
                for v in sorted({str(x) for x in value.values()}):
                    out[f"{key}: #{v}"] = sum(1 for x in value.values() if str(x) == v)
            else:
                for sub, v in value.items():
                    out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def _parallel_figure(study: Study, completed: list[Trial]) -> Any | None:
    import plotly.graph_objects as go

    trials = [t for t in completed if t.config is not None]
    if not trials:
        return None
    wide = {
        k
        for t in trials
        for k, v in (t.config or {}).items()
        if isinstance(v, Mapping) and len(v) > MAX_FLAT_MAPPING
    }
    rows = [_flatten(t.config or {}, wide) for t in trials]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    dimensions = []
    for key in keys:
        values = [row.get(key) for row in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            dimension: dict[str, Any] = {"label": key, "values": values}
            distinct = sorted({float(v) for v in values if v is not None})
            if len(distinct) <= 8:  # a choice: ticks at its values
                dimension["tickvals"] = distinct
                dimension["ticktext"] = [format_value(v) for v in distinct]
            dimensions.append(dimension)
        else:
            labels = sorted({_label(v) for v in values})
            codes = {label: i for i, label in enumerate(labels)}
            dimensions.append(
                {
                    "label": key,
                    "values": [codes[_label(v)] for v in values],
                    "tickvals": list(range(len(labels))),
                    "ticktext": [mask(label) for label in labels],
                    "range": [-0.5, max(len(labels) - 0.5, 0.5)],
                }
            )
    color_metric = next(iter(study.objectives))
    for name in study.objectives:
        if all(name in t.metrics for t in trials):
            dimensions.append({"label": name, "values": [t.metrics[name] for t in trials]})
    line: dict[str, Any] = {"color": "#1f77b4"}
    if all(color_metric in t.metrics for t in trials):
        line = {
            "color": [t.metrics[color_metric] for t in trials],
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": color_metric}},
        }
    fig = go.Figure(go.Parcoords(line=line, dimensions=dimensions))
    fig.update_layout(
        title=f"Parameters of the completed trials (colour: {color_metric})",
        height=460,
        margin={"l": 80, "r": 80, "t": 80, "b": 40},
    )
    return fig


# -- tables ---------------------------------------------------------------------------------------


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            cells.append(f"<td{cls}>{_text(format_value(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _interval_text(t: Trial, metric: str) -> str | None:
    if metric not in t.intervals:
        return None
    lo, hi = t.intervals[metric]
    return f"{lo:.4g}-{hi:.4g}"


def _front_table(study: Study, front: Sequence[Trial]) -> str:
    if not front:
        return "<p>No feasible completed trial yet, so the front is empty.</p>"
    config_keys: list[str] = []
    for t in front:
        config_keys += [k for k in (t.config or {}) if k not in config_keys]
    metrics = list(study.objectives)
    for extra in ("accuracy", "accuracy_drop", "speedup", "latency_p99_ms", "model_bytes"):
        if extra not in metrics and any(extra in t.metrics for t in front):
            metrics.append(extra)
    for c in study.constraints:
        if c.metric not in metrics:
            metrics.append(c.metric)
    with_ci = [m for m in metrics if any(m in t.intervals for t in front)]
    rows = [
        [t.number, *[_get(t.config, k) for k in config_keys], *[t.metrics.get(m) for m in metrics],
         *[_interval_text(t, m) for m in with_ci]]
        for t in front
    ]
    return _table(["trial", *config_keys, *metrics, *[f"{m} 95% CI" for m in with_ci]], rows)


def _comparisons_section(study: Study) -> str:
    """Every stored A/B comparison (`paretotune compare`), one line per metric."""
    found = study.comparisons()
    if not found:
        return (f"<p>None yet. <code>paretotune compare {_text(study.name)} A B</code> measures two "
                "trials side by side in fresh processes and says whether they differ.</p>")
    parts = []
    for c in found:
        lines = "".join(f"<li>{_text(line)}</li>" for line in c.lines())
        errors = "".join(f"<li>error: {_text(e)}</li>" for e in c.errors)
        parts.append(f"<p>Trial {c.a} against trial {c.b}, {c.processes} fresh processes "
                     f"(run <code>{_text(c.run_id)}</code>):</p><ul>{lines}{errors}</ul>")
    return "".join(parts)


def _confirmation_table(study: Study) -> str:
    """The latest `paretotune confirm` run: in-study against fresh-process numbers."""
    confirmed = study.confirmations()
    if not confirmed:
        return (f"<p>Not confirmed: the timings are one in-study measurement each. "
                f"<code>paretotune confirm {_text(study.name)}</code> re-measures the front in fresh "
                "processes.</p>")
    from paretotune.search.confirmations import display_rows

    columns, rows = display_rows(confirmed)
    return (f"<p>Run <code>{_text(confirmed[0].run_id)}</code>: each trial re-measured in fresh processes "
            "(median; spread = max/min - 1; speedup paired with the baseline in each process).</p>"
            + _table(columns, [[row[c] for c in columns] for row in rows]))


def _failures_table(trials: Sequence[Trial]) -> str:
    bad = [t for t in trials if t.state.value in ("FAIL", "INVALID")]
    if not bad:
        return "<p>No failed or invalid trials.</p>"
    rows = [[t.number, t.state.value, _config_label(t), t.reason or ""] for t in bad]
    return _table(["trial", "state", "config", "reason"], rows)


# -- the page -------------------------------------------------------------------------------------


def render_report(study: Study, *, title: str | None = None) -> str:
    """The report of `study` as one HTML document (plotly.js included)."""
    try:
        import plotly.io as pio
    except ImportError as exc:  # pragma: no cover - plotly is in the [report] extra
        raise ConfigError("the report needs plotly: pip install 'paretotune[report]'") from exc

    trials = study.trials
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    front = list(study.pareto_front())
    front_numbers = {t.number for t in front}
    front95 = list(study.pareto_front(confidence=0.95))
    front95_numbers = {t.number for t in front95}
    figures: list[tuple[str, Any]] = [
        ("pareto", f) for f in _pareto_figures(study, completed, front_numbers, front95_numbers)
    ]
    hv_figure = _hypervolume_figure(study)
    if hv_figure is not None:
        figures.append(("hypervolume", hv_figure))
    parallel = _parallel_figure(study, completed)
    if parallel is not None:
        figures.append(("parallel", parallel))

    divs: dict[str, list[str]] = {"pareto": [], "hypervolume": [], "parallel": []}
    for i, (section, fig) in enumerate(figures):
        divs[section].append(
            pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=i == 0,  # plotly.js once, inline: the page works offline
                include_mathjax=False,
                config={"displaylogo": False, "responsive": True},
                post_script="ptRendered();",
                div_id=f"pt-plot-{i}",
            )
        )
    counts = study.counts()
    try:
        hv: str = f"{study.hypervolume():.6g}"
    except StudyError:
        hv = "n/a (no completed baseline)"
    stopped = study.store.stopped_reason(study.name)
    name = title or f"paretotune report: {study.name}"
    objectives = ", ".join(f"{k} ({v})" for k, v in study.objectives.items())
    constraints = ", ".join(str(c) for c in study.constraints) or "none"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if not completed and not divs["pareto"]:
        divs["pareto"].append("<p>No completed trials yet.</p>")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_text(name)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_HEAD_SCRIPT}</script>",
        "</head><body>",
        f'<div id="pt-status" data-expected="{len(figures)}" data-rendered="0">pending</div>',
        '<pre id="pt-errors" data-count="0"></pre>',
        f"<h1>{_text(name)}</h1>",
        '<p class="meta">',
        f"storage <code>{_text(study.store.masked_url)}</code> &middot; sampler <code>{_text(study.spec.get('sampler'))}</code>"
        f" &middot; task <code>{_text(study.task_path)}</code> &middot; generated {_text(generated)}<br>",
        f"objectives: {_text(objectives)} &middot; constraints: {_text(constraints)}<br>",
        f"trials: {counts['COMPLETE']} measured, {counts['DUPLICATE']} answered from earlier measurements, "
        f"{counts['FAIL']} failed, {counts['INVALID']} invalid, "
        f"{counts['RUNNING']} running, {counts['WAITING']} waiting &middot; front: {len(front)} trial{'' if len(front) == 1 else 's'}"
        f" &middot; hypervolume {_text(hv)}",
        f"<br>stopped: {_text(stopped)}" if stopped else "",
        "</p>",
        "<h2>Pareto front</h2>",
        "<p>Every completed trial; the feasible non-dominated trials are red and joined, trials "
        "that the 95% front adds (tied with a front trial within the intervals) are orange, trials "
        "that violate a constraint are grey, the baseline is a star. Error bars are the timings' "
        "95% intervals within their process; accuracy is compared at the study's resolution.</p>",
        f'<div class="grid">{"".join(f"<div>{d}</div>" for d in divs["pareto"])}</div>',
        "<h2>Hypervolume</h2>",
        "".join(divs["hypervolume"]) or "<p>No completed baseline yet, so no reference point.</p>",
        "<h2>Parameters</h2>",
        "".join(divs["parallel"]) or "<p>No completed trials yet.</p>",
        f"<h2>The front ({len(front)} trial{'' if len(front) == 1 else 's'})</h2>",
        _front_table(study, front),
        f"<h2>The front with 95% confidence ({len(front95)} trial{'' if len(front95) == 1 else 's'})</h2>",
        "<p>Two timings whose 95% intervals overlap are tied: a trial leaves this front only when "
        "another is better beyond the intervals in some objective and worse in none.</p>",
        _front_table(study, front95),
        "<h2>Confirmed in fresh processes</h2>",
        _confirmation_table(study),
        "<h2>A/B comparisons</h2>",
        _comparisons_section(study),
        "<h2>Failed and invalid trials</h2>",
        _failures_table(trials),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(study: Study, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the report of `study` to `path` (an .html file); returns the path."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"report path {str(out)!r} is a directory; give a file such as report.html")
    text = render_report(study, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fresh temporary file (O_EXCL: never a planted path or symlink) beside the target, then
    # one rename: readers see the old report or the new one, and nothing outside --out is written.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; a report is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    log.info("wrote the report of %r to %s (%d bytes)", study.name, out, len(text))
    return out


__all__ = ["render_report", "write_report"]
