"""OptimWrapper (spec §12, §20.9), Scheduler and annealing (§13), SmoothenValue (§8)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fastloop.callback import (
    OptimWrapper,
    Scheduler,
    SmoothenValue,
    annealing_cos,
    annealing_exp,
    annealing_linear,
    annealing_no,
    annealing_poly,
)
from fastloop.torch_core import AdamW

SGD = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
ADAM = partial(torch.optim.Adam, betas=(0.9, 0.99))
RMSPROP = partial(torch.optim.RMSprop, alpha=0.99, momentum=0.0)


def _layer_groups(seed: int = 0) -> list[nn.Sequential]:
    """Two layer groups: (Linear, BatchNorm1d) and (Linear, LayerNorm, Linear)."""
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
        nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2)),
    ]


def _make(opt_func=SGD, lr=1e-2, wd=0.0, true_wd=False, bn_wd=True, groups=None) -> OptimWrapper:
    groups = _layer_groups() if groups is None else groups
    return OptimWrapper.create(opt_func, lr, groups, wd=wd, true_wd=true_wd, bn_wd=bn_wd)


def _pg(opt: OptimWrapper, key: str) -> list:
    return [pg[key] for pg in opt.opt.param_groups]


def _set_grads(groups, value: float = 0.0) -> None:
    for g in groups:
        for p in g.parameters():
            p.grad = torch.full_like(p, value)


# ------------------------------------------------------------------------------------------ construction


def test_create_builds_two_param_groups_per_layer_group():
    groups = _layer_groups()
    opt = _make(groups=groups)
    pgs = opt.opt.param_groups
    assert len(pgs) == 2 * len(groups)
    lin0, bn0 = groups[0]
    assert [id(p) for p in pgs[0]["params"]] == [id(lin0.weight)]
    assert [id(p) for p in pgs[1]["params"]] == [id(lin0.bias), id(bn0.weight), id(bn0.bias)]
    lin1, ln1, lin2 = groups[1]
    assert [id(p) for p in pgs[2]["params"]] == [id(lin1.weight), id(lin2.weight)]
    assert [id(p) for p in pgs[3]["params"]] == [id(lin1.bias), id(ln1.weight), id(ln1.bias), id(lin2.bias)]
    assert opt.n_params == 10


def test_create_sets_lr_in_every_param_group_and_remembers_opt_func():
    opt = _make(lr=3e-3)
    assert _pg(opt, "lr") == [3e-3] * 4
    assert opt.opt_func is SGD
    assert isinstance(opt.opt, torch.optim.SGD)


def test_wrapping_a_wrapper_is_refused():
    opt = _make()
    with pytest.raises(AssertionError):
        OptimWrapper(opt)


def test_defaults_are_read_from_even_param_groups_only():
    """Odd (no-wd) param groups are ignored when reading the wrapper's lists."""
    ps = [nn.Parameter(torch.ones(1)) for _ in range(4)]
    torch_opt = torch.optim.SGD([{"params": [ps[0]], "lr": 0.1, "momentum": 0.5},
                                 {"params": [ps[1]], "lr": 9.0, "momentum": 0.7},
                                 {"params": [ps[2]], "lr": 0.2, "momentum": 0.6},
                                 {"params": [ps[3]], "lr": 9.0, "momentum": 0.8}], lr=1.0)
    opt = OptimWrapper(torch_opt)
    assert opt._lr == [0.1, 0.2]
    assert opt._mom == [0.5, 0.6]
    assert opt.lr == 0.2 and opt.mom == 0.6


def test_opt_keys_and_stats_hold_the_non_reserved_hyper_parameters():
    opt = _make(ADAM)
    assert "params" not in opt.opt_keys and "betas" in opt.opt_keys
    assert opt._stats["eps"] == [1e-8, 1e-8]
    for reserved in ("lr", "momentum", "alpha", "betas", "weight_decay"):
        assert reserved not in opt._stats


