"""Hooks: `Hook`/`Hooks`, `hook_output(s)` (activations and gradients), `HookCallback`, `ActivationStats`,
`model_sizes`, `num_features_model`, `dummy_batch`/`dummy_eval`, `model_summary` / ``Learner.summary``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callbacks.hooks import (
    ActivationStats,
    Hook,
    HookCallback,
    Hooks,
    dummy_batch,
    dummy_eval,
    hook_output,
    hook_outputs,
    model_sizes,
    model_summary,
    num_features_model,
)
from fastloop.core import PrettyString
from tests.callbacks.v1_scenarios_b import assert_close
from tests.callbacks.v1_scenarios_b import run as run_scenarios
from tests.conftest import make_learner

REFERENCE = json.loads((Path(__file__).parent / "v1_reference_b.json").read_text())


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1))


def test_hooks_summary_and_activation_stats_match_fastai_1_0_61():
    """Summary tables (frozen layer, SGD partial with wd/lr, callbacks listed), ActivationStats values, model
    sizes, feature count, dummy batch, output gradients and legacy backward hooks equal fastai 1.0.61's."""
    ours = run_scenarios("fastloop", only=["hooks"])["hooks"]
    assert ours["summary_frozen"] == REFERENCE["hooks"]["summary_frozen"]  # the printed table, character for character
    assert ours["summary_sgd"] == REFERENCE["hooks"]["summary_sgd"]
    assert_close(ours, REFERENCE["hooks"], rel=1e-5, abs_=1e-6, where="hooks")


def test_summary_is_a_learner_method_returning_a_pretty_string(tmp_path):
    learn = make_learner(tmp_path)
    s = learn.summary()
    assert isinstance(s, PrettyString) and repr(s) == str(s)
    assert Learner.summary is model_summary
    lines = s.split("\n")
    assert lines[0] == "Sequential" and lines[1] == "=" * 70
    assert lines[4].split() == ["Linear", "[8]", "40", "True"]
    assert "Total params: 58" in s and "Total trainable params: 58" in s
    assert "Optimized with 'torch.optim.adam.Adam', betas=(0.9, 0.99)" in s  # fastloop's AdamW reads as v1's
    assert "Loss function : CrossEntropyLoss" in s
    assert model_summary(learn, n=30).split("\n")[1] == "=" * 30


def test_summary_names_a_plain_optimizer_class_readably(tmp_path):
    learn = make_learner(tmp_path, opt_func=torch.optim.SGD)
    assert "Optimized with 'torch.optim.sgd.SGD'\n" in learn.summary()


def test_summary_does_not_change_batchnorm_statistics_and_skips_layers_that_did_not_run(tmp_path):
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn, self.unused = nn.Linear(4, 2), nn.BatchNorm1d(2), nn.Linear(7, 7)

        def forward(self, x):
            return self.bn(self.lin(x))

    learn = make_learner(tmp_path)
    learn.model = Partial()
    stats = learn.model.bn.running_mean.clone()
    s = learn.summary()
    assert torch.equal(learn.model.bn.running_mean, stats)
    assert "BatchNorm1d" in s and "Total params: 14" in s and "[7]" not in s


def test_summary_of_a_learner_without_data_raises_v1s_message(tmp_path):
    learn = make_learner(tmp_path)
    empty = TensorDataset(torch.zeros(0, 4), torch.zeros(0))
    learn.data = DataBunch(DataLoader(empty, batch_size=4), DataLoader(empty, batch_size=4), device="cpu",
                           no_check=True)
    with pytest.raises(Exception, match="This is an empty `Learner`"):
        learn.summary()


def test_hook_stores_the_function_of_the_output_and_removes_itself(tmp_path):
    lin = nn.Linear(3, 2)
    with Hook(lin, lambda m, i, o: (m, i[0].shape, o.sum().item(), o.requires_grad)) as h:
        x = torch.randn(5, 3)
        y = lin(x)
        assert h.stored == (lin, (5, 3), pytest.approx(y.sum().item()), False)  # detached by default
    assert h.removed and not lin._forward_hooks
    h.remove()  # a second remove does nothing
    kept = Hook(lin, lambda m, i, o: o.requires_grad, detach=False)
    lin(torch.randn(1, 3))
    assert kept.stored is True
    kept.remove()


