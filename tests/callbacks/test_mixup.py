"""MixUp: `MixUpCallback`'s batch mixing, `MixUpLoss`, the `mixup` function, against fastai 1.0.61's numbers."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastloop.callback import Callback
from fastloop.callbacks.mixup import MixUpCallback, MixUpLoss, mixup
from tests.callbacks.v1_scenarios_b import assert_close
from tests.callbacks.v1_scenarios_b import run as run_scenarios
from tests.conftest import make_learner

REFERENCE = json.loads((Path(__file__).parent / "v1_reference_b.json").read_text())


class Seen(Callback):
    "Records the batch after MixUpCallback (order 5 > 0) and the loss function in use."

    _order = 5

    def __init__(self, learn):
        self.learn, self.train, self.valid, self.loss_funcs = learn, [], [], []

    def on_batch_begin(self, last_input, last_target, train, **kwargs):
        (self.train if train else self.valid).append((last_input, last_target))
        self.loss_funcs.append(self.learn.loss_func)


def test_mixup_matches_fastai_1_0_61():
    """Default, a plain-function loss with alpha=1, stack_y=False on 2-D float targets, and stack_x: the mixed
    batches, losses, final weights and the restored loss function are fastai 1.0.61's (v1_reference_b.json)."""
    ours = run_scenarios("fastloop", only=["mixup"])["mixup"]
    assert_close(ours, REFERENCE["mixup"], rel=1e-5, abs_=1e-6, where="mixup")


def test_training_batches_are_mixed_as_the_formula_says_and_validation_batches_are_not(tmp_path):
    """lambda ~ Beta(alpha, alpha) per item from numpy, max(lambda, 1-lambda), a torch.randperm shuffle; input
    lambda*x + (1-lambda)*x[perm]; target [y, y[perm], lambda] as float."""
    learn = make_learner(tmp_path, silent=True)
    seen = Seen(learn)
    raw = []

    class Raw(Callback):  # before MixUpCallback: the batch as the loader gave it, and the RNG states
        _order = -5

        def on_batch_begin(self, last_input, last_target, train, **kwargs):
            if train:
                raw.append((last_input, last_target, np.random.get_state(), torch.get_rng_state()))

    mixup(learn, alpha=0.4)
    learn.fit(1, 1e-3, callbacks=[seen, Raw()])
    assert len(seen.train) == 4 and len(seen.valid) == 2
    for (x, y, np_state, torch_state), (mx, my) in zip(raw, seen.train):
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        lam = np.random.beta(0.4, 0.4, len(y))
        lam = torch.tensor(np.maximum(lam, 1 - lam), dtype=torch.float32)
        perm = torch.randperm(len(y))
        assert (lam >= 0.5).all()
        assert torch.allclose(mx, x * lam[:, None] + x[perm] * (1 - lam[:, None]))
        assert my.shape == (16, 3) and my.dtype == torch.float32
        assert torch.equal(my, torch.stack([y.float(), y[perm].float(), lam], 1))
    for _, vy in seen.valid:
        assert vy.dtype == torch.int64 and vy.dim() == 1


def test_stack_x_gives_the_model_a_list_and_stack_y_false_blends_targets(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    cb = MixUpCallback(learn, stack_x=True, stack_y=False)
    x, y = torch.randn(6, 4), torch.arange(6).float()
    np.random.seed(0)
    torch.manual_seed(0)
    out = cb.on_batch_begin(last_input=x, last_target=y, train=True)
    xs, ys = out["last_input"], out["last_target"]
    assert isinstance(xs, list) and len(xs) == 3 and xs[0] is x
    lam = xs[2]
    perm = [int((xs[1][i] == x).all(1).nonzero()) for i in range(6)]
    assert torch.equal(xs[1], x[perm])
    assert torch.allclose(ys, y * lam + y[perm] * (1 - lam))
    y2 = torch.randn(6, 3)
    out = cb.on_batch_begin(last_input=x, last_target=y2, train=True)
    assert out["last_target"].shape == (6, 3)  # a 2-D target blends with lambda broadcast per row
    assert cb.on_batch_begin(last_input=x, last_target=y, train=False) is None


def test_mixup_loss_weighs_the_two_targets_and_reduces():
    out = torch.randn(4, 3)
    target = torch.tensor([[0, 1, 0.75], [2, 2, 1.0], [1, 0, 0.5], [0, 2, 0.6]])
    crit = nn.CrossEntropyLoss()
    loss = MixUpLoss(crit)
    assert crit.reduction == "none"  # while wrapped
    per_item = (F.cross_entropy(out, target[:, 0].long(), reduction="none") * target[:, 2]
                + F.cross_entropy(out, target[:, 1].long(), reduction="none") * (1 - target[:, 2]))
    assert torch.allclose(loss(out, target), per_item.mean())
    plain = torch.tensor([0, 1, 2, 0])
    assert torch.allclose(loss(out, plain), F.cross_entropy(out, plain))
    assert torch.allclose(MixUpLoss(F.cross_entropy, reduction="sum")(out, target), per_item.sum())
    assert torch.allclose(MixUpLoss(F.cross_entropy, reduction="none")(out, target), per_item)
    assert loss.get_old() is crit and crit.reduction == "mean"
    assert MixUpLoss(F.cross_entropy).get_old() is F.cross_entropy
    assert isinstance(loss, nn.Module)


def test_loss_is_wrapped_during_the_fit_and_restored_after_it_even_on_error(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    crit = learn.loss_func
    seen = Seen(learn)
    mixup(learn)
    learn.fit(1, 1e-3, callbacks=[seen])
    assert all(isinstance(f, MixUpLoss) for f in seen.loss_funcs)  # validation too, as in v1
    assert learn.loss_func is crit and crit.reduction == "mean"

    class Boom(Callback):
        def on_batch_end(self, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        learn.fit(1, 1e-3, callbacks=[Boom()])
    assert learn.loss_func is crit and crit.reduction == "mean"
    learn.loss_func = F.cross_entropy
    learn.fit(1, 1e-3)
    assert learn.loss_func is F.cross_entropy


def test_mixup_function_adds_a_partial_to_callback_fns_and_a_fresh_callback_each_fit(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    assert mixup(learn, alpha=0.2, stack_x=True, stack_y=False) is learn
    fn = learn.callback_fns[-1]
    assert isinstance(fn, partial) and fn.func is MixUpCallback
    assert fn.keywords == {"alpha": 0.2, "stack_x": True, "stack_y": False}
    learn = make_learner(tmp_path, silent=True)
    mixup(learn)
    learn.fit(1, 1e-3)
    first = learn.mix_up_callback
    learn.fit(1, 1e-3)
    assert learn.mix_up_callback is not first and first.alpha == 0.4
