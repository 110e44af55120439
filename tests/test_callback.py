"""CallbackHandler: dispatch order, state updates, v1's error texts, hook checks and the §4 invariants."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastloop.callback import AverageMetric, Callback, CallbackHandler, CallbackSignatureError, SmoothenValue
from fastloop.core import defaults

from .tracing import Tracer

X = torch.zeros(3, 2)
Y = torch.zeros(3, dtype=torch.long)


def drive_batch(h: CallbackHandler, train: bool = True, loss: float = 1.0) -> bool:
    """Fire one batch's events the way fit/validate do; return stop_epoch."""
    h.on_batch_begin(X, Y, train=train)
    h.on_loss_begin(X)
    if train:
        h.on_backward_begin(torch.tensor(loss))
        h.on_backward_end()
        h.on_step_end()
    return h.on_batch_end(torch.tensor(loss))


# ------------------------------------------------------------------------------------------- construction
def test_callbacks_are_stably_sorted_by_order_without_mutating_the_given_list():
    cbs = [Tracer(order=0, name="a"), Tracer(order=-5, name="b"), Tracer(order=0, name="c"), Tracer(order=-5, name="d")]
    given_list = list(cbs)
    h = CallbackHandler(cbs)
    assert [cb.name for cb in h.callbacks] == ["b", "d", "a", "c"]
    assert cbs == given_list


def test_metrics_run_first_in_given_order_and_are_never_sorted():
    calls = []

    class Met(Callback):
        def __init__(self, name, order):
            self.name, self._order = name, order

        def on_train_begin(self, **kwargs):
            calls.append(self.name)

    class Cb(Callback):
        _order = -100

        def on_train_begin(self, **kwargs):
            calls.append("callback")

    h = CallbackHandler([Cb()], [Met("m1", 50), Met("m2", -50)])
    h.on_train_begin(1, None, [])
    assert calls == ["m1", "m2", "callback"]


def test_plain_metric_functions_are_wrapped_in_average_metric_and_callbacks_kept():
    def my_metric(out, targ):
        return torch.tensor(1.0)

    met_cb = Tracer()
    h = CallbackHandler([], [my_metric, met_cb])
    assert isinstance(h.metrics[0], AverageMetric) and h.metrics[0].name == "my_metric"
    assert h.metrics[1] is met_cb


def test_initial_state_holds_exactly_the_four_initial_keys():
    h = CallbackHandler()
    assert h.state_dict == {"epoch": 0, "iteration": 0, "num_batch": 0, "skip_validate": False}


def test_only_callbacks_that_override_an_event_are_called_for_it():
    class OnlyBatchEnd(Callback):
        def on_batch_end(self, **kwargs):
            pass

    cb, tracer = OnlyBatchEnd(), Tracer()
    h = CallbackHandler([cb, tracer])
    assert h.implementers("batch_end") == [cb, tracer]
    for event in ("train_begin", "epoch_begin", "batch_begin", "loss_begin", "epoch_end", "train_end"):
        assert h.implementers(event) == [tracer]


def test_changing_the_handler_callback_list_replans_the_dispatch():
    h = CallbackHandler([])
    tracer = Tracer()
    h.callbacks.append(tracer)
    h.on_train_begin(1, None, [])
    assert tracer.events() == ["train_begin"]
    h.callbacks.remove(tracer)
    h.on_epoch_begin()
    assert tracer.events() == ["train_begin"]


# ----------------------------------------------------------------------------------------- state updates
def test_returned_updates_apply_immediately_so_later_callbacks_see_them():
    class Setter(Callback):
        _order = -1

        def on_batch_begin(self, **kwargs):
            return {"skip_step": True, "last_input": "replaced"}

    tracer = Tracer()
    h = CallbackHandler([tracer, Setter()])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    xb, _ = h.on_batch_begin(X, Y)
    seen = tracer.kwargs[-1][1]
    assert seen["skip_step"] is True and seen["last_input"] == "replaced"
    assert xb == "replaced"


