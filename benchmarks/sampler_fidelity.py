"""Sampler fidelity: each sampler through paretotune against the same Optuna sampler used
directly, on public multi-objective test problems with known fronts and on the digits table.

    .venv/bin/python benchmarks/sampler_fidelity.py                  # full: 10 seeds, every problem
    .venv/bin/python benchmarks/sampler_fidelity.py --quick          # a few minutes
    .venv/bin/python benchmarks/sampler_fidelity.py --problems zdt1-6 dtlz2-6 --samplers tpe

Both sides get the same sampler (`make_sampler(name, seed=...)`: the same class and options),
the same search space (the same `suggest_*` calls, through `SearchSpace.suggest`) and the same
budget of completed trials. paretotune's side is its callable-evaluator path: `create_study`
on SQLite in a temporary directory, then the worker loop that `Study.optimize(callable)` runs
with one worker (`run_worker`, here with a fixed worker id so a seed reproduces; `--path
optimize` calls `Study.optimize` itself, whose worker ids are random), with everything the
study adds: the baseline trial first (create_study's default rule: the centre of each range
here, the lower bounds on the digits table, whose constraint is relative), the warm start,
answered duplicates, canonical configs, constraints told with `set_constraint`. Optuna's side is a plain ask/tell loop: a forbidden
or INVALID config is told PRUNED and not counted, constraints are set on the trial.

Problems (pymoo's, a dev dependency): ZDT1-3 (2 objectives), DTLZ1-2 (3 objectives) and WFG4
at several dimensions; `dtlz2-mixed`, DTLZ2 over a mixed space shaped like a deployment space
(floats, a float on a step grid, integers, a categorical; its front is DTLZ2's, since every
distance variable can take 0.5); and `digits`, the tabular digits benchmark
(`sampler_efficiency.py`: categorical, conditional, forbidden combinations, a constraint).

Hypervolume is Optuna's (`paretotune.search.pareto.hypervolume`). A test problem's reference
point is 1.1 x the nadir of its true front (the usual choice: "front") when at least 1% of
10,000 uniform random points (seed 0) fall in that box, else the worst value of each objective
over those points' non-dominated set ("random": ZDT and DTLZ1, whose front box a budget of
tens of trials seldom reaches). "of true" is a run's HV over that of pymoo's sampled true
front against the same point. The digits table uses its documented reference point (10%
worse than the baseline) and its exhaustive front. The fidelity ratio is paretotune's median
HV over Optuna's; p is a two-sided Mann-Whitney U test of the two samples of seeds. The target:
ratio >= 0.97, or p > 0.1 (statistically indistinguishable).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # sampler_efficiency (the digits table)

TABLE = ROOT / "benchmarks" / "data" / "digits_table.csv"
SAMPLERS = ("tpe", "nsga2", "gp", "random")
#: paretotune's own samplers, with no Optuna twin: measured against `--optuna-sampler`
OWN_SAMPLERS = ("surrogate",)
#: completed trials per run: test problems, the digits table (10% of its 528 configs), and GP
#: (its asks take seconds each at 3 objectives on 2 cores)
BUDGET = 60
DIGITS_BUDGET = 53
GP_BUDGET = 20
SEEDS = 10
TARGET_RATIO = 0.97
ALPHA = 0.1
#: a test problem's reference point: FRONT_REF_FACTOR x the true front's nadir (the usual
#: choice) when at least FRONT_REF_MIN_SHARE of REF_SAMPLES uniform random points fall in
#: that box; else the nadir of those points' non-dominated set (ZDT, DTLZ1: a budget of tens
#: of trials seldom reaches the front's box, and every run would score 0)
REF_SAMPLES = 10_000
FRONT_REF_FACTOR = 1.1
FRONT_REF_MIN_SHARE = 0.01


# -- problems ----------------------------------------------------------------------------------


class Problem:
    """A space, an evaluator (config -> metrics), objectives, constraints and a scorer."""

    def __init__(
        self,
        name: str,
        kind: str,  # continuous | mixed | categorical
        space: Any,
        evaluate: Callable[[Any], Any],
        objectives: Mapping[str, str],
        *,
        constraints: Mapping[str, tuple[str, float]] | None = None,
        extra_metrics: Sequence[str] = (),
        feasible: Callable[[Mapping[str, float]], bool] | None = None,
        baseline: str | None = None,
    ) -> None:
        self.name, self.kind, self.space, self.evaluate = name, kind, space, evaluate
        #: the study's `baseline` rule: None, create_study's default for these callables
        #: ("centre"); "low" for the digits table, whose accuracy_drop constraint makes it so
        self.baseline = baseline
        self.objectives = dict(objectives)
        self.constraints = dict(constraints or {})
        self.extra_metrics = list(extra_metrics)
        #: metrics -> whether the point counts (the digits table's accuracy_drop constraint)
        self.feasible = feasible or (lambda m: True)
        self.ref: np.ndarray | None = None
        self.ref_kind = "baseline"  # front | random | baseline (the digits table's documented one)
        self.true_hv = float("nan")

    @property
    def baseline_config(self) -> Any:
        """The config paretotune's study measures first (for the ablation and the constraint)."""
        return self.space.baseline(self.baseline or "centre")

    def losses(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        from paretotune.search.pareto import to_loss

        names = list(self.objectives)
        dirs = [self.objectives[n] for n in names]
        return np.array([to_loss([r[n] for n in names], dirs) for r in rows], dtype=float).reshape(-1, len(names))

    def hv(self, rows: Sequence[Mapping[str, float]]) -> float:
        from paretotune.search.pareto import hypervolume, non_dominated

        assert self.ref is not None
        pts = self.losses([r for r in rows if self.feasible(r)])
        if not len(pts):
            return 0.0
        pts = pts[non_dominated(pts)]
        pts = pts[np.all(pts < self.ref, axis=1)]
        return float(hypervolume(pts, self.ref)) if len(pts) else 0.0


class PymooEvaluator:
    """config -> {"f1": ..., ...} for a pymoo problem; `decode` maps the config to its x.
    Picklable (the problem is rebuilt in the trial process)."""

    def __init__(self, name: str, kwargs: Mapping[str, Any], decode: str = "plain") -> None:
        self.name, self.kwargs, self.decode = name, dict(kwargs), decode
        self._problem: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": self.kwargs, "decode": self.decode, "_problem": None}

    def problem(self) -> Any:
        if self._problem is None:
            from pymoo.problems import get_problem

            self._problem = get_problem(self.name, **self.kwargs)
        return self._problem

    def x(self, config: Mapping[str, Any]) -> np.ndarray:
        n = self.problem().n_var
        if self.decode == "mixed":
            return np.array([_MIXED_DECODE[f"x{i}"](config[f"x{i}"]) for i in range(n)], dtype=float)
        return np.array([float(config[f"x{i}"]) for i in range(n)], dtype=float)

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        f = self.problem().evaluate(self.x(config)[None, :])[0]
        return {f"f{i + 1}": float(v) for i, v in enumerate(np.ravel(f))}


#: the mixed space: how each dimension's value becomes DTLZ2's x in [0, 1]
_MIXED_LEVELS = ("off", "low", "mid", "high", "max")
_MIXED_DECODE: dict[str, Callable[[Any], float]] = {
    "x0": float,
    "x1": float,
    "x2": lambda v: float(v),  # Float(0, 1, step=0.05): a prune ratio
    "x3": lambda v: (v - 1) / 16,  # Int(1, 17): a thread count
    "x4": lambda v: v / 1000,  # Int(0, 1000, step=50): a queue delay in us
    "x5": lambda v: _MIXED_LEVELS.index(v) / 4,  # Choice of five levels
}


def _pymoo_space(evaluator: PymooEvaluator) -> Any:
    import paretotune as pt

    p = evaluator.problem()
    if evaluator.decode == "mixed":
        return pt.SearchSpace({
            "x0": pt.Float(0.0, 1.0),
            "x1": pt.Float(0.0, 1.0),
            "x2": pt.Float(0.0, 1.0, step=0.05),
            "x3": pt.Int(1, 17),
            "x4": pt.Int(0, 1000, step=50),
            "x5": pt.Choice(list(_MIXED_LEVELS)),
        })
    return pt.SearchSpace({f"x{i}": pt.Float(float(p.xl[i]), float(p.xu[i])) for i in range(p.n_var)})


def _pymoo_problem(label: str, name: str, kind: str, kwargs: Mapping[str, Any], decode: str = "plain") -> Problem:
    import random

    from paretotune.search.pareto import hypervolume, non_dominated

    ev = PymooEvaluator(name, kwargs, decode)
    space = _pymoo_space(ev)
    n_obj = ev.problem().n_obj
    names = [f"f{i + 1}" for i in range(n_obj)]
    prob = Problem(label, kind, space, ev, {n: "min" for n in names}, extra_metrics=names)
    rng = random.Random(0)
    sample = [ev(space.sample(rng)) for _ in range(REF_SAMPLES)] if decode == "mixed" else None
    if sample is None:
        p = ev.problem()
        x = np.random.default_rng(0).uniform(p.xl, p.xu, size=(REF_SAMPLES, p.n_var))
        f = p.evaluate(x)
        losses = np.asarray(f, dtype=float)
    else:
        losses = prob.losses(sample)
    front = np.asarray(ev.problem().pareto_front(), dtype=float)
    near = FRONT_REF_FACTOR * front.max(axis=0)
    if np.mean(np.all(losses < near, axis=1)) >= FRONT_REF_MIN_SHARE:
        prob.ref, prob.ref_kind = near, "front"
    else:
        prob.ref, prob.ref_kind = losses[non_dominated(losses)].max(axis=0), "random"
    front = front[np.all(front < prob.ref, axis=1)]
    prob.true_hv = float(hypervolume(front, prob.ref)) if len(front) else float("nan")
    return prob


def _digits_problem(table: Path = TABLE) -> Problem:
    from sampler_efficiency import MAX_DROP, OBJECTIVES, TrueFront, stored_space  # type: ignore[import-not-found]

    truth = TrueFront(table, OBJECTIVES)
    base_acc = truth.baseline_accuracy
    prob = Problem(
        "digits", "categorical", stored_space(table), truth.replay, dict(OBJECTIVES),
        constraints={"accuracy_drop": ("<=", MAX_DROP)},
        feasible=lambda m: base_acc - m["accuracy"] <= MAX_DROP,
        baseline="low",
    )
    prob.ref = truth.ref
    prob.true_hv = truth.hv
    return prob


#: label -> (pymoo name, kind, kwargs, decode)
PYMOO_PROBLEMS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "zdt1-6": ("zdt1", "continuous", {"n_var": 6}, "plain"),
    "zdt1-12": ("zdt1", "continuous", {"n_var": 12}, "plain"),
    "zdt2-6": ("zdt2", "continuous", {"n_var": 6}, "plain"),
    "zdt3-6": ("zdt3", "continuous", {"n_var": 6}, "plain"),
    "dtlz1-6": ("dtlz1", "continuous", {"n_var": 6, "n_obj": 3}, "plain"),
    "dtlz2-6": ("dtlz2", "continuous", {"n_var": 6, "n_obj": 3}, "plain"),
    "dtlz2-12": ("dtlz2", "continuous", {"n_var": 12, "n_obj": 3}, "plain"),
    "wfg4-8": ("wfg4", "continuous", {"n_var": 8, "n_obj": 3}, "plain"),
    "dtlz2-mixed": ("dtlz2", "mixed", {"n_var": 6, "n_obj": 3}, "mixed"),
}
PROBLEMS = (*PYMOO_PROBLEMS, "digits")
#: GP's asks take seconds each: it runs on these problems only (one per kind and dimension count)
GP_PROBLEMS = ("zdt1-6", "dtlz2-mixed")  # GP asks take seconds each: two problems
QUICK_PROBLEMS = ("zdt1-6", "dtlz2-mixed", "digits")
QUICK_SEEDS = 5


