"""opt.hypers views over torch optimizers and the course's Optimizer family (fastloop/course/optim.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastloop.course.optim import HyperView, Optimizer, adam_opt, add_hypers, sgd_mom_opt, sgd_opt


def test_hypers_aliases_for_sgd_adam_and_rmsprop():
    p = [nn.Parameter(torch.zeros(2))]
    sgd = add_hypers(torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
    h = sgd.hypers[0]
    assert isinstance(h, HyperView) and (h["lr"], h["mom"], h["wd"]) == (0.1, 0.9, 0.01)
    h["mom"], h["lr"] = 0.8, 0.2
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["lr"] == 0.2
    assert "params" not in dict(h) and set(h) >= {"lr", "mom", "wd"}

    adam = add_hypers(torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.99), eps=1e-6))
    h = adam.hypers[0]
    assert (h["mom"], h["sqr_mom"], h["eps"]) == (0.9, 0.99, 1e-6)
    h["sqr_mom"] = 0.95
    h["mom"] = 0.85
    assert adam.param_groups[0]["betas"] == (0.85, 0.95)

    rms = add_hypers(torch.optim.RMSprop(p, lr=1e-2, alpha=0.9))
    assert rms.hypers[0]["sqr_mom"] == 0.9
    with pytest.raises(KeyError):
        rms.hypers[0]["params"]


def test_add_hypers_is_idempotent_and_follows_new_groups():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = add_hypers(torch.optim.SGD([p], lr=0.1))
    views = opt.hypers
    assert add_hypers(opt).hypers is views
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert [h["lr"] for h in add_hypers(opt).hypers] == [0.1, 0.5]
    course = sgd_opt([p], lr=0.1)
    assert add_hypers(course) is course and course.hypers == [{"lr": 0.1, "wd": 0.0}]


def _step_once(opt_builder, torch_builder, steps=3):
    torch.manual_seed(0)
    w = torch.randn(5)
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    o1, o2 = opt_builder([a]), torch_builder([b])
    for i in range(steps):
        g = torch.randn(5, generator=torch.Generator().manual_seed(i))
        a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
        o1.zero_grad()
        o2.zero_grad()
    return a, b


def test_course_sgd_matches_torch_sgd_and_zero_grad_zeroes_in_place():
    a, b = _step_once(lambda p: sgd_opt(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1))
    assert torch.allclose(a, b)
    assert a.grad is not None and bool((a.grad == 0).all())


def test_course_sgd_with_true_weight_decay():
    a, _ = _step_once(lambda p: sgd_opt(p, lr=0.1, wd=0.1), lambda p: torch.optim.SGD(p, lr=0.1), steps=1)
    # one step: the decay first (w * (1 - lr*wd)), then the gradient step
    torch.manual_seed(0)
    w = torch.randn(5)
    g = torch.randn(5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.data, w * (1 - 0.01) - 0.1 * g)


def test_course_momentum_matches_torch_sgd_momentum():
    a, b = _step_once(lambda p: sgd_mom_opt(p, lr=0.1, wd=0.0), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    assert torch.allclose(a, b, atol=1e-6)


def test_course_adam_matches_torch_adam():
    a, b = _step_once(lambda p: adam_opt()(p, lr=0.01, eps=1e-8),
                      lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.99), eps=1e-8))
    assert torch.allclose(a, b, atol=1e-6)


def test_adam_opt_typo_creates_an_unused_key():
    opt = adam_opt(mom_sqr=0.5)([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert opt.hypers[0]["mom_sqr"] == 0.5 and opt.hypers[0]["sqr_mom"] == 0.99


def test_optimizer_groups_are_lists_of_tensors():
    p = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    opt = Optimizer([p[:1], p[1:]], steppers=[], lr=0.1)
    assert len(opt.param_groups) == 2 and isinstance(opt.param_groups[0], list) and len(opt.hypers) == 2