def test_in_place_mutation_of_a_state_object_is_visible_without_a_return():
    class Mutator(Callback):
        def on_epoch_end(self, last_metrics, **kwargs):
            last_metrics += [42]

    h = CallbackHandler([Mutator()])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    h.on_epoch_end(None)
    assert h.state_dict["last_metrics"] == [None, 42]


def test_an_empty_dict_or_none_return_changes_nothing():
    class Quiet(Callback):
        def on_epoch_begin(self, **kwargs):
            return {}

        def on_train_begin(self, **kwargs):
            return None

    h = CallbackHandler([Quiet()])
    h.on_train_begin(2, None, [])
    h.on_epoch_begin()
    assert h.state_dict["epoch"] == 0 and h.state_dict["stop_training"] is False


# ------------------------------------------------------------------------------------ v1's exact errors
def test_unknown_returned_key_raises_plain_exception_with_v1_text_and_a_note():
    class Bad(Callback):
        def on_epoch_begin(self, **kwargs):
            return {"stop_epoch_typo": True}

    h = CallbackHandler([Bad()])
    h.on_train_begin(1, None, [])
    with pytest.raises(Exception) as info:
        h.on_epoch_begin()
    assert type(info.value) is Exception
    assert str(info.value) == "stop_epoch_typo isn't a valid key in the state of the callbacks."
    assert any("Bad.on_epoch_begin" in n and "'stop_epoch_typo'" in n for n in info.value.__notes__)


def test_key_returned_before_it_exists_raises_v1_text_and_names_when_it_appears():
    class Early(Callback):
        def on_train_begin(self, **kwargs):
            return {"stop_training": True}

    h = CallbackHandler([Early()])
    with pytest.raises(Exception) as info:
        h.on_train_begin(1, None, [])
    assert str(info.value) == "stop_training isn't a valid key in the state of the callbacks."
    note = " ".join(info.value.__notes__)
    assert "Early.on_train_begin" in note and "first at on_epoch_begin" in note


def test_last_metrics_cannot_be_returned_before_the_first_epoch_end():
    class TooSoon(Callback):
        def on_batch_end(self, last_loss, **kwargs):
            return {"last_metrics": [last_loss]}

    h = CallbackHandler([TooSoon()])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    with pytest.raises(Exception, match="last_metrics isn't a valid key"):
        drive_batch(h)


def test_keys_before_an_invalid_one_are_applied_and_the_rest_are_not():
    class Partial(Callback):
        def on_batch_begin(self, **kwargs):
            return {"skip_step": True, "nope": 1, "skip_zero": True}

    h = CallbackHandler([Partial()])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    with pytest.raises(Exception, match="nope isn't a valid key"):
        h.on_batch_begin(X, Y)
    assert h.state_dict["skip_step"] is True and h.state_dict["skip_zero"] is False


@pytest.mark.parametrize("ret, type_name", [(True, "bool"), ((1, 2), "tuple"), (False, "bool"), ("x", "str")])
def test_non_dict_return_raises_attribute_error_with_v1_text_and_a_note(ret, type_name):
    class Returns(Callback):
        def on_epoch_begin(self, **kwargs):
            return ret

    h = CallbackHandler([Returns()])
    h.on_train_begin(1, None, [])
    with pytest.raises(AttributeError) as info:
        h.on_epoch_begin()
    assert str(info.value) == f"'{type_name}' object has no attribute 'items'"
    assert any("Returns.on_epoch_begin returned" in n for n in info.value.__notes__)


def test_extras_are_not_state_keys_and_cannot_be_returned():
    class ReturnsExtra(Callback):
        def on_train_begin(self, metrics_names, **kwargs):
            return {"metrics_names": metrics_names + ["x"]}

    with pytest.raises(Exception, match="metrics_names isn't a valid key") as info:
        CallbackHandler([ReturnsExtra()]).on_train_begin(1, None, [])
    assert "extra argument" in " ".join(info.value.__notes__)


def test_a_non_callback_object_fails_with_pythons_own_attribute_error_when_the_event_fires():
    h = CallbackHandler([[]])  # a list appended to learn.callbacks by mistake
    with pytest.raises(AttributeError, match="'list' object has no attribute 'on_train_begin'"):
        h.on_train_begin(1, None, [])


