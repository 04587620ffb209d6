"""Deployment bundles: one chosen trial, rebuilt or copied, verified, ready to serve.

`export(study, trial, out_dir)` writes::

    out_dir/
      config.yaml            the resolved config, task, study, trial, hardware, versions, I/O
      model.onnx | model.pt  the artifact (ONNX with its quantization, or TorchScript)
      model_repository/<name>/config.pbtxt, 1/<model file>   a Triton model repository
      measurements.json      the trial's and the baseline's metrics and details, and its
                             latest confirmation in fresh processes (if any)
      README.md              how to load and serve it
      .paretotune-bundle     the marker: `overwrite` replaces only a directory holding it

The artifact comes from the artifact cache when it is on this machine and is rebuilt from the
config with the study's task when it is not. Before the bundle is moved into place it is loaded
back with `load_exported` and its accuracy re-measured on the task's validation set (untimed);
a difference from the recorded accuracy beyond `tolerance` is a `VerificationError`, never a
silent export.

The package: `bundle` (export and its checks), `triton` (the model repository's config),
`manifest` (config.yaml, measurements.json, README) and `load` (reading a bundle back with the
engine's own runner). Engines supply their artifact, I/O and Triton layout through the engine
registry (`paretotune.evaluators.engines`); the pick language is `paretotune.search.pick`.
"""

from __future__ import annotations

from paretotune.export.bundle import DEFAULT_TOLERANCE, Bundle, VerificationError, export
from paretotune.export.load import BUNDLE_MARKER, ExportedModel, load_exported
from paretotune.export.triton import triton_config
from paretotune.search.pick import parse_pick, select_trial

__all__ = [
    "BUNDLE_MARKER",
    "DEFAULT_TOLERANCE",
    "Bundle",
    "ExportedModel",
    "VerificationError",
    "export",
    "load_exported",
    "parse_pick",
    "select_trial",
    "triton_config",
]
