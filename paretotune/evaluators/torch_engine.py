"""The `torch` engine: eager fp32, bf16, int8 dynamic (torch.ao), optionally torch.compile.

The cached artifact is the fp32 module's weights and shape attributes (`serialize`), never a
pickled module: `restore` puts them on a fresh copy of the task's model, and `build_torch`
turns that into the engine's module again (deterministically: the same outputs every time).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from paretotune.errors import EvaluationError, InvalidConfigError

logger = logging.getLogger(__name__)


def to_tensors(
    inputs: Mapping[str, np.ndarray], names: Sequence[str], dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, ...]:
    """Inputs in `names` order; floating inputs cast to `dtype` when given (bf16)."""
    tensors = []
    for name in names:
        tensor = torch.from_numpy(np.ascontiguousarray(inputs[name]))
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors.append(tensor)
    return tuple(tensors)


def first_tensor(output: Any) -> torch.Tensor:
    """The model's first output: a tensor, the first of a tuple, or of a ModelOutput."""
    while not isinstance(output, torch.Tensor):
        if isinstance(output, Mapping):
            output = next(iter(output.values()))
        elif isinstance(output, (tuple, list)) and output:
            output = output[0]
        else:
            raise EvaluationError(
                f"model output must contain a tensor, got {type(output).__name__}"
            )
    return output


class TorchRunner:
    """Runs a module on numpy inputs and returns the first output as float32 numpy."""

    engine = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: Sequence[str],
        input_dtype: torch.dtype | None = None,
    ):
        self.module = module
        self.input_names = list(input_names)
        self.input_dtype = input_dtype

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A no-argument call running one batch, for the timing loop."""
        tensors = to_tensors(inputs, self.input_names, self.input_dtype)
        module = self.module

        def run() -> Any:
            with torch.inference_mode():
                return module(*tensors)

        return run

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return first_tensor(self.prepare(inputs)()).float().cpu().numpy()


def build_torch(
    module: torch.nn.Module, bit_width: int, per_channel: bool, quantize_layers: Sequence[str]
) -> torch.nn.Module:
    """Turn a (possibly pruned) fp32 module into the engine's module for `bit_width`."""
    module = module.eval()
    if bit_width == 32:
        return module
    if bit_width == 16:
        return module.to(torch.bfloat16)
    if bit_width == 8:
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        linears = [
            n for n in quantize_layers if isinstance(module.get_submodule(n), torch.nn.Linear)
        ]
        if not linears:
            raise InvalidConfigError(
                "bit_width=8 on engine='torch' quantizes Linear layers only (dynamic int8), and "
                "this configuration leaves none to quantize"
            )
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantize_dynamic(module, {name: qconfig for name in linears}, dtype=torch.qint8)
    raise InvalidConfigError(
        f"bit_width={bit_width} is not buildable on engine='torch'; allowed: 8, 16, 32"
    )


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    try:
        return torch.compile(module)  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001
        raise EvaluationError(f"torch.compile failed: {exc}") from exc


#: the torch artifact's layout version (`serialize`)
ARTIFACT_FORMAT = 1
_PRIMITIVES = (bool, int, float, str, type(None))


def _primitive(value: Any) -> bool:
    """int/float/bool/str/None, or tuples and lists of them (nested): no code, no objects."""
    if isinstance(value, (tuple, list)):
        return all(_primitive(v) for v in value)
    return isinstance(value, _PRIMITIVES)


def serialize(module: torch.nn.Module) -> bytes:
    """The fp32 module (after pruning, fine-tuning and sparsity) as data that carries no code.

    `{"format", "state": state_dict, "buffers": non-persistent buffers, "attrs": {module name:
    {attribute: primitive}}}`, saved with `torch.save`: only tensors, containers and primitives,
    so `restore` reads it with `weights_only=True`. The attributes carry what structured pruning
    changes besides tensor shapes (`in_features`, `num_attention_heads`, `normalized_shape`...).
    """
    state = module.state_dict()
    buffers = {
        name: tensor.detach().clone()
        for name, tensor in module.named_buffers()
        if name not in state
    }
    attrs = {
        name: {k: v for k, v in vars(sub).items() if _primitive(v)}
        for name, sub in module.named_modules()
    }
    buffer = io.BytesIO()
    torch.save(
        {"format": ARTIFACT_FORMAT, "state": state, "buffers": buffers, "attrs": attrs}, buffer
    )
    return buffer.getvalue()


def restore(data: bytes, fresh: torch.nn.Module) -> torch.nn.Module:
    """The module `serialize` wrote, rebuilt on `fresh` (the task's unmodified model), in place.

    Nothing is unpickled beyond tensors and primitives (`weights_only=True`). The recorded
    attributes are set, parameters and buffers whose saved shape differs are resized, and the
    state is loaded strictly. EvaluationError when the data is not such an artifact or does not
    fit the model's modules.
    """
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign data raises many types
        raise EvaluationError(
            f"torch artifact is not a state_dict artifact (format {ARTIFACT_FORMAT}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, Mapping) or payload.get("format") != ARTIFACT_FORMAT:
        got = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise EvaluationError(f"torch artifact format must be {ARTIFACT_FORMAT}, got {got!r}")
    state, buffers, attrs = payload.get("state"), payload.get("buffers"), payload.get("attrs")
    if not (isinstance(state, Mapping) and isinstance(buffers, Mapping) and isinstance(attrs, Mapping)):
        raise EvaluationError("torch artifact lacks its 'state', 'buffers' or 'attrs' mapping")
    modules = dict(fresh.named_modules())
    if set(attrs) != set(modules):
        raise EvaluationError(
            "torch artifact does not fit the task's model: modules "
            f"{sorted(set(attrs) ^ set(modules))[:5]} are in one and not the other"
        )
    for name, values in attrs.items():
        _set_attributes(name, modules[name], values)
    tensors = {**state, **buffers}
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise EvaluationError(f"torch artifact entry {key!r} is not a tensor")
    _resize(fresh, modules, tensors)
    try:
        fresh.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise EvaluationError(f"torch artifact does not fit the task's model: {exc}") from exc
    with torch.no_grad():
        for key, value in buffers.items():
            owner, leaf = _owner(modules, key)
            if leaf not in owner._buffers or owner._buffers[leaf] is None:
                raise EvaluationError(f"torch artifact buffer {key!r} is not one of the model's")
            owner._buffers[leaf].copy_(value)  # type: ignore[union-attr]
    return fresh.eval()


def _set_attributes(name: str, module: torch.nn.Module, values: Any) -> None:
    """Set the recorded primitive attributes; none may replace a non-primitive one (a
    submodule, a config object, a function)."""
    if not isinstance(values, Mapping):
        raise EvaluationError(f"torch artifact attributes of module {name!r} are not a mapping")
    current = vars(module)
    for attr, value in values.items():
        if not (isinstance(attr, str) and _primitive(value)):
            raise EvaluationError(
                f"torch artifact attribute {attr!r} of module {name!r} is not a primitive value"
            )
        if attr in current and not _primitive(current[attr]):
            raise EvaluationError(
                f"torch artifact sets attribute {attr!r} of module {name!r}, which the task's "
                f"model holds as a {type(current[attr]).__name__}, not a plain value"
            )
        current[attr] = value  # the instance dict: no parameter or module registration


def _owner(modules: Mapping[str, torch.nn.Module], key: str) -> tuple[torch.nn.Module, str]:
    prefix, _, leaf = key.rpartition(".")
    owner = modules.get(prefix)
    if owner is None:
        raise EvaluationError(f"torch artifact entry {key!r} names no module of the task's model")
    return owner, leaf


def _resize(
    module: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Give parameters and buffers the saved shapes (pruned layers are smaller); a parameter
    shared by several modules stays shared."""
    replaced: dict[int, torch.Tensor] = {}
    for key, saved in tensors.items():
        owner, leaf = _owner(modules, key)
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            if old is None or old.shape == saved.shape:
                continue
            new = replaced.get(id(old))
            if new is None:
                new = torch.nn.Parameter(
                    torch.empty(saved.shape, dtype=saved.dtype), requires_grad=old.requires_grad
                )
                replaced[id(old)] = new
            owner._parameters[leaf] = new  # type: ignore[assignment]
        elif leaf in owner._buffers:
            old_buffer = owner._buffers[leaf]
            if old_buffer is None or old_buffer.shape == saved.shape:
                continue
            owner._buffers[leaf] = torch.empty(saved.shape, dtype=saved.dtype)


def module_bytes(module: torch.nn.Module) -> int:
    """Serialized size of the module's weights (state_dict), the torch artifact's size."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes
