"""The digits CNN, its data split and its (deterministic, few-second) training."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

SEED = 0
EPOCHS = 6
FINETUNE_EPOCHS = 2
BATCH = 32
VALIDATION_SIZE = 497


@dataclass(frozen=True)
class DigitsData:
    train_x: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    train_y: np.ndarray  # (N,) int64
    val_x: np.ndarray
    val_y: np.ndarray


@functools.lru_cache(maxsize=1)
def load_data() -> DigitsData:
    """scikit-learn's bundled 8x8 digits, shuffled with a fixed seed and split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    n = len(x) - VALIDATION_SIZE
    return DigitsData(x[:n], y[:n], x[n:], y[n:])


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 2 * 2, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv3(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def train(model: nn.Module, epochs: int, lr: float = 2e-3) -> None:
    """Adam on the training split, one thread and a fixed seed: the same weights everywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            _train_steps(model, epochs, lr)
    finally:
        torch.set_num_threads(threads)
        model.eval()


def _train_steps(model: nn.Module, epochs: int, lr: float) -> None:
    data = load_data()
    torch.manual_seed(SEED)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()


def finetune(model: nn.Module) -> None:
    """Recover accuracy after structured pruning: two short epochs."""
    train(model, epochs=FINETUNE_EPOCHS, lr=1e-3)


def weights_path() -> Path:
    """Where this machine keeps the trained weights: the user's cache folder, under a key of
    this file's source and the torch, numpy and scikit-learn versions (what decides them)."""
    import sklearn

    versions = f"{torch.__version__}|{np.__version__}|{sklearn.__version__}".encode()
    key = hashlib.sha256(Path(__file__).read_bytes() + versions).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "paretotune" / f"digits-cnn-{key}.pt"


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    """The trained weights: trained once per machine (a few seconds, fixed seed, one thread)
    and kept in `weights_path`, so a fresh trial process loads them instead of training."""
    path = weights_path()
    try:
        return dict(torch.load(path, weights_only=True))
    except FileNotFoundError:
        pass
    except Exception as exc:  # a damaged file: train again and replace it
        logger.warning("digits weights in %s unreadable (%s); training again", path, exc)
    with torch.inference_mode(False):
        torch.manual_seed(SEED)
        model = DigitsCNN()
        train(model, epochs=EPOCHS)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save(state, partial)
        os.replace(partial, path)  # atomic: a concurrent process reads the old file or the new
    except OSError as exc:  # a read-only home: every process trains, as before
        logger.info("digits weights not kept (%s)", exc)
    return state


def build_model() -> DigitsCNN:
    """The trained CNN (trained once per machine, a few seconds, fixed seed: `_trained_state`)."""
    model = DigitsCNN()
    model.load_state_dict(_trained_state())
    return model.eval()