def test_exception_in_a_hook_keeps_type_and_traceback_and_gets_a_note_naming_callback_and_event():
    class Boom(Callback):
        def on_epoch_begin(self, **kwargs):
            raise ValueError("boom")

    h = CallbackHandler([Boom()])
    h.on_train_begin(1, None, [])
    with pytest.raises(ValueError) as info:
        h.on_epoch_begin()
    assert str(info.value) == "boom"
    assert info.value.__notes__ == ["fastloop: raised in callback Boom.on_epoch_begin."]
    assert any(entry.name == "on_epoch_begin" for entry in info.traceback)


def test_a_state_key_asked_for_too_early_is_v1s_type_error_with_a_note_saying_when_it_appears():
    class WantsOutput(Callback):
        def on_train_begin(self, last_output, **kwargs):
            pass

    with pytest.raises(TypeError, match="last_output") as info:
        CallbackHandler([WantsOutput()]).on_train_begin(1, None, [])
    note = " ".join(info.value.__notes__)
    assert "WantsOutput.on_train_begin" in note and "'last_output' (it first exists at on_loss_begin)" in note


# ------------------------------------------------------------------------------------------- hook checks
@pytest.mark.parametrize("bad, good", [("on_batch_ended", "on_batch_end"), ("on_epoch_start", "on_epoch_begin"),
                                       ("on_train_begun", "on_train_begin")])
def test_misspelled_hook_warns_at_registration_naming_class_and_nearest_event(bad, good):
    Misspelled = type("Misspelled", (Callback,), {bad: lambda self, **kwargs: None})
    with pytest.warns(UserWarning) as record:
        CallbackHandler([Misspelled()])
    msg = str(record[0].message)
    assert f"Misspelled.{bad}" in msg and f"did you mean `{good}`?" in msg


def test_strict_switch_turns_a_misspelled_hook_into_an_error(monkeypatch):
    class Typo(Callback):
        def on_epoch_start(self, **kwargs):
            pass

    with pytest.raises(AttributeError, match="did you mean `on_epoch_begin`"):
        CallbackHandler([Typo()], strict=True)
    monkeypatch.setattr(defaults, "strict_callbacks", True)
    with pytest.raises(AttributeError, match="Typo.on_epoch_start"):
        CallbackHandler([Typo()])


def test_unrelated_on_methods_and_real_hooks_do_not_warn():
    class Fine(Callback):
        def on_batch_end(self, last_loss, **kwargs):
            pass

        def on_something_custom_entirely(self):
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CallbackHandler([Fine()])


def test_hook_requiring_an_unknown_parameter_is_refused_at_registration():
    class Typo(Callback):
        def on_batch_begin(self, last_ouput, **kwargs):
            pass

    with pytest.raises(CallbackSignatureError) as info:
        CallbackHandler([Typo()])
    assert isinstance(info.value, TypeError)
    msg = str(info.value)
    assert "Typo.on_batch_begin" in msg and "'last_ouput'" in msg and "Did you mean 'last_output'?" in msg


def test_event_extras_and_defaulted_parameters_pass_the_signature_check():
    class Ok(Callback):
        def on_train_begin(self, metrics_names, pbar, **kwargs):
            pass

        def on_train_end(self, exception, custom=None, **kwargs):
            pass

    CallbackHandler([Ok()])


# --------------------------------------------------------------------------------------- handler events
def test_on_train_begin_replaces_the_state_and_passes_metric_names():
    named = Tracer()
    named.name = "my_col"

    class UnnamedMetric(Callback):
        pass

    tracer = Tracer()
    h = CallbackHandler([tracer], [named, UnnamedMetric()])
    h.state_dict["last_metrics"] = [1]
    h.on_train_begin(3, "bar", ["m"])
    assert sorted(h.state_dict) == ["epoch", "iteration", "metrics", "n_epochs", "num_batch", "pbar", "skip_validate"]
    assert tracer.kwargs[0][1]["metrics_names"] == ["my_col", "unnamed_metric"]
    assert tracer.kwargs[0][1]["n_epochs"] == 3 and tracer.kwargs[0][1]["pbar"] == "bar"


