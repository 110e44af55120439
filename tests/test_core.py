"""fastloop.core: camel2snake, listify, ifnone, even_mults, defaults (spec §6.3, §12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fastloop.core import camel2snake, defaults, even_mults, ifnone, is_listy, is_tuple, listify

# ------------------------------------------------------------------------------------------ camel2snake

# The table of spec §6.3: the attribute name a LearnerCallback registers itself under.
CAMEL2SNAKE_TABLE = [
    ("Recorder", "recorder"),
    ("LRFinder", "lr_finder"),
    ("OneCycleScheduler", "one_cycle_scheduler"),
    ("CSVLogger", "csv_logger"),
    ("MixUpCallback", "mix_up_callback"),
    ("ReduceLROnPlateauCallback", "reduce_lr_on_plateau_callback"),
    ("GANTrainer", "gan_trainer"),
    ("MLFlowTracker", "ml_flow_tracker"),
    ("FBeta", "f_beta"),
    ("AUROC", "auroc"),
    ("TerminateOnNaNCallback", "terminate_on_na_n_callback"),
]


@pytest.mark.parametrize(("name", "expected"), CAMEL2SNAKE_TABLE)
def test_camel2snake_matches_spec_table(name, expected):
    assert camel2snake(name) == expected


def test_camel2snake_digit_before_capital_gets_underscore():
    """Rule 2: a digit followed by a capital is split (``Fp16Callback`` -> ``fp16_callback``)."""
    assert camel2snake("Fp16Callback") == "fp16_callback"
    assert camel2snake("Top5Accuracy") == "top5_accuracy"


def test_camel2snake_leaves_snake_case_alone():
    assert camel2snake("already_snake") == "already_snake"
    assert camel2snake("lower") == "lower"


# ------------------------------------------------------------------------------------------ listify


def test_listify_none_is_empty_list():
    assert listify(None) == []
    assert listify() == []


def test_listify_none_with_target_length_zero():
    assert listify(None, 0) == []
    assert listify(None, []) == []


def test_listify_string_is_one_item_not_characters():
    assert listify("abc") == ["abc"]
    assert listify("abc", 2) == ["abc", "abc"]


def test_listify_scalar_is_wrapped_and_broadcast():
    assert listify(3) == [3]
    assert listify(0.1, 3) == [0.1, 0.1, 0.1]


def test_listify_broadcasts_to_length_of_q_when_q_is_a_collection():
    """`q` given as a list (e.g. layer groups) means 'as long as q'."""
    groups = [nn.Linear(1, 1), nn.Linear(1, 1)]
    assert listify(1e-3, groups) == [1e-3, 1e-3]
    assert listify([5], (1, 2, 3)) == [5, 5, 5]


def test_listify_one_element_list_is_repeated():
    assert listify([7], 4) == [7, 7, 7, 7]


def test_listify_tuple_and_range_become_lists():
    assert listify((1, 2)) == [1, 2]
    assert isinstance(listify((1, 2)), list)
    assert listify(range(3)) == [0, 1, 2]


def test_listify_numpy_array_gives_its_elements():
    out = listify(np.array([1e-3, 1e-2]), 2)
    assert isinstance(out, list)
    assert out == [1e-3, 1e-2]


def test_listify_zero_dim_tensor_is_one_item():
    """A 0-dim tensor is iterable in type but has no len: it is wrapped, not iterated."""
    t = torch.tensor(2.0)
    out = listify(t)
    assert len(out) == 1 and out[0] is t


def test_listify_generator_without_len_is_one_item():
    gen = (i for i in range(3))
    out = listify(gen)
    assert out == [gen]


def test_listify_returns_a_new_list():
    p = [1, 2]
    out = listify(p)
    assert out == p and out is not p


@pytest.mark.parametrize(("p", "q"), [([1, 2], 3), ([1, 2, 3], [0, 0]), ((1, 2), 1), ([], 2)])
def test_listify_length_mismatch_raises_assertion(p, q):
    with pytest.raises(AssertionError, match="List len mismatch"):
        listify(p, q)


@settings(deadline=None)
@given(st.lists(st.integers(), min_size=2, max_size=6), st.integers(min_value=0, max_value=8))
def test_listify_property_multi_element_list_kept_or_rejected(p, n):
    """A list of length >= 2 is returned unchanged when `n` equals its length, else rejected."""
    if n == len(p):
        assert listify(p, n) == p
    else:
        with pytest.raises(AssertionError, match="List len mismatch"):
            listify(p, n)


@settings(deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=False), st.text(), st.booleans()),
       st.integers(min_value=1, max_value=8))
def test_listify_property_scalar_broadcast(x, n):
    """Any scalar (or string) broadcasts to exactly `n` copies of itself."""
    out = listify(x, n)
    assert len(out) == n
    assert all(o == x for o in out)
    assert listify(x, list(range(n))) == out


# ------------------------------------------------------------------------------------------ small helpers


def test_ifnone_returns_default_only_for_none():
    assert ifnone(None, 5) == 5
    assert ifnone(0, 5) == 0
    assert ifnone(False, 5) is False
    assert ifnone([], [1]) == []


def test_is_listy_and_is_tuple():
    """Only tuples are ranges (is_tuple); lists and tuples are listy; arrays are neither."""
    assert is_listy([1]) and is_listy((1,))
    assert not is_listy(np.array([1])) and not is_listy("ab")
    assert is_tuple((1, 2)) and not is_tuple([1, 2])


def test_even_mults_is_geometric_from_start_to_stop():
    out = even_mults(1e-5, 1e-3, 3)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [1e-5, 1e-4, 1e-3], rtol=1e-12)


@settings(deadline=None)
@given(st.floats(min_value=1e-7, max_value=1.0), st.floats(min_value=1e-7, max_value=1.0),
       st.integers(min_value=2, max_value=10))
def test_even_mults_property_endpoints_and_constant_ratio(start, stop, n):
    """`n` values, first == start, last ~= stop, constant ratio between neighbours."""
    out = even_mults(start, stop, n)
    assert len(out) == n
    assert out[0] == start
    assert out[-1] == pytest.approx(stop, rel=1e-9)
    ratios = out[1:] / out[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_defaults_has_fastai_v1_values():
    """``defaults.lr`` is ``slice(3e-3)``, ``defaults.wd`` 1e-2, and ``device`` resolves lazily."""
    assert defaults.lr == slice(3e-3)
    assert defaults.wd == 1e-2
    assert isinstance(defaults.device, torch.device)
    with pytest.raises(AttributeError):
        defaults.no_such_setting