# ------------------------------------------------------------------------------------------ lr / getters / setters


def test_lr_getter_returns_last_layer_group_value():
    opt = _make(lr=[1e-3, 1e-2])
    assert opt.lr == 1e-2
    assert opt._lr == [1e-3, 1e-2]


def test_lr_per_group_list_writes_both_param_groups_of_each_layer_group():
    opt = _make(lr=[1e-3, 1e-2])
    assert _pg(opt, "lr") == [1e-3, 1e-3, 1e-2, 1e-2]


def test_lr_scalar_broadcasts_to_all_groups():
    opt = _make(lr=[1e-3, 1e-2])
    opt.lr = 0.5
    assert opt._lr == [0.5, 0.5]
    assert _pg(opt, "lr") == [0.5] * 4


def test_lr_from_numpy_array_is_discriminative():
    opt = _make(lr=np.array([1e-4, 1e-3]))
    assert _pg(opt, "lr") == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])


def test_lr_in_place_multiply_collapses_discriminative_lrs():
    """Quirk: ``opt.lr *= k`` reads the last group's lr, so every group ends with the same value."""
    opt = _make(lr=[1e-3, 1e-2])
    opt.lr *= 10
    assert opt._lr == [pytest.approx(0.1)] * 2
    assert _pg(opt, "lr") == [pytest.approx(0.1)] * 4


def test_lr_wrong_length_raises_list_len_mismatch():
    opt = _make()
    with pytest.raises(AssertionError, match="List len mismatch"):
        opt.lr = [1e-3, 1e-2, 1e-1]


def test_sgd_mom_writes_momentum():
    opt = _make(SGD)
    assert opt.mom == 0.9
    opt.mom = [0.8, 0.85]
    assert _pg(opt, "momentum") == [0.8, 0.8, 0.85, 0.85]
    assert opt.mom == 0.85


def test_sgd_beta_is_none():
    opt = _make(SGD)
    assert opt.beta is None


def test_adam_mom_and_beta_are_written_as_betas_pairs():
    opt = _make(ADAM)
    assert opt.mom == 0.9 and opt.beta == 0.99
    opt.mom = 0.8
    assert _pg(opt, "betas") == [(0.8, 0.99)] * 4
    opt.beta = [0.95, 0.97]
    assert _pg(opt, "betas") == [(0.8, 0.95), (0.8, 0.95), (0.8, 0.97), (0.8, 0.97)]
    assert opt.mom == 0.8 and opt.beta == 0.97


def test_adam_mom_per_group_keeps_current_betas():
    opt = _make(ADAM)
    opt.beta = [0.98, 0.99]
    opt.mom = [0.7, 0.75]
    assert _pg(opt, "betas") == [(0.7, 0.98), (0.7, 0.98), (0.75, 0.99), (0.75, 0.99)]


def test_default_adamw_has_fastai_betas():
    opt = _make(AdamW)
    assert (opt.mom, opt.beta) == (0.9, 0.99)


def test_beta_none_is_ignored():
    opt = _make(ADAM)
    opt.beta = None
    assert opt.beta == 0.99
    assert _pg(opt, "betas") == [(0.9, 0.99)] * 4


def test_rmsprop_alpha_is_beta_and_momentum_is_mom():
    opt = _make(RMSPROP)
    assert opt.beta == 0.99 and opt.mom == 0.0
    opt.beta = 0.9
    opt.mom = 0.5
    assert _pg(opt, "alpha") == [0.9] * 4
    assert _pg(opt, "momentum") == [0.5] * 4


# ------------------------------------------------------------------------------------------ weight decay


def test_wd_without_true_wd_writes_torch_weight_decay_everywhere_with_bn_wd():
    opt = _make(wd=0.1, true_wd=False, bn_wd=True)
    assert opt.wd == 0.1
    assert _pg(opt, "weight_decay") == [0.1] * 4


