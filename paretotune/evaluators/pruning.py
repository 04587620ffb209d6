"""Pruning: structured (physically smaller tensors, via torch-pruning) and unstructured.

Structured pruning removes whole output channels, neurons and attention heads ranked by their
L1 norm; torch-pruning's dependency graph fixes up the shapes of the layers that follow, so the
result is genuinely smaller and faster on dense kernels. Unstructured magnitude sparsity only
zeroes weights: it is a size option and gets no speed credit.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from paretotune.errors import EvaluationError

logger = logging.getLogger(__name__)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def last_layers(module: nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    """The last Linear/Conv executed on `args`: the layer whose outputs are the model's."""
    order: list[str] = []
    handles = [
        sub.register_forward_hook(lambda *_, name=name: order.append(name))
        for name, sub in module.named_modules()
        if isinstance(sub, PRUNABLE)
    ]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return order[-1:]


def _attention_heads(module: nn.Module) -> dict[nn.Module, int]:
    """q/k/v projections of Hugging Face style attention blocks, with their head counts."""
    heads: dict[nn.Module, int] = {}
    for sub in module.modules():
        count = getattr(sub, "num_attention_heads", None)
        projections = [getattr(sub, n, None) for n in ("query", "key", "value")]
        linears = [p for p in projections if isinstance(p, nn.Linear)]
        if isinstance(count, int) and len(linears) == len(projections):
            for projection in linears:
                heads[projection] = count
    return heads


def _fix_attention_attributes(module: nn.Module, head_counts: dict[nn.Module, int]) -> None:
    for sub in module.modules():
        query = getattr(sub, "query", None)
        if not isinstance(query, nn.Linear) or query not in head_counts:
            continue
        if hasattr(sub, "num_attention_heads"):  # plain attributes, not parameters or modules
            count = head_counts[query]
            setattr(sub, "num_attention_heads", count)  # noqa: B010
            setattr(sub, "all_head_size", query.out_features)  # noqa: B010
            if hasattr(sub, "attention_head_size"):
                setattr(sub, "attention_head_size", query.out_features // count)  # noqa: B010


def prune_structured(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    ratio: float,
    ignore: Sequence[str] | None = None,
) -> nn.Module:
    """Remove `ratio` of the channels/neurons/heads of every prunable group, L1-ranked, in place.

    `ignore` names modules whose output channels are kept (default: the last layer, so the
    model's output shape does not change). Attention heads are removed whole.
    """
    import torch_pruning as tp

    if ratio <= 0:
        return module
    module.eval()
    names = list(ignore) if ignore is not None else last_layers(module, args)
    try:
        ignored = [module.get_submodule(name) for name in names]
    except AttributeError as exc:
        raise EvaluationError(
            f"prune_ignore names a module the model does not have: {exc}"
        ) from exc
    heads = _attention_heads(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pruner = tp.pruner.MetaPruner(
                module,
                args,
                importance=tp.importance.GroupMagnitudeImportance(p=1),
                pruning_ratio=ratio,
                ignored_layers=ignored,
                num_heads=heads,
                prune_num_heads=bool(heads),
                prune_head_dims=False,
                head_pruning_ratio=ratio,
            )
            pruner.step()
        except Exception as exc:  # noqa: BLE001 - graph tracing fails in many ways
            raise EvaluationError(
                f"structured pruning (prune_ratio={ratio}) failed: {exc!r}"
            ) from exc
    if heads:
        _fix_attention_attributes(module, {m: pruner.num_heads.get(m, n) for m, n in heads.items()})
    return module


def apply_sparsity(module: nn.Module, sparsity: float) -> tuple[int, int]:
    """Zero the smallest-magnitude `sparsity` share of each Linear/Conv weight, in place.

    Returns (zeroed weights, total weights) for the size accounting.
    """
    zeros = total = 0
    if sparsity <= 0:
        return zeros, total
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, PRUNABLE):
                weight = sub.weight
                k = int(weight.numel() * sparsity)
                if k > 0:
                    threshold = weight.abs().flatten().kthvalue(k).values
                    weight.masked_fill_(weight.abs() <= threshold, 0.0)
                zeros += int((weight == 0).sum())
                total += weight.numel()
    return zeros, total


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
