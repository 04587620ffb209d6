"""Reading a bundle back: `load_exported(path)` gives a callable on the exported model, run by
the engine's own runner (`Engine.load_exported` in the engine registry)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from paretotune import yamlsafe
from paretotune.errors import ConfigError

#: the layout of a bundle on disk (export/bundle.py writes it, this module reads it)
BUNDLE_FORMAT = 1
CONFIG_FILE = "config.yaml"
MEASUREMENTS_FILE = "measurements.json"
REPOSITORY_DIR = "model_repository"
#: written into every bundle: `overwrite` replaces only a directory that holds it
BUNDLE_MARKER = ".paretotune-bundle"


class ExportedModel:
    """A loaded bundle: ``model(inputs) -> {output name: array}``.

    `inputs` is a mapping of input name to array (or one array when the model has one input).
    """

    def __init__(self, path: Path, config: Mapping[str, Any]) -> None:
        self.path = path
        self.config = dict(config)
        self.engine: str = config["engine"]
        self.input_specs: list[dict[str, Any]] = list(config["io"]["inputs"])
        self.output_specs: list[dict[str, Any]] = list(config["io"]["outputs"])
        self.input_names = [s["name"] for s in self.input_specs]
        self.output_names = [s["name"] for s in self.output_specs]
        threads = int((config.get("resolved") or {}).get("threads") or 1)
        artifact = path / config["artifact"]
        if not artifact.is_file():
            raise ConfigError(f"bundle {str(path)!r}: artifact {config['artifact']!r} is missing")
        from paretotune.evaluators import engines

        loadable = [e.name for e in engines.registered() if e.exportable()]
        if self.engine not in loadable:
            raise ConfigError(f"bundle {str(path)!r}: engine {self.engine!r} cannot be loaded here; allowed: {loadable}")
        missing = [f for f in config.get("files") or [] if not (path / f).is_file()]
        if missing:
            raise ConfigError(f"bundle {str(path)!r}: files {missing} are missing")
        self._run = engines.get(self.engine).load_exported(path, {**config, "resolved": {**(config.get("resolved") or {}), "threads": threads}})

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, engine={self.engine!r})"

    def __call__(self, inputs: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.input_names) != 1:
                raise ConfigError(
                    f"inputs: this model takes {self.input_names}; pass a mapping of name to array"
                )
            inputs = {self.input_names[0]: inputs}
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ConfigError(f"inputs: missing {missing}; the model takes {self.input_names}, got {sorted(inputs)}")
        feeds = {
            s["name"]: np.ascontiguousarray(np.asarray(inputs[s["name"]]).astype(s["dtype"], copy=False))
            for s in self.input_specs
        }
        return dict(zip(self.output_names, self._run(feeds), strict=True))


def load_exported(path: str | os.PathLike[str]) -> ExportedModel:
    """Load a bundle written by `export`: a callable giving the exported model's outputs."""
    root = Path(path)
    config_path = root / CONFIG_FILE
    try:
        config = yamlsafe.load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{str(root)!r} is not an exported bundle: cannot read {CONFIG_FILE} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(config_path)!r} is not valid YAML: {exc}") from None
    if not isinstance(config, Mapping) or config.get("bundle_format") != BUNDLE_FORMAT:
        got = config.get("bundle_format") if isinstance(config, Mapping) else None
        raise ConfigError(
            f"{str(config_path)!r}: bundle_format must be {BUNDLE_FORMAT}, got {got!r}"
        )
    for key in ("engine", "artifact", "io"):
        if key not in config:
            raise ConfigError(f"{str(config_path)!r} has no {key!r}; re-export the bundle")
    return ExportedModel(root, config)