def make_problem(label: str, table: Path = TABLE) -> Problem:
    if label == "digits":
        return _digits_problem(table)
    if label not in PYMOO_PROBLEMS:
        raise SystemExit(f"unknown problem {label!r}; known: {list(PROBLEMS)}")
    name, kind, kwargs, decode = PYMOO_PROBLEMS[label]
    return _pymoo_problem(label, name, kind, kwargs, decode)


# -- the two paths -----------------------------------------------------------------------------


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("paretotune").setLevel(logging.ERROR)


def _metrics_of(result: Any) -> dict[str, float]:
    return dict(result.metrics) if hasattr(result, "metrics") else dict(result)


def run_optuna(
    problem: Problem, sampler: str, seed: int, budget: int, baseline: bool = False
) -> list[dict[str, float]]:
    """Plain Optuna: the same sampler, ask/tell, until `budget` trials completed; `baseline`
    enqueues the space's baseline as trial 0, as paretotune does (an ablation)."""
    import optuna

    from paretotune.errors import InvalidConfigError
    from paretotune.search.objectives import parse_constraints
    from paretotune.search.samplers import make_sampler

    _quiet()
    directions = ["minimize" if d == "min" else "maximize" for d in problem.objectives.values()]
    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler, seed=seed))
    if baseline:
        study.enqueue_trial(problem.space.to_params(problem.baseline_config))
    constraints = parse_constraints(problem.constraints)
    base_acc = None
    if problem.constraints:  # the user knows the unoptimized model's accuracy
        base_acc = _metrics_of(problem.evaluate(problem.baseline_config))["accuracy"]
    done: list[dict[str, float]] = []
    asks = 0
    while len(done) < budget and asks < 20 * budget:
        asks += 1
        trial = study.ask()
        try:
            config = problem.space.suggest(trial)
            metrics = _metrics_of(problem.evaluate(config))
        except InvalidConfigError:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if base_acc is not None:
            metrics["accuracy_drop"] = base_acc - metrics["accuracy"]
        for c in constraints:
            trial.set_constraint(str(c), c.violation(metrics[c.metric]))
        study.tell(trial, [metrics[m] for m in problem.objectives])
        done.append(metrics)
    return done