def test_wd_without_true_wd_and_bn_wd_false_spares_no_wd_groups():
    opt = _make(wd=[0.1, 0.2], true_wd=False, bn_wd=False)
    assert _pg(opt, "weight_decay") == [0.1, 0.0, 0.2, 0.0]
    assert opt._wd == [0.1, 0.2]


def test_wd_with_true_wd_does_not_touch_torch_weight_decay():
    opt = _make(wd=0.1, true_wd=True)
    assert opt.wd == 0.1
    assert _pg(opt, "weight_decay") == [0.0] * 4
    opt.wd = 0.3
    assert opt.wd == 0.3
    assert _pg(opt, "weight_decay") == [0.0] * 4


def _snapshot(groups):
    return [[p.detach().clone() for p in g.parameters()] for g in groups]


def test_true_wd_step_with_zero_grads_multiplies_params_by_one_minus_lr_wd():
    """Plain SGD, zero grads: after step every param is exactly ``p * (1 - lr*wd)`` (bn_wd=True: all params)."""
    groups = _layer_groups()
    lr, wd = 0.1, 0.05
    opt = _make(partial(torch.optim.SGD, lr=lr), lr=lr, wd=wd, true_wd=True, bn_wd=True, groups=groups)
    before = _snapshot(groups)
    _set_grads(groups, 0.0)
    opt.step()
    for g, ps0 in zip(groups, before):
        for p, p0 in zip(g.parameters(), ps0):
            torch.testing.assert_close(p.detach(), p0 * (1 - lr * wd), rtol=1e-6, atol=0)
    assert _pg(opt, "weight_decay") == [0] * 4


def test_true_wd_decay_happens_before_the_inner_step():
    """With grad g: ``p1 = p0*(1 - lr*wd) - lr*g``, not ``(p0 - lr*g)*(1 - lr*wd)``."""
    groups = _layer_groups()
    lr, wd, g = 0.5, 0.2, 1.0
    opt = _make(partial(torch.optim.SGD, lr=lr), lr=lr, wd=wd, true_wd=True, groups=groups)
    before = _snapshot(groups)
    _set_grads(groups, g)
    opt.step()
    p, p0 = next(groups[0].parameters()).detach(), before[0][0]
    torch.testing.assert_close(p, p0 * (1 - lr * wd) - lr * g)
    assert not torch.allclose(p, (p0 - lr * g) * (1 - lr * wd))


def test_true_wd_uses_each_layer_groups_lr_and_wd():
    groups = _layer_groups()
    lrs, wds = [0.1, 0.3], [0.01, 0.2]
    opt = _make(partial(torch.optim.SGD, lr=0.1), lr=lrs, wd=wds, true_wd=True, groups=groups)
    before = _snapshot(groups)
    _set_grads(groups, 0.0)
    opt.step()
    for i, (grp, ps0) in enumerate(zip(groups, before)):
        for p, p0 in zip(grp.parameters(), ps0):
            torch.testing.assert_close(p.detach(), p0 * (1 - lrs[i] * wds[i]), rtol=1e-6, atol=0)


def test_true_wd_with_numpy_lrs_and_wd():
    """Discriminative lrs from a numpy array (as from ``lr_range``) work with true weight decay."""
    groups = _layer_groups()
    lrs = np.array([0.1, 0.2])
    opt = _make(partial(torch.optim.SGD, lr=0.1), lr=lrs, wd=np.float64(0.1), true_wd=True, groups=groups)
    before = _snapshot(groups)
    _set_grads(groups, 0.0)
    opt.step()
    p, p0 = groups[1][0].weight.detach(), before[1][0]
    torch.testing.assert_close(p, p0 * (1 - 0.2 * 0.1), rtol=1e-6, atol=0)


