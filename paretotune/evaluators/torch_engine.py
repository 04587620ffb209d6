"""The `torch` engine: eager fp32, bf16, int8 dynamic (torch.ao), optionally torch.compile."""

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


def serialize(module: torch.nn.Module) -> bytes:
    """The whole module pickled (pruned shapes and quantized layers included)."""
    buffer = io.BytesIO()
    torch.save(module, buffer)
    return buffer.getvalue()


def deserialize(data: bytes) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), weights_only=False).eval()


def module_bytes(module: torch.nn.Module) -> int:
    """Serialized size of the module's weights (state_dict), the torch artifact's size."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes
