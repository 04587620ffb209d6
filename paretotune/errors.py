"""The exception tree of paretotune.

A leaf module: every package may import it (it imports nothing of ours). Errors raised at a
library boundary are mapped to these with ``raise X(...) from exc`` so users catch one tree.
"""

from __future__ import annotations


class ParetotuneError(Exception):
    """Base of every error paretotune raises on purpose."""


class ConfigError(ParetotuneError, ValueError):
    """Bad user input: a space, spec, objective, sampler or selection rule that is not allowed.

    The message names the field, the value it got and what is allowed.
    """


class InvalidConfigError(ParetotuneError):
    """A configuration that cannot be built on its engine. Recorded as INVALID, never built."""


class TaskError(ParetotuneError):
    """A task that cannot be used: missing file, failed import, inputs that don't run."""


class EvaluationError(ParetotuneError):
    """A trial's evaluation failed (crash, timeout, non-finite metric, missing metric)."""


class StorageError(ParetotuneError):
    """The study store is unreachable or refused us. The message never contains a password."""


class StudyError(ParetotuneError):
    """A study-level problem: name clash, missing study, budget or abort."""