def _pickle_by_value() -> None:
    """The trial process cannot import this script: send its evaluator classes by value."""
    import cloudpickle

    module = sys.modules.get(PymooEvaluator.__module__)
    if module is not None and module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(module)


def run_paretotune(
    problem: Problem, sampler: str, seed: int, budget: int, path: str = "worker", **study_options: Any
) -> list[dict[str, float]]:
    """paretotune's callable-evaluator path, `budget` completed trials (the baseline included)."""
    import paretotune as pt
    from paretotune.workers.loop import run_worker

    _quiet()
    _pickle_by_value()
    with tempfile.TemporaryDirectory() as tmp:
        study = pt.create_study(
            f"fidelity-{seed}", storage=f"sqlite:///{tmp}/study.db", space=problem.space,
            objectives=dict(problem.objectives), constraints=dict(problem.constraints) or None,
            extra_metrics=list(problem.extra_metrics), sampler=sampler, seed=seed,
            **({"baseline": problem.baseline} if problem.baseline else {}), **study_options,
        )
        if path == "optimize":
            study.optimize(problem.evaluate, n_trials=budget, show_progress=False)
        else:
            run_worker(study.store, study.name, problem.evaluate, n_trials=budget, worker="main")
        done = [dict(t.metrics) for t in sorted(study.completed(), key=lambda t: t.number)]
        study.store.dispose() if hasattr(study.store, "dispose") else None
    return done