def test_epoch_returned_at_train_begin_calls_jump_to_epoch_on_callbacks_not_metrics():
    met, jumper, other = Tracer(), Tracer(actions={("train_begin", 0): {"epoch": 2}}), Tracer(order=5)
    h = CallbackHandler([jumper, other], [met])
    h.on_train_begin(4, None, [])
    assert jumper.jumps == [2] and other.jumps == [2] and met.jumps == []
    assert h.state_dict["epoch"] == 2 and h.state_dict["n_epochs"] == 4


def test_smooth_loss_is_the_debiased_ema_of_the_raw_losses_as_a_cpu_float32_tensor():
    h = CallbackHandler()
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    ref = SmoothenValue(0.98)
    for v in [2.0, 1.0, 4.0]:
        h.on_batch_begin(X, Y)
        h.on_backward_begin(torch.tensor(v, dtype=torch.float64))
        ref.add_value(torch.tensor(v, dtype=torch.float32))
        sl = h.state_dict["smooth_loss"]
        assert sl.dtype == torch.float32 and sl.device.type == "cpu" and sl.dim() == 0
        assert torch.equal(sl, ref.smooth)
    first = CallbackHandler()
    first.on_train_begin(1, None, [])
    first.on_batch_begin(X, Y)
    first.on_backward_begin(torch.tensor(3.5))
    assert first.state_dict["smooth_loss"].item() == pytest.approx(3.5)


def test_set_dl_appends_a_dataset_callback_and_removes_the_previous_one():
    class DsCb(Callback, torch.utils.data.Dataset):
        pass

    class Dl:
        def __init__(self, ds):
            self.dataset = ds

    a, b = DsCb(), DsCb()
    tracer = Tracer(order=10)
    h = CallbackHandler([tracer])
    h.set_dl(Dl(a))
    assert h.callbacks == [tracer, a]
    h.set_dl(Dl(b))
    assert h.callbacks == [tracer, b]


# --------------------------------------------------------------------------------- property test (§4)
FLAGS = ("stop_epoch", "skip_step", "skip_zero", "skip_bwd")
RETURNABLE = {  # what a callback may legally return at each event (keys that exist by then)
    "train_begin": ["skip_validate", "epoch"],
    "epoch_begin": ["stop_training", "skip_validate"],
    "batch_begin": list(FLAGS) + ["stop_training"],
    "loss_begin": list(FLAGS),
    "backward_begin": ["skip_bwd", "skip_step", "skip_zero", "stop_epoch"],
    "backward_end": ["skip_step", "skip_zero", "stop_epoch"],
    "step_end": ["skip_zero", "stop_epoch"],
    "batch_end": ["stop_epoch", "stop_training"],
    "epoch_end": ["stop_training"],
    "train_end": [],
}


class RandomUpdater(Callback):
    """Returns, at each event, a random (valid) update drawn in advance."""

    def __init__(self, plan, order):
        self.plan, self._order, self.calls = plan, order, 0

    def _act(self, event):
        self.calls += 1
        choice = self.plan.get((event, self.calls % 7))
        if choice is None or not RETURNABLE[event]:
            return None
        key = RETURNABLE[event][choice % len(RETURNABLE[event])]
        return {key: 0 if key == "epoch" else True}


for _e in RETURNABLE:
    setattr(RandomUpdater, f"on_{_e}", (lambda e: lambda self, **kw: self._act(e))(_e))


