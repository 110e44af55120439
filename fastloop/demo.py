"""A first look at fastloop: train a small convnet on handwritten digits in a few seconds.

Run it with::

    python -m fastloop.demo                  # 5 epochs, lr 3e-3, plots in ./demo_output
    python -m fastloop.demo --epochs 3 --lr 1e-2 --out /tmp/plots --seed 1

The data is scikit-learn's bundled ``digits`` set (1,797 grayscale 8x8 images, 10 classes; nothing is
downloaded), split once and for all into 1,437 training and 360 validation images.  Training is plain
fastai v1 code -- ``DataBunch.create``, ``Learner(..., metrics=[accuracy])``, ``learn.fit`` -- so the live
progress bar and the table of epochs are the ones a fastai v1 user knows.  Afterwards the `Recorder` draws
the losses, the learning rate and the accuracy into PNG files.

scikit-learn is only needed here: ``pip install 'fastloop[demo]'``.  `main` is importable, so the demo can be
run (and tested) from Python: ``main(["--epochs", "1"])`` returns the final accuracy, the elapsed time and
the folder that holds the plots.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from .basic_data import DataBunch
from .basic_train import Learner
from .metrics import accuracy

__all__ = ["main", "load_digits_data", "make_model", "parse_args"]

#: Images held out for validation; the split itself is fixed (it does not depend on ``--seed``).
N_VALID = 360
SPLIT_SEED = 0
BATCH_SIZE = 64
RULE = "-" * 78

SKLEARN_MISSING = (
    "The fastloop demo trains on scikit-learn's bundled 'digits' images, but scikit-learn is not installed.\n"
    "Install it with:  pip install 'fastloop[demo]'"
)


def load_digits_data() -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's digits as ``(train, valid)`` `TensorDataset`s of ``(1, 8, 8)`` float images in [0, 1].

    The validation set is a fixed, class-stratified sample of `N_VALID` images.  Raises `ImportError` with
    installation advice when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError(SKLEARN_MISSING) from e
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, valid_idx = train_test_split(np.arange(len(y)), test_size=N_VALID, random_state=SPLIT_SEED,
                                            stratify=digits.target)
    train_idx, valid_idx = torch.as_tensor(train_idx), torch.as_tensor(valid_idx)
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[valid_idx], y[valid_idx])


def _conv_block(n_in: int, n_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(n_out),
                         nn.ReLU())


def make_model(n_classes: int = 10) -> nn.Module:
    """A small convnet for 8x8 images: three conv blocks (8x8 -> 4x4 -> 2x2), average pooling, a linear head."""
    return nn.Sequential(_conv_block(1, 16, 1), _conv_block(16, 32, 2), _conv_block(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when `argv` is None)."""
    p = argparse.ArgumentParser(prog="python -m fastloop.demo",
                                description="Train a small convnet on scikit-learn's digits with fastloop's Learner "
                                            "and save plots of the training run.")
    p.add_argument("--epochs", type=_positive_int, default=5, help="number of epochs (default: %(default)s)")
    p.add_argument("--lr", type=_positive_float, default=3e-3, help="learning rate (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="folder for the PNG plots, created if needed (default: ./%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed for weights and shuffling (default: %(default)s)")
    return p.parse_args(argv)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save(fig: Any, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save_plots(learn: Learner, out: Path) -> dict[str, Path]:
    """Save the Recorder's three plots into `out`; return ``{name: path}``."""
    rec = learn.recorder
    out.mkdir(parents=True, exist_ok=True)
    losses = rec.plot_losses(return_fig=True, show_grid=True)
    for line in losses.axes[0].get_lines():
        if line.get_label() == "Validation":  # one point per epoch: show them
            line.set_marker("o")
    losses.axes[0].legend()  # again, so that the legend shows the markers
    lr = rec.plot_lr(return_fig=True)
    lr.axes[0].set_ylim(0, 1.25 * max(float(np.max(v)) for v in rec.lrs))  # a constant lr reads as one
    metrics = rec.plot_metrics(return_fig=True, show_grid=True)
    for ax in metrics.axes:
        for line in ax.get_lines():
            line.set_marker("o")
    return {
        "losses": _save(losses, "Loss (train: smoothed, per batch)", out / "losses.png"),
        "lr": _save(lr, "Learning rate per batch", out / "lr.png"),
        "metrics": _save(metrics, "Validation accuracy after each epoch", out / "metrics.png"),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the demo with the command-line arguments `argv`; print a header, the training table and a summary.

    Returns ``{"accuracy": float, "elapsed": seconds for the whole run, "train_seconds": seconds in fit,
    "out_dir": Path of the plots folder, "plots": {name: Path}}``.
    """
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, works without a display
    start = time.perf_counter()
    train_ds, valid_ds = load_digits_data()
    _seed_everything(args.seed)
    data = DataBunch.create(train_ds, valid_ds, bs=BATCH_SIZE, num_workers=0)
    model = make_model()
    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=[accuracy])
    n_params = sum(p.numel() for p in model.parameters())
    n_train, n_valid = len(train_ds), len(valid_ds)

    print(RULE)
    print("fastloop demo: a small convnet learns to read handwritten digits")
    print(RULE)
    print(f"  data    scikit-learn's digits: {n_train + n_valid:,} grayscale 8x8 images of 0-9 (no download),")
    print(f"          split once: {n_train:,} to train on, {n_valid} to validate on")
    print(f"  model   3 conv blocks + a linear head, {n_params:,} parameters, on {data.device.type}")
    print("  code    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=[accuracy])")
    print(f"          learn.fit({args.epochs}, lr={args.lr:g})        # seed {args.seed}")
    print(RULE)

    # The batches are tiny: one thread is as fast as several, and much faster on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        learn.fit(args.epochs, lr=args.lr)
    finally:
        torch.set_num_threads(threads)
    train_seconds = time.perf_counter() - t0

    rec = learn.recorder
    accs = [float(m[0]) for m in rec.metrics]
    plots = _save_plots(learn, args.out)
    elapsed = time.perf_counter() - start
    out_dir = args.out.resolve()
    n_batches = len(data.train_dl)
    width = max(len(p.name) for p in plots.values())
    what = {"losses": "training and validation loss", "lr": "learning rate per batch",
            "metrics": "validation accuracy per epoch"}

    print(RULE)
    print(f"Validation accuracy: {accs[-1]:.1%} ({round(accs[-1] * n_valid)} of {n_valid} digits right)")
    print(f"Time taken:          {elapsed:.1f} s ({train_seconds:.1f} s of training)")
    print(f"Plots saved in:      {out_dir}")
    for name, path in plots.items():
        print(f"  {path.name:<{width}}  {what[name]}")
    print("What happened:")
    trend = [f"{a:.1%}" for a in accs]
    if len(trend) > 6:
        trend = trend[:2] + ["..."] + trend[-3:]
    epochs = f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}"
    print(f"  - {epochs} x {n_batches} shuffled batches of {BATCH_SIZE} images = {args.epochs * n_batches} Adam steps "
          f"at a constant lr of {args.lr:g}.")
    print(f"  - After each epoch, validation on the {n_valid} held-out images: accuracy " + " -> ".join(trend) + ".")
    print("  - The Recorder callback logged each batch's loss and lr and printed the table; the plots come from it.")
    print(RULE)
    return {"accuracy": accs[-1], "elapsed": elapsed, "train_seconds": train_seconds, "out_dir": out_dir,
            "plots": plots}


if __name__ == "__main__":
    try:
        main()
    except ImportError as e:
        if str(e) != SKLEARN_MISSING:
            raise
        raise SystemExit(str(e)) from None
