"""A small CNN trained on scikit-learn's bundled digits in a few seconds, with a fixed seed.

`task` is the paretotune Task (accuracy on 497 held-out images); refer to it from YAML as
"examples.digits:task". After structured pruning two short epochs of fine-tuning recover accuracy.
"""

from __future__ import annotations

from examples.digits.model import DigitsCNN, build_model, finetune, load_data
from paretotune.evaluators import Task

_data = load_data()

task = Task(
    build_model,
    example_inputs={"image": _data.train_x[:32]},
    calibration=[{"image": _data.train_x[i : i + 64]} for i in range(0, 256, 64)],
    validation=[
        ({"image": _data.val_x[i : i + 100]}, _data.val_y[i : i + 100])
        for i in range(0, len(_data.val_x), 100)
    ],
    output_names=["logits"],
    finetune=finetune,
    name="digits",
)

__all__ = ["DigitsCNN", "build_model", "load_data", "task"]
