"""fastloop.torch_core: to_detach/to_device, flatten_model, split_model*, split_no_wd_params (spec §10.1, §12)."""

from __future__ import annotations

import torch
from torch import nn

from fastloop.torch_core import (
    first_layer,
    flatten_model,
    requires_grad,
    split_model,
    split_model_idx,
    split_no_wd_params,
    to_detach,
    to_device,
    trainable_params,
    uniqueify,
)

META = torch.device("meta")


def _ids(params):
    return [id(p) for p in params]


# ------------------------------------------------------------------------------------------ to_detach / to_device


def _grad_tensor():
    return (torch.ones(2, requires_grad=True) * 2)  # non-leaf, carries a grad_fn


def test_to_detach_detaches_a_plain_tensor():
    t = _grad_tensor()
    out = to_detach(t)
    assert out.grad_fn is None and not out.requires_grad
    assert out.device.type == "cpu"
    assert torch.equal(out, t.detach())


def test_to_detach_recurses_into_lists_tuples_and_dicts():
    """Every tensor at any depth is detached; containers keep their shape and non-tensors pass through."""
    b = [_grad_tensor(), (_grad_tensor(), {"a": _grad_tensor(), "n": 3}), "text"]
    out = to_detach(b)
    assert isinstance(out, list) and len(out) == 3
    assert not out[0].requires_grad
    inner = out[1]
    assert isinstance(inner, (list, tuple)) and len(inner) == 2
    assert not inner[0].requires_grad
    assert set(inner[1]) == {"a", "n"}
    assert not inner[1]["a"].requires_grad and inner[1]["n"] == 3
    assert out[2] == "text"


def test_to_detach_cpu_false_keeps_the_device():
    t = torch.ones(3, device=META, requires_grad=True) * 2
    out = to_detach([t], cpu=False)
    assert out[0].device == META and not out[0].requires_grad


def test_to_device_moves_every_tensor_in_nested_structure():
    b = (torch.ones(2), [torch.zeros(1), {"k": torch.arange(3)}], 5)
    out = to_device(b, META)
    assert out[0].device == META
    assert out[1][0].device == META
    assert out[1][1]["k"].device == META
    assert out[1][1]["k"].dtype == torch.int64
    assert out[2] == 5


def test_to_device_accepts_a_string_device():
    out = to_device([torch.ones(1)], "meta")
    assert out[0].device == META


def test_to_device_none_uses_defaults_device():
    from fastloop.core import defaults

    out = to_device(torch.ones(1), None)
    assert out.device.type == defaults.device.type


# ------------------------------------------------------------------------------------------ model helpers


def _nested_model():
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(2, 4),
        nn.Sequential(nn.Sequential(nn.LayerNorm(4)), nn.Linear(4, 1)),
    )


def test_flatten_model_returns_leaves_depth_first():
    m = _nested_model()
    leaves = flatten_model(m)
    assert [type(o) for o in leaves] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten,
                                         nn.Linear, nn.LayerNorm, nn.Linear]
    assert leaves[0] is m[0][0] and leaves[-1] is m[3][1]


def test_flatten_model_of_a_leaf_is_itself():
    lin = nn.Linear(1, 1)
    assert flatten_model(lin) == [lin]
    assert first_layer(_nested_model()).__class__ is nn.Conv2d


def test_split_model_idx_groups_leaves_at_the_indexes():
    """Indexes are start points; 0 and len(leaves) are added when missing."""
    m = _nested_model()
    leaves = flatten_model(m)
    groups = split_model_idx(m, [3, 6])
    assert len(groups) == 3
    assert all(isinstance(g, nn.Sequential) for g in groups)
    assert [list(g.children()) for g in groups] == [leaves[:3], leaves[3:6], leaves[6:]]


def test_split_model_idx_with_explicit_zero_and_end():
    m = _nested_model()
    leaves = flatten_model(m)
    groups = split_model_idx(m, [0, 5, len(leaves)])
    assert [len(g) for g in groups] == [5, 3]


def test_split_model_on_modules_splits_at_their_first_leaf():
    m = _nested_model()
    leaves = flatten_model(m)
    groups, idxs = split_model(m, [m[1], m[3]], want_idxs=True)
    assert idxs == [3, 6]
    assert [list(g.children()) for g in groups] == [leaves[:3], leaves[3:6], leaves[6:]]
    assert split_model(m, m[2])[1][0] is m[2]  # a single module is listified