def test_true_wd_bn_wd_false_spares_the_no_wd_group():
    """bn_wd=False: biases and norm params are not decayed; weights still are."""
    groups = _layer_groups()
    lr, wd = 0.1, 0.5
    opt = _make(partial(torch.optim.SGD, lr=lr), lr=lr, wd=wd, true_wd=True, bn_wd=False, groups=groups)
    lin0, bn0 = groups[0]
    w0, b0, bnw0 = lin0.weight.detach().clone(), lin0.bias.detach().clone(), bn0.weight.detach().clone()
    _set_grads(groups, 0.0)
    opt.step()
    torch.testing.assert_close(lin0.weight.detach(), w0 * (1 - lr * wd))
    assert torch.equal(lin0.bias.detach(), b0)
    assert torch.equal(bn0.weight.detach(), bnw0)


def test_true_wd_also_decays_params_without_grad():
    """1.0.61 behaviour: the decay is applied even to params whose grad is None."""
    groups = _layer_groups()
    lr, wd = 0.1, 0.5
    opt = _make(partial(torch.optim.SGD, lr=lr), lr=lr, wd=wd, true_wd=True, groups=groups)
    w0 = groups[0][0].weight.detach().clone()
    assert groups[0][0].weight.grad is None
    opt.step()
    torch.testing.assert_close(groups[0][0].weight.detach(), w0 * (1 - lr * wd))


def test_no_true_wd_step_leaves_zero_grad_params_unchanged_when_wd_zero():
    groups = _layer_groups()
    opt = _make(partial(torch.optim.SGD, lr=0.1), lr=0.1, wd=0.0, true_wd=False, groups=groups)
    before = _snapshot(groups)
    _set_grads(groups, 0.0)
    opt.step()
    for g, ps0 in zip(groups, before):
        for p, p0 in zip(g.parameters(), ps0):
            assert torch.equal(p.detach(), p0)


# ------------------------------------------------------------------------------------------ zero_grad / passthrough


def _backward(groups):
    x = torch.randn(6, 3)
    out = groups[1](groups[0](x))
    out.sum().backward()


def test_zero_grad_sets_grads_to_none_as_fastai_v1_does_on_todays_torch():
    """fastloop's documented choice: torch's default, so numbers match fastai 1.0.61 on today's torch."""
    groups = _layer_groups()
    opt = _make(groups=groups)
    _backward(groups)
    opt.zero_grad()
    assert all(p.grad is None for g in groups for p in g.parameters())


def test_zero_grad_set_to_none_false_leaves_zero_tensors_as_torch_1():
    groups = _layer_groups()
    opt = _make(groups=groups)
    _backward(groups)
    opt.zero_grad(set_to_none=False)
    for g in groups:
        for p in g.parameters():
            assert p.grad is not None
            assert torch.count_nonzero(p.grad) == 0


def test_unknown_attribute_returns_none():
    opt = _make()
    assert opt.no_such_attribute is None
    assert hasattr(opt, "another_missing")  # never AttributeError, so hasattr is always True


def test_attributes_pass_through_to_torch_optimizer():
    opt = _make()
    assert opt.param_groups is opt.opt.param_groups
    assert opt.state is opt.opt.state
    assert opt.defaults is opt.opt.defaults


# ------------------------------------------------------------------------------------------ stats


def test_set_stat_and_get_stat_for_eps():
    opt = _make(ADAM)
    assert opt.get_stat("eps") == 1e-8
    opt.set_stat("eps", 1e-5)
    assert opt.get_stat("eps") == 1e-5
    assert _pg(opt, "eps") == [1e-5] * 4
    opt.set_stat("eps", [1e-6, 1e-4])
    assert _pg(opt, "eps") == [1e-6, 1e-6, 1e-4, 1e-4]
    assert opt.get_stat("eps") == 1e-4


def test_set_stat_wrong_length_raises():
    opt = _make(ADAM)
    with pytest.raises(AssertionError, match="List len mismatch"):
        opt.set_stat("eps", [1e-6, 1e-5, 1e-4])


def test_get_set_stat_route_lr_mom_beta_wd_through_properties():
    opt = _make(ADAM, wd=0.0, true_wd=True)
    opt.set_stat("lr", 0.3)
    opt.set_stat("mom", 0.7)
    opt.set_stat("beta", 0.9)
    opt.set_stat("wd", 0.01)
    assert [opt.get_stat(k) for k in ("lr", "mom", "beta", "wd")] == [0.3, 0.7, 0.9, 0.01]
    assert _pg(opt, "lr") == [0.3] * 4
    assert _pg(opt, "betas") == [(0.7, 0.9)] * 4


# ------------------------------------------------------------------------------------------ new / state / clear


def test_new_builds_same_kind_over_other_groups_with_same_hypers():
    opt = _make(ADAM, lr=[1e-3, 1e-2], wd=0.1, true_wd=True, bn_wd=False)
    opt.mom, opt.beta = 0.8, 0.95
    other = _layer_groups(seed=1)
    new = opt.new(other)
    assert isinstance(new, OptimWrapper) and isinstance(new.opt, torch.optim.Adam)
    assert new is not opt
    assert len(new.opt.param_groups) == 4
    assert new.opt.param_groups[0]["params"][0] is other[0][0].weight
    assert (new.lr, new.mom, new.beta, new.wd) == (1e-2, 0.8, 0.95, 0.1)
    assert new._lr == [1e-2, 1e-2]  # built from the getter: discriminative lrs collapse
    assert (new.true_wd, new.bn_wd) == (True, False)
    assert new.opt_func is ADAM


def test_new_with_params_uses_the_given_param_groups():
    opt = _make(SGD, lr=0.02)
    opt.mom = 0.5
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(1))
    new = opt.new_with_params([[a], [b]])
    assert [pg["params"] for pg in new.opt.param_groups] == [[a], [b]]
    assert new.lr == 0.02 and new.mom == 0.5
    assert _pg(new, "momentum") == [0.5, 0.5]
    assert new.opt_func is SGD


def test_get_state_contents():
    opt = _make(ADAM, lr=[1e-3, 1e-2], wd=0.1, true_wd=True)
    state = opt.get_state()
    assert set(state) == {"opt_state", "lr", "wd", "beta", "mom", "opt_func", "true_wd", "bn_wd"}
    assert state["lr"] == [1e-3, 1e-2] and state["wd"] == [0.1, 0.1]
    assert state["mom"] == [0.9, 0.9] and state["beta"] == [0.99, 0.99]
    assert state["opt_func"] is ADAM and state["true_wd"] is True and state["bn_wd"] is True
    assert set(state["opt_state"]) == {"state", "param_groups"}


def test_load_with_state_and_layer_group_restores_hypers_and_optimizer_state():
    groups = _layer_groups()
    opt = _make(ADAM, lr=[1e-3, 1e-2], wd=0.1, true_wd=True, groups=groups)
    opt.mom, opt.beta = [0.8, 0.85], 0.95
    _backward(groups)
    opt.step()
    state = opt.get_state()
    other = _layer_groups(seed=1)
    res = OptimWrapper.load_with_state_and_layer_group(state, other)
    assert res._lr == [1e-3, 1e-2] and res._wd == [0.1, 0.1]
    assert res._mom == [0.8, 0.85] and res._beta == [0.95, 0.95]
    assert res.true_wd is True and res.opt_func is ADAM
    p_old, p_new = groups[0][0].weight, other[0][0].weight
    assert p_new is res.opt.param_groups[0]["params"][0]
    torch.testing.assert_close(res.opt.state[p_new]["exp_avg"], opt.opt.state[p_old]["exp_avg"])


def test_clear_resets_optimizer_state_but_keeps_hypers():
    groups = _layer_groups()
    opt = _make(ADAM, lr=[1e-3, 1e-2], groups=groups)
    _backward(groups)
    opt.step()
    assert len(opt.opt.state) > 0
    opt.clear()
    assert len(opt.opt.state) == 0
    assert opt._lr == [1e-3, 1e-2]
    assert _pg(opt, "lr") == [1e-3, 1e-3, 1e-2, 1e-2]