@settings(max_examples=60, deadline=None)
@given(
    plans=st.lists(st.dictionaries(st.tuples(st.sampled_from(list(RETURNABLE)), st.integers(0, 6)),
                                   st.integers(0, 5), max_size=6), min_size=0, max_size=4),
    n_epochs=st.integers(1, 3), n_train=st.integers(1, 4), n_valid=st.integers(0, 3),
)
def test_handler_invariants_hold_for_random_callbacks_returning_random_valid_updates(plans, n_epochs, n_train, n_valid):
    """Whatever valid updates callbacks return: flags reset at their events, counters move only after training
    batch_end, keys appear lazily, and stop/skip flags are honoured at their read points (spec §4)."""
    first = Tracer(order=-1000)  # sees the state right after the handler's own pre-dispatch edits
    cbs = [first] + [RandomUpdater(p, order=i) for i, p in enumerate(plans)]
    h = CallbackHandler(cbs)
    h.on_train_begin(n_epochs, None, [])
    iteration = 0
    epochs_run = 0
    for _ in range(n_epochs):
        epochs_run += 1
        h.on_epoch_begin()
        for _ in range(n_train):
            if drive_batch(h, train=True):
                break
        if not h.skip_validate:
            for _ in range(n_valid):
                if drive_batch(h, train=False):
                    break
        if h.on_epoch_end(None if h.skip_validate or n_valid == 0 else 0.5):
            break
    h.on_train_end(False)

    seen_keys: set[str] = set()
    current_epoch = 0
    for (event, train, epoch, it, nb), (_, keys), (_, kw) in zip(first.records, first.keys, first.kwargs):
        # lazy keys: a key is visible only from the event where the spec says it first appears
        for k in ("stop_training", "last_input", "last_output", "last_loss", "smooth_loss", "last_metrics"):
            if k in keys and k not in seen_keys:
                assert event == {"stop_training": "epoch_begin", "last_input": "batch_begin",
                                 "last_output": "loss_begin", "last_loss": "backward_begin",
                                 "smooth_loss": "backward_begin", "last_metrics": "epoch_end"}[k] or (
                    k == "last_loss" and event == "batch_end" and not train)
                seen_keys.add(k)
        if event == "batch_begin":
            assert all(kw[f] is False for f in FLAGS), "per-batch flags are reset before batch_begin"
            if train:
                assert it == iteration
        if event == "epoch_begin":
            assert kw["stop_training"] is False and nb == 0
            assert epoch == current_epoch
        if event == "batch_end" and train:
            iteration += 1  # moves after the dispatch: the next record sees it
        if event == "epoch_end":
            current_epoch += 1
        if event == "train_end":
            assert kw["exception"] is False and epoch == epochs_run and it == iteration
    assert h.state_dict["iteration"] == iteration


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False), min_size=1, max_size=60),
       st.sampled_from([torch.float32, torch.float16, torch.float64]))
def test_handler_loss_smoothing_gives_the_same_bits_as_v1s_tensor_arithmetic(losses, dtype):
    """The handler smooths on float32 numpy scalars for speed; v1 smooths loss.float().detach().cpu() tensors.
    Both must give identical smooth_loss tensors at every step."""
    h = CallbackHandler()
    h.on_train_begin(1, None, [])
    reference = SmoothenValue(0.98)
    for v in losses:
        loss = torch.tensor(v, dtype=dtype, requires_grad=True) * 1
        h.on_batch_begin(X, Y)
        h.on_backward_begin(loss)
        reference.add_value(loss.float().detach().cpu())
        assert torch.equal(h.state_dict["smooth_loss"], reference.smooth)
        assert h.state_dict["smooth_loss"].dtype == torch.float32


def test_notes_are_stored_even_where_add_note_does_not_exist_python_3_10():
    from fastloop._dispatch import note

    class Py310Error:  # an exception object of Python 3.10: no add_note
        pass

    err = Py310Error()
    note(err, "fastloop: raised in callback X.on_batch_end.")
    note(err, "fastloop: raised in callback X.on_batch_end.")
    assert err.__notes__ == ["fastloop: raised in callback X.on_batch_end."]


def test_an_event_of_the_users_own_is_dispatched_to_every_callback_as_in_v1():
    class Custom(Callback):
        def on_my_event(self, foo, epoch, **kwargs):
            self.got = (foo, epoch)

    cb = Custom()
    CallbackHandler([cb])("my_event", foo=1)
    assert cb.got == (1, 0)


def test_reversing_or_sorting_the_handler_list_changes_the_call_order():
    a, b = Tracer(name="a"), Tracer(name="b")
    h = CallbackHandler([a, b])
    h.callbacks.reverse()
    assert h.implementers("train_begin") == [b, a]
    h.callbacks.sort(key=lambda cb: cb.name)
    assert h.implementers("train_begin") == [a, b]