def test_hook_output_stores_activations_and_hooks_behave_like_a_list():
    net = conv_net()
    with hook_output(net[0]) as h:
        net(torch.randn(2, 3, 8, 8))
        assert h.stored.shape == (2, 4, 6, 6) and not h.stored.requires_grad
    with hook_outputs([net[0], net[2]], detach=False) as hs:
        net(torch.randn(2, 3, 8, 8))
        assert len(hs) == 2 and hs[1] is hs.hooks[1] and list(hs) == hs.hooks
        assert [o.shape for o in hs.stored] == [(2, 4, 6, 6), (2, 6, 2, 2)] and hs.stored[0].requires_grad
    assert all(not m._forward_hooks for m in net.modules())
    with Hooks([net[0], net[2]], lambda m, i, o: o.shape[1]) as hs:
        net(torch.randn(1, 3, 8, 8))
        assert hs.stored == [4, 6]


def test_hook_output_grad_stores_the_gradient_of_the_output_even_before_an_inplace_relu():
    """grad=True stores [d loss / d output]; the module is followed by ReLU(inplace=True), where torch's full
    backward hooks fail, and no deprecation warning is raised (fastai v1 used the legacy hook)."""
    net = conv_net()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with hook_output(net[0], grad=True) as h:
            net(x).pow(2).sum().backward()
    conv_out = net[0](x)
    conv_out.retain_grad()
    net[3](net[2](torch.relu(conv_out))).pow(2).sum().backward()
    assert isinstance(h.stored, list) and len(h.stored) == 1
    assert torch.allclose(h.stored[0], conv_out.grad)
    assert not net[0]._forward_hooks


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")
def test_legacy_backward_hook_gets_grad_input_and_grad_output():
    "is_forward=False is torch's legacy backward hook, as in fastai v1 (torch warns about it for some modules)."
    net = conv_net()
    with Hook(net[2], lambda m, gi, go: [t.shape for t in go], is_forward=False) as h:
        net(torch.randn(2, 3, 8, 8, requires_grad=True)).sum().backward()
    assert h.stored == [(2, 6, 2, 2)]


def test_a_module_returning_several_tensors_can_be_hooked():
    "An LSTM returns (out, (h, c)): fastai v1's detach crashed on the inner tuple."
    lstm = nn.LSTM(3, 5, batch_first=True)
    with hook_output(lstm) as h:
        lstm(torch.randn(2, 4, 3))
    out, (hidden, cell) = h.stored
    assert out.shape == (2, 4, 5) and hidden.shape == cell.shape == (1, 2, 5)


def test_hook_callback_hooks_leaves_with_params_during_the_fit_only(tmp_path):
    seen = []

    class Count(HookCallback):
        def hook(self, m, i, o):
            seen.append(type(m).__name__)

    learn = make_learner(tmp_path, silent=True)
    learn.callback_fns.append(Count)
    learn.fit(1, 1e-3)
    assert [type(m).__name__ for m in learn.count.modules] == ["Linear", "Linear"]
    assert seen.count("Linear") == 2 * (4 + 2)  # two modules, four training and two validation batches
    assert all(not m._forward_hooks for m in learn.model.modules())
    learn.callbacks.append(Count(learn, modules=[learn.model[2]], do_remove=False))
    learn.fit(1, 1e-3)
    assert len(learn.model[2]._forward_hooks) == 1
    learn.callbacks[0].remove()
    assert not learn.model[2]._forward_hooks


def test_activation_stats_records_mean_and_std_per_module_and_training_batch(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    learn.callback_fns.append(ActivationStats)
    outs = []
    learn.model[0].register_forward_hook(lambda m, i, o: outs.append(o.detach().clone()))
    learn.fit(2, 1e-3)
    stats = learn.activation_stats.stats
    assert stats.shape == (2, 2, 8)
    train_outs = outs[0:4] + outs[6:10]  # each epoch: 4 training then 2 validation forwards
    assert torch.allclose(stats[0, 0], torch.tensor([o.mean().item() for o in train_outs]))
    assert torch.allclose(stats[1, 0], torch.tensor([o.std().item() for o in train_outs]))


def test_model_sizes_dummy_batch_and_num_features():
    net = conv_net()
    assert model_sizes(net, size=(16, 16)) == [(1, 4, 14, 14), (1, 4, 14, 14), (1, 6, 6, 6), (1, 6, 1, 1)]
    assert num_features_model(net) == 6
    b = dummy_batch(net, (5, 7))
    assert b.shape == (1, 3, 5, 7) and b.dtype == torch.float32 and not b.requires_grad
    assert b.min() >= -1 and b.max() <= 1
    assert dummy_batch(net.half(), (2, 2)).dtype == torch.float16
    net = conv_net().train()
    assert dummy_eval(net, (8, 8)).shape == (1, 6, 1, 1) and not net.training


def test_num_features_model_tries_bigger_inputs_until_the_model_accepts_one():
    class NeedsBig(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 1)

        def forward(self, x):
            if x.shape[-1] < 256:
                raise ValueError("too small")
            return self.conv(x)

    assert num_features_model(NeedsBig()) == 5
