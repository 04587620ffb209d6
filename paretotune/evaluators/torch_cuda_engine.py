"""The `torch_cuda` engine: PyTorch on a CUDA device, fp32, fp16 or bf16, optionally
`torch.compile`d, optionally replayed as CUDA graphs.

A timed batch is copied from page-locked host memory into static device tensors, run (or its
captured graph replayed) and its output copied back, all on the current stream; CUDA events
time the whole batch and the compute alone, read after the stream is synchronized.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators.torch_engine import first_tensor

logger = logging.getLogger(__name__)

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
WARMUP_BEFORE_CAPTURE = 3
MAX_GRAPHS = 4  # captured graphs kept (one per input shape: timing batch + validation shapes)


def compute_dtype(bit_width: int, half: str) -> torch.dtype | None:
    """The module's dtype: None (fp32) or fp16/bf16 for bit_width=16."""
    if bit_width == 32:
        return None
    if bit_width == 16:
        return HALF_DTYPES[half]
    raise InvalidConfigError(
        f"bit_width={bit_width} is not buildable on engine='torch_cuda'; allowed: 16, 32"
    )


def bf16_native() -> bool:
    """True when the GPU runs bf16 natively (compute capability 8.0+). PyTorch's
    `is_bf16_supported()` counts emulation by default, so pre-Ampere GPUs would pass and their
    bf16 timings would measure an emulation nobody would ship."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def check_device(dtype: torch.dtype | None) -> None:
    """InvalidConfigError when this process has no CUDA device, or it lacks native bf16."""
    if not torch.cuda.is_available():
        raise InvalidConfigError(
            "engine='torch_cuda' needs CUDA: torch.cuda.is_available() is False"
        )
    if dtype is torch.bfloat16 and not bf16_native():
        raise InvalidConfigError(
            f"half='bf16' is not buildable on {torch.cuda.get_device_name()} (no native bf16: "
            "compute capability 8.0 or newer); "
            "allowed there: half='fp16'"
        )


def build_torch_cuda(module: torch.nn.Module, bit_width: int, half: str) -> torch.nn.Module:
    """The (pruned) fp32 module cast to the engine's dtype, kept on the CPU for the artifact
    cache; the runner moves it to the device."""
    dtype = compute_dtype(bit_width, half)
    check_device(dtype)
    module = module.eval()
    return module if dtype is None else module.to(dtype)


class _Static:
    """Device tensors at fixed addresses for one input shape, and its captured graph."""

    def __init__(self, inputs: Sequence[torch.Tensor]) -> None:
        self.inputs = [torch.empty_like(t, device="cuda") for t in inputs]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None


class TorchCudaRunner:
    """Runs a module on the GPU from numpy inputs; returns the first output as float32 numpy."""

    engine = "torch_cuda"

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: Sequence[str],
        dtype: torch.dtype | None = None,
        cuda_graphs: bool = False,
        compile: bool = False,
    ) -> None:
        check_device(dtype)
        self.module = module.to("cuda").eval()
        if compile:
            from paretotune.evaluators.torch_engine import compile_module

            self.module = compile_module(self.module)
        self.input_names = list(input_names)
        self.dtype = dtype
        self.cuda_graphs = cuda_graphs
        self._static: OrderedDict[tuple[Any, ...], _Static] = OrderedDict()
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

    def _host(self, inputs: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        """Page-locked host tensors in the module's dtype (floating inputs cast once here)."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EvaluationError(f"the model needs inputs {missing}; got {list(inputs)}")
        tensors = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name]))
            if self.dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(self.dtype)
            tensors.append(tensor.pin_memory())
        return tensors

    def _forward(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return first_tensor(self.module(*tensors)).float()

    def _slot(self, host: Sequence[torch.Tensor]) -> _Static:
        key = tuple((tuple(t.shape), t.dtype) for t in host)
        slot = self._static.get(key)
        if slot is not None:
            self._static.move_to_end(key)
            return slot
        slot = _Static(host)
        if self.cuda_graphs:
            for static, tensor in zip(slot.inputs, host, strict=True):
                static.copy_(tensor)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(WARMUP_BEFORE_CAPTURE):
                    self._forward(slot.inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.inference_mode(), torch.cuda.graph(graph):
                    slot.output = self._forward(slot.inputs)
            except Exception as exc:  # noqa: BLE001 - capture fails on sync/CPU ops in forward
                raise EvaluationError(
                    f"capturing the model as a CUDA graph failed (cuda_graphs=True): {exc}"
                ) from exc
            slot.graph = graph
        self._static[key] = slot
        while len(self._static) > MAX_GRAPHS:
            self._static.popitem(last=False)
        return slot

    def _enqueue(
        self, host: Sequence[torch.Tensor], slot: _Static, out: torch.Tensor | None,
        events: Sequence[torch.cuda.Event] = (),
    ) -> torch.Tensor:
        if events:
            events[0].record()
        for static, tensor in zip(slot.inputs, host, strict=True):
            static.copy_(tensor, non_blocking=True)
        if events:
            events[1].record()
        if slot.graph is not None and slot.output is not None:
            slot.graph.replay()
            result = slot.output
        else:
            with torch.inference_mode():
                result = self._forward(slot.inputs)
        if events:
            events[2].record()
        if out is None:
            out = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
        out.copy_(result, non_blocking=True)
        if events:
            events[3].record()
        return out

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One batch end to end: copy in, compute, copy out, synchronize."""
        host = self._host(inputs)
        slot = self._slot(host)
        out = self._enqueue(host, slot, None)
        torch.cuda.synchronize()

        def run() -> Any:
            self._enqueue(host, slot, out)
            torch.cuda.synchronize()
            return out

        return run

    def prepare_timed(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], tuple[float, float]]:
        """One batch end to end, measured by CUDA events: (end-to-end ms, compute ms)."""
        host = self._host(inputs)
        slot = self._slot(host)
        out = self._enqueue(host, slot, None)
        events = self._events

        def sample() -> tuple[float, float]:
            self._enqueue(host, slot, out, events)
            events[3].synchronize()
            return events[0].elapsed_time(events[3]), events[1].elapsed_time(events[2])

        return sample

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array(self.prepare(inputs)().numpy(), dtype=np.float32, copy=True)