# -- the comparison ----------------------------------------------------------------------------


def budget_for(problem: str, sampler: str, budget: int | None = None) -> int:
    if sampler == "gp":
        return min(GP_BUDGET, budget or GP_BUDGET)
    if budget is not None:
        return budget
    return DIGITS_BUDGET if problem == "digits" else BUDGET


def compare(
    problems: Sequence[str],
    samplers: Sequence[str],
    seeds: Sequence[int],
    *,
    budget: int | None = None,
    gp_problems: Sequence[str] = GP_PROBLEMS,
    path: str = "worker",
    table: Path = TABLE,
    log_progress: bool = True,
    optuna_baseline: bool = False,
    optuna_sampler: str | None = None,
) -> dict[str, Any]:
    """`optuna_sampler`: the sampler Optuna's side uses (default: the same as paretotune's; a
    sampler of paretotune's own, `OWN_SAMPLERS`, is compared with what a user would use
    directly instead)."""
    from scipy.stats import mannwhitneyu

    rows = []
    started = time.perf_counter()
    for label in problems:
        problem = make_problem(label, table)
        for sampler in samplers:
            if sampler == "gp" and label not in gp_problems:
                continue
            n = budget_for(label, sampler, budget)
            t0 = time.perf_counter()
            ours = [problem.hv(run_paretotune(problem, sampler, s, n, path)) for s in seeds]
            t1 = time.perf_counter()
            theirs = optuna_sampler or sampler
            if theirs in OWN_SAMPLERS:
                raise SystemExit(f"{sampler!r} has no Optuna twin: pass --optuna-sampler (tpe, say)")
            plain = [problem.hv(run_optuna(problem, theirs, s, n, optuna_baseline)) for s in seeds]
            t2 = time.perf_counter()
            med_ours, med_plain = statistics.median(ours), statistics.median(plain)
            ratio = med_ours / med_plain if med_plain > 0 else float("nan")
            p = float(mannwhitneyu(ours, plain, alternative="two-sided").pvalue) if len(seeds) > 1 else float("nan")
            row = {
                "problem": label, "kind": problem.kind, "sampler": sampler, "optuna_sampler": theirs, "budget": n,
                "seeds": list(seeds), "hv_paretotune": ours, "hv_optuna": plain,
                "true_hv": problem.true_hv, "ref": problem.ref.tolist() if problem.ref is not None else None,
                "ref_kind": problem.ref_kind, "ratio": ratio, "p": p,
                "ok": bool(ratio >= TARGET_RATIO or p > ALPHA),
                "s_per_run_paretotune": (t1 - t0) / len(seeds), "s_per_run_optuna": (t2 - t1) / len(seeds),
            }
            rows.append(row)
            if log_progress:
                logging.warning("%s %s: ratio %.3f p %.3f (%.0f s)", label, sampler, ratio, p, t2 - t0)
    return {
        "rows": rows, "path": path, "seeds": list(seeds), "optuna_baseline": optuna_baseline, "wall_s": round(time.perf_counter() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(result: Mapping[str, Any]) -> str:
    lines = [
        "| problem | kind (ref) | sampler | budget | HV paretotune: median (of true) | HV Optuna: median (of true) "
        "| ratio | p | meets |",
        "|---|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    def cell(values: Sequence[float], true_hv: float) -> str:
        med = statistics.median(values)
        share = med / true_hv if true_hv and np.isfinite(true_hv) else float("nan")
        return f"{med:.4g} ({share:.3f})"

    for r in result["rows"]:
        p = f"**{r['p']:.3f}**" if r["p"] <= ALPHA else f"{r['p']:.3f}"
        theirs = r.get("optuna_sampler", r["sampler"])
        sampler = r["sampler"] if theirs == r["sampler"] else f"{r['sampler']} (Optuna: {theirs})"
        cells = [r["problem"], f"{r['kind']} ({r.get('ref_kind', '')})", sampler, r["budget"],
                 cell(r["hv_paretotune"], r["true_hv"]), cell(r["hv_optuna"], r["true_hv"]), f"{r['ratio']:.3f}", p,
                 "yes" if r["ok"] else "**no**"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    seeds = result["seeds"]
    also = "Optuna also measures the baseline first, " if result.get("optuna_baseline") else ""
    footer = f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), path {result['path']}, {also}" \
             f"{result['wall_s']} s, load {result['load_average']}"
    return "\n".join([*lines, "", footer])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"problems {list(QUICK_PROBLEMS)}, tpe and random, {QUICK_SEEDS} seeds (about 5 min)")
    parser.add_argument("--problems", nargs="+", default=None, help=f"default: all of {list(PROBLEMS)}")
    parser.add_argument("--samplers", nargs="+", default=None, choices=(*SAMPLERS, *OWN_SAMPLERS))
    parser.add_argument("--optuna-sampler", default=None, choices=SAMPLERS,
                        help="the sampler of Optuna's side (default: the same; needed for surrogate)")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {SEEDS} ({QUICK_SEEDS} with --quick)")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--budget", type=int, default=None,
                        help=f"completed trials (default {BUDGET}, digits {DIGITS_BUDGET}, gp at most {GP_BUDGET})")
    parser.add_argument("--gp-problems", nargs="+", default=None, help=f"default {list(GP_PROBLEMS)}")
    parser.add_argument("--path", choices=("worker", "optimize"), default="worker")
    parser.add_argument("--optuna-baseline", action="store_true",
                        help="ablation: Optuna's side also measures paretotune's baseline first")
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    problems = args.problems or (list(QUICK_PROBLEMS) if args.quick else list(PROBLEMS))
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        raise SystemExit(f"--problems: unknown {unknown}; known: {list(PROBLEMS)}")
    samplers = args.samplers or (["tpe", "random"] if args.quick else list(SAMPLERS))
    n_seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS)
    seeds = list(range(args.seed_offset, args.seed_offset + n_seeds))
    result = compare(
        problems, samplers, seeds, budget=args.budget,
        gp_problems=args.gp_problems or GP_PROBLEMS, path=args.path, optuna_baseline=args.optuna_baseline,
        optuna_sampler=args.optuna_sampler,
    )
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