# ------------------------------------------------------------------------------------------ annealing


def test_annealing_no_always_returns_start():
    assert [annealing_no(1.0, 5.0, p) for p in (0, 0.3, 1)] == [1.0, 1.0, 1.0]


def test_annealing_linear_values():
    assert annealing_linear(1.0, 3.0, 0.0) == 1.0
    assert annealing_linear(1.0, 3.0, 0.25) == 1.5
    assert annealing_linear(1.0, 3.0, 1.0) == 3.0


def test_annealing_exp_values():
    assert annealing_exp(1e-4, 1e-2, 0.5) == pytest.approx(1e-3)
    assert annealing_exp(1e-4, 1e-2, 0.0) == 1e-4
    assert annealing_exp(1e-4, 1e-2, 1.0) == pytest.approx(1e-2)


def test_annealing_cos_values_and_midpoint():
    assert annealing_cos(1.0, 0.0, 0.5) == pytest.approx(0.5)
    assert annealing_cos(2.0, 1.0, 1 / 3) == pytest.approx(1 + 0.5 * (1 + math.cos(math.pi / 3)))


@settings(deadline=None)
@given(st.floats(min_value=-1e3, max_value=1e3), st.floats(min_value=-1e3, max_value=1e3))
def test_annealing_cos_is_exact_at_both_ends(start, end):
    """At p=1 the value is exactly `end`; at p=0 it is `start` (exactly for the usual hyper-parameters)."""
    assert annealing_cos(start, end, 1.0) == end
    assert annealing_cos(start, end, 0.0) == pytest.approx(start, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("start", "end"), [(0.95, 0.85), (0.85, 0.95), (1e-3, 1e-5), (4e-2, 4e-6), (1.0, 0.0)])
def test_annealing_cos_exact_start_for_typical_schedules(start, end):
    assert annealing_cos(start, end, 0.0) == start
    assert annealing_cos(start, end, 1.0) == end


def test_annealing_poly_values():
    f = annealing_poly(2)
    assert f(1.0, 0.0, 0.0) == 1.0
    assert f(1.0, 0.0, 0.5) == pytest.approx(0.25)
    assert f(1.0, 0.0, 1.0) == 0.0
    assert annealing_poly(1)(2.0, 4.0, 0.25) == pytest.approx(annealing_linear(2.0, 4.0, 0.25))


@pytest.mark.parametrize("func", [annealing_linear, annealing_exp, annealing_cos, annealing_poly(2)])
def test_annealing_is_element_wise_on_numpy_arrays(func):
    start, end = np.array([1e-4, 1e-3, 1e-2]), np.array([1e-6, 1e-5, 1e-4])
    out = func(start, end, 0.3)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    expected = [func(float(s), float(e), 0.3) for s, e in zip(start, end)]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["linear", "exp", "cos", "poly"]),
       st.floats(min_value=1e-6, max_value=10.0), st.floats(min_value=1e-6, max_value=10.0),
       st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=10))
def test_annealing_property_monotonic_and_bounded(name, start, end, ps):
    """Every schedule moves monotonically from `start` towards `end` and stays between them."""
    func = {"linear": annealing_linear, "exp": annealing_exp, "cos": annealing_cos, "poly": annealing_poly(3)}[name]
    ps = sorted(ps)
    vals = [func(start, end, p) for p in ps]
    lo, hi = min(start, end), max(start, end)
    tol = 1e-9 * hi
    assert all(lo - tol <= v <= hi + tol for v in vals)
    sign = 1 if end >= start else -1
    assert all(sign * (b - a) >= -tol for a, b in zip(vals, vals[1:]))


# ------------------------------------------------------------------------------------------ Scheduler


def test_scheduler_tuple_is_a_linear_range_by_default():
    s = Scheduler((1.0, 2.0), 4)
    assert (s.start, s.end) == (1.0, 2.0)
    assert s.func is annealing_linear
    assert [s.step() for _ in range(4)] == [1.25, 1.5, 1.75, 2.0]


def test_scheduler_non_tuple_is_constant_with_end_zero():
    s = Scheduler(0.5, 3)
    assert (s.start, s.end) == (0.5, 0)
    assert s.func is annealing_no
    assert [s.step() for _ in range(3)] == [0.5, 0.5, 0.5]


def test_scheduler_list_is_not_a_range():
    """Only tuples are ranges: a list is a (discriminative) constant."""
    s = Scheduler([1.0, 2.0], 2)
    assert s.start == [1.0, 2.0] and s.end == 0
    assert s.step() == [1.0, 2.0]


def test_scheduler_step_never_returns_start():
    s = Scheduler((10.0, 0.0), 5, func=annealing_cos)
    vals = [s.step() for _ in range(5)]
    assert 10.0 not in vals
    assert vals[0] < 10.0
    assert vals[-1] == 0.0


def test_scheduler_is_done_and_restart():
    s = Scheduler((0.0, 1.0), 3)
    assert not s.is_done and s.n == 0
    s.step()
    s.step()
    assert not s.is_done
    s.step()
    assert s.is_done and s.n == 3
    s.restart()
    assert s.n == 0 and not s.is_done
    assert s.step() == pytest.approx(1 / 3)


def test_scheduler_n_iter_at_least_one():
    s = Scheduler((0.0, 1.0), 0)
    assert s.n_iter == 1
    assert s.step() == 1.0
    assert s.is_done


def test_scheduler_custom_func_and_numpy_start():
    s = Scheduler((np.array([1.0, 4.0]), np.array([0.0, 0.0])), 2, func=annealing_linear)
    np.testing.assert_allclose(s.step(), [0.5, 2.0])
    np.testing.assert_allclose(s.step(), [0.0, 0.0])


@settings(deadline=None)
@given(st.floats(min_value=1e-5, max_value=1.0), st.floats(min_value=1e-5, max_value=1.0),
       st.integers(min_value=1, max_value=50))
def test_scheduler_property_ends_at_end_after_n_iter_steps(start, end, n_iter):
    s = Scheduler((start, end), n_iter, func=annealing_cos)
    vals = [s.step() for _ in range(n_iter)]
    assert s.is_done
    assert vals[-1] == end


# ------------------------------------------------------------------------------------------ SmoothenValue


def test_smoothen_value_first_value_equals_first_loss():
    sv = SmoothenValue(0.98)
    sv.add_value(2.5)
    assert sv.smooth == pytest.approx(2.5, rel=1e-12)
    assert sv.n == 1


def test_smoothen_value_matches_hand_computed_debiased_ema():
    beta, losses = 0.9, [4.0, 2.0, 3.0, 1.0, 0.5]
    sv = SmoothenValue(beta)
    mov, expected = 0.0, []
    for i, v in enumerate(losses, start=1):
        mov = beta * mov + (1 - beta) * v
        expected.append(mov / (1 - beta**i))
    got = []
    for v in losses:
        sv.add_value(v)
        got.append(sv.smooth)
    assert got == pytest.approx(expected, rel=1e-12)
    # second value, by hand: (0.9*0.1*4 + 0.1*2) / (1 - 0.81)
    assert got[1] == pytest.approx((0.36 + 0.2) / 0.19)


def test_smoothen_value_on_tensors_gives_0dim_tensor():
    sv = SmoothenValue(0.98)
    sv.add_value(torch.tensor(1.0))
    sv.add_value(torch.tensor(3.0))
    assert isinstance(sv.smooth, torch.Tensor) and sv.smooth.dim() == 0
    expected = (0.98 * 0.02 * 1.0 + 0.02 * 3.0) / (1 - 0.98**2)
    assert sv.smooth.item() == pytest.approx(expected, rel=1e-6)