def test_split_model_on_lists_of_modules_wraps_each_list():
    m = _nested_model()
    parts = [[m[0], m[1]], [m[2], m[3]]]
    groups = split_model(m, parts)
    assert len(groups) == 2
    assert list(groups[0].children()) == [m[0], m[1]]
    assert list(groups[1].children()) == [m[2], m[3]]


def test_requires_grad_sets_and_reads_all_params():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    assert requires_grad(m) is True
    requires_grad(m[0], False)
    assert requires_grad(m[0]) is False and requires_grad(m[1]) is True
    assert _ids(trainable_params(m)) == _ids(m[1].parameters())
    assert requires_grad(nn.ReLU()) is None


def test_uniqueify_keeps_first_occurrence_order():
    a, b, c = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    assert _ids(uniqueify([b, a, b, c, a])) == _ids([b, a, c])


# ------------------------------------------------------------------------------------------ split_no_wd_params


def _group_model():
    return [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()),
        nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1, bias=False), nn.BatchNorm1d(1)),
    ]


def test_split_no_wd_params_gives_two_lists_per_layer_group():
    groups = _group_model()
    split = split_no_wd_params(groups)
    assert len(split) == 2 * len(groups)
    assert all(isinstance(s, list) for s in split)


def test_split_no_wd_params_biases_and_norm_params_go_to_no_wd_group():
    g0, g1 = _group_model()
    wd0, nowd0, wd1, nowd1 = split_no_wd_params([g0, g1])
    conv, bn = g0[0], g0[1]
    assert _ids(wd0) == [id(conv.weight)]
    assert _ids(nowd0) == [id(conv.bias), id(bn.weight), id(bn.bias)]
    lin, ln, lin_nobias, bn1 = g1[0], g1[1], g1[2], g1[3]
    assert _ids(wd1) == [id(lin.weight), id(lin_nobias.weight)]
    assert _ids(nowd1) == [id(lin.bias), id(ln.weight), id(ln.bias), id(bn1.weight), id(bn1.bias)]


def test_split_no_wd_params_covers_every_trainable_param_once():
    groups = _group_model()
    split = split_no_wd_params(groups)
    flat = [p for s in split for p in s]
    assert len(flat) == len(set(map(id, flat)))
    assert set(map(id, flat)) == {id(p) for g in groups for p in g.parameters()}


def test_split_no_wd_params_excludes_frozen_params_except_biases_as_v1():
    """Frozen weights and norm params appear in neither list; a frozen Linear/Conv bias stays in the no-wd
    list, as in fastai v1, so the optimizer has v1's layout."""
    g0, g1 = _group_model()
    g0[0].weight.requires_grad_(False)
    g0[0].bias.requires_grad_(False)
    requires_grad(g1[1], False)
    wd0, nowd0, wd1, nowd1 = split_no_wd_params([g0, g1])
    frozen = {id(g0[0].weight), id(g1[1].weight), id(g1[1].bias)}
    flat = {id(p) for s in (wd0, nowd0, wd1, nowd1) for p in s}
    assert not frozen & flat
    assert wd0 == []
    assert _ids(nowd0) == [id(g0[0].bias), id(g0[1].weight), id(g0[1].bias)]


def test_split_no_wd_params_removes_tied_duplicates():
    lin1, lin2 = nn.Linear(3, 3), nn.Linear(3, 3)
    lin2.weight = lin1.weight
    lin2.bias = lin1.bias
    wd, nowd = split_no_wd_params([nn.Sequential(lin1, lin2)])
    assert _ids(wd) == [id(lin1.weight)]
    assert _ids(nowd) == [id(lin1.bias)]


def test_split_no_wd_params_nested_child_goes_entirely_to_wd_group():
    """Only direct children are classified: a BN inside a nested Sequential is not recognised as no-wd."""
    inner = nn.Sequential(nn.BatchNorm1d(2))
    wd, nowd = split_no_wd_params([nn.Sequential(inner)])
    assert _ids(wd) == _ids(inner.parameters())
    assert nowd == []
