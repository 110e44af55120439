"""fastloop.basics, the star-import module: every name group a fastai v1 script gets from ``fastai.basics``,
lazy ``plt``/``pd``, and the core/torch_core helpers it brings (spec: issue #11)."""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastloop.basics as basics

#: The names ``from fastai.basics import *`` gives in fastai 1.0.61 (read once from a live 1.0.61) that
#: fastloop provides: all of them but the data block API, the downloads, the pandas helpers and ``pd``,
#: ``DataFrame``, ``Series``, ``Patch`` (lazy, tested below), ``scipy``, ``yaml``, ``requests``,
#: ``pkg_resources`` and ``MultiLabelClassificationInterpretation``.
V1_BASICS_NAMES = """
    AUROC AccumulateScheduler AdamW AdaptiveConcatPool2d AffineFunc AffineMatrix AnnealFunc Any AnyStr ArgStar
    AverageMetric BCEFlat BCEWithLogitsFlat BatchNorm1dFlat BatchSampler BatchSamples BnFreeze BoolOrTensor
    BufferedWriter ByteTensor BytesIO Callable Callback CallbackHandler CallbackList
    ClassificationInterpretation Collection ConfusionMatrix Counter CrossEntropyFlat DataBunch
    DataFrameOrChunks DataLoader Dataset DatasetType Debugger DeviceDataLoader Dict DistributedDataParallel
    DoubleTensor Enum ExpRMSPE ExplainedVariance F FBeta FilePathList Flatten FlattenedLoss FloatOrTensor
    FloatTensor Floats GradientClipping HalfTensor Hashable HookFunc ImgLabel ImgLabels InitVar IntEnum
    IntOrTensor Interpretation IntsOrStrs ItemsList Iterable Iterator KWArgs KappaScore KeyFunc
    LabelSmoothingCrossEntropy Lambda LambdaFunc LayerFunc Learner LearnerCallback LightingFunc List ListOrItem
    ListRules ListSizes LogitTensorImage LongTensor LossFunction MSELossFlat Mapping MasterBar MatthewsCorreff
    MergeLayer MetricFunc MetricFuncList MetricsList ModelOnCPU Module ModuleList MultiLabelFbeta NPArray
    NPArrayList NPArrayMask NPArrayableList NPImage NewType NoneReduceOnCPU NoopLoss NormType Number
    OptDataFrame OptListOrItem OptLossFunc OptMetrics OptOptimizer OptRange OptSplitFunc OptStats OptStrList
    OptStrTuple OptimWrapper Optional OrderedDict PBar ParamList ParameterModule PartialLayer Path
    PathLikeOrBinaryStream PathOrStr Perplexity PixelFunc PixelShuffle_ICNR Point Points PoolFlatten
    PooledSelfAttention2d PrePostInitMeta Precision PrettyString ProcessPoolExecutor ProgressBar R2Score RMSE
    Rank0Tensor Recall RecordOnCPU Recorder ResizeBatch Sampler Scheduler SelfAttention Sequence SequentialEx
    ShortTensor ShowGraph SigmoidRange SimpleNamespace Sized Sizes SmoothenValue SplitArrayList SplitFunc
    SplitFuncOrIdxList StartOptEnd StrList Tensor TensorDataset TensorImage TensorImageSize TensorOrNumList
    TensorOrNumber Tensors TfmList ThreadPoolExecutor Tokens Tuple TypeVar Union View WassersteinLoss Weights
    abc abstractmethod abstractproperty accuracy accuracy_thresh add_metrics annealing_cos annealing_exp
    annealing_linear annealing_no annealing_poly apply_init apply_leaf arange_of array arrays_split as_tensor
    attrgetter auc_roc_score batch_to_half batchnorm_2d bias_types bn2float bn_drop_lin bn_types bz2 callbacks
    camel2snake children children_and_parameters chunks collections compose concurrent cond_init contextmanager
    conv2d conv2d_trans conv_layer copy cos csv data_collate dataclass deepcopy defaultdict defaults dice
    distrib_barrier embedding error_rate even_mults exp exp_rmspe explained_variance extract_kwargs fbeta field
    first_el first_layer fit fit_fc fit_one_cycle flatten_check flatten_model float_or_x foreground_acc
    func_args functools gc get_model get_param_groups get_preds get_tmp_file grab_idx gzip has_arg has_params
    hashlib html icnr idx_dict ifnone importlib in_channels init_default inspect io is1d is_dict is_listy
    is_pathlike is_pool_type is_tuple itemgetter itertools join_path join_paths json last_layer listify
    load_learner loadtxt_str log log_uniform logit logit_ loss_batch lr_find mae master_bar math
    mean_absolute_error mean_squared_error mean_squared_logarithmic_error mimetypes mixup model2half model_type
    mse msle namedtuple nn no_wd_types noop np np2model_tensor np_address np_func num_children num_cpus
    num_distrib numbers one_cycle_scheduler one_hot one_param operator optim os partial partition
    partition_by_cores patches patheffects pathlib pickle plt progress_bar r2_score rand_bool random
    random_split range_children range_of rank_distrib re recurse recurse_eq reduce relu remove_module_load
    requires_grad res_block rmse roc_curve root_mean_squared_error save_texts set_all_seed set_bn_eval
    set_trace show_some shutil sigmoid_range simple_cnn sin spectral_norm split_kwargs_by_func split_model
    split_model_idx split_no_wd_params subplots subprocess sys tan tanh tarfile tempfile tensor to_cpu to_data
    to_detach to_device to_float to_fp16 to_fp32 to_half to_int to_np top_k_accuracy torch train_epoch
    trainable_params trange_of trunc_normal_ try_import try_int try_save typing uniform uniform_int uniqueify
    validate warn warnings weakref weight_norm working_directory
""".split()


def _star() -> dict:
    ns: dict = {}
    exec("from fastloop.basics import *", ns)
    return ns


def _run(code: str, tmp_path=None, extra_path: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so that what is imported is observable), Agg backend."""
    env = dict(os.environ, MPLBACKEND="Agg")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


# ============================================================================================== names
def test_star_import_gives_every_v1_basics_name_fastloop_provides():
    ns = _star()
    missing = [n for n in V1_BASICS_NAMES if n not in ns]
    assert missing == []


def test_star_import_gives_the_public_names_of_each_engine_module():
    import fastloop.basic_data
    import fastloop.basic_train
    import fastloop.callback
    import fastloop.core
    import fastloop.layers
    import fastloop.metrics
    import fastloop.torch_core
    import fastloop.train

    ns = _star()
    for module in (fastloop.core, fastloop.torch_core, fastloop.layers, fastloop.basic_data, fastloop.basic_train,
                   fastloop.callback, fastloop.metrics, fastloop.train):
        for name in module.__all__:
            assert ns[name] is getattr(module, name), (module.__name__, name)


def test_star_import_gives_the_callbacks_subpackage_and_third_party_names():
    import fastloop.callbacks

    ns = _star()
    assert ns["callbacks"] is fastloop.callbacks and ns["callbacks"].CSVLogger.__name__ == "CSVLogger"
    assert ns["np"] is np and ns["torch"] is torch and ns["nn"] is nn and ns["F"] is torch.nn.functional
    assert ns["optim"] is torch.optim and ns["Tensor"] is torch.Tensor
    assert ns["partial"] is functools.partial and ns["Path"] is pathlib.Path
    assert ns["os"] is os and ns["math"] is math and ns["re"] is re
    assert ns["exp"] is np.exp and ns["tensor"] is basics.tensor  # v1: numpy's exp, fastai's tensor
    assert ns["Module"].__module__ == "fastloop.torch_core"


def test_star_import_has_no_private_names_and_all_resolves():
    for name in basics.__all__:
        assert not name.startswith("_")
        getattr(basics, name)
    assert len(basics.__all__) == len(set(basics.__all__))


# ============================================================================================== lazy plt / pd
_FRESH_SCRIPT = """
    import json, sys, time
    class Block:  # pandas cannot be found here, whatever is installed
        def find_spec(self, name, path=None, target=None):
            if name == "pandas" or name.startswith("pandas."):
                raise ModuleNotFoundError(name)
    sys.meta_path.insert(0, Block())
    t0 = time.perf_counter()
    import torch
    t1 = time.perf_counter()
    from fastloop.basics import *
    t2 = time.perf_counter()
    res = {"torch_s": t1 - t0, "basics_s": t2 - t1, "mpl_at_import": "matplotlib" in sys.modules,
           "pandas_at_import": "pandas" in sys.modules, "pd": "pd" in dir()}
    fig, ax = plt.subplots()
    plt.plot([1, 2, 3])
    res["pyplot_after_use"] = "matplotlib.pyplot" in sys.modules
    res["same_figure"] = plt.gcf() is fig
    res["patches"] = patches.Rectangle is sys.modules["matplotlib.patches"].Rectangle
    try:
        from fastloop.basics import DataFrame
    except ImportError as e:
        res["dataframe_error"] = str(e)
    print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def fresh_star_import(tmp_path_factory) -> dict:
    """``from fastloop.basics import *`` in a fresh interpreter where pandas cannot be found: what it imported."""
    result = _run(_FRESH_SCRIPT, tmp_path_factory.mktemp("fresh"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_star_import_loads_neither_matplotlib_nor_pandas(fresh_star_import):
    assert not fresh_star_import["mpl_at_import"] and not fresh_star_import["pandas_at_import"]


def test_plt_and_patches_work_after_the_star_import_and_import_matplotlib_then(fresh_star_import):
    assert fresh_star_import["pyplot_after_use"] and fresh_star_import["same_figure"] and fresh_star_import["patches"]


def test_without_pandas_there_is_no_pd_and_dataframe_says_why(fresh_star_import):
    assert not fresh_star_import["pd"]
    assert "needs pandas" in fresh_star_import["dataframe_error"]


def test_star_import_time_is_small_next_to_torchs(fresh_star_import):
    """fastloop.basics adds little to torch's own import time (generous bound: CI machines are noisy)."""
    assert fresh_star_import["basics_s"] < max(3.0, 2 * fresh_star_import["torch_s"])


def test_with_pandas_installed_pd_is_lazy_and_dataframe_imports_it(tmp_path):
    fake = tmp_path / "fake" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("class DataFrame:\n    pass\n\n\nclass Series:\n    pass\n")
    result = _run("""
        import sys
        from fastloop.basics import *
        assert "pandas" not in sys.modules, "pandas imported at star-import time"
        frame = pd.DataFrame()
        assert "pandas" in sys.modules
        from fastloop.basics import DataFrame, Series
        assert isinstance(frame, DataFrame) and Series is sys.modules["pandas"].Series
        print("ok")
    """, tmp_path, extra_path=str(tmp_path / "fake"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_lazy_module_passes_attributes_through_both_ways():
    lazy = basics._LazyModule("json")
    assert "imported on first use" in repr(lazy)
    assert lazy.dumps([1]) == "[1]"
    assert repr(lazy) == repr(sys.modules["json"]) and "dumps" in dir(lazy)
    lazy.fastloop_test_attr = 3
    try:
        assert sys.modules["json"].fastloop_test_attr == 3
    finally:
        del sys.modules["json"].fastloop_test_attr


def test_unknown_attribute_of_basics_is_an_attribute_error():
    with pytest.raises(AttributeError):
        basics.no_such_name  # noqa: B018


# ============================================================================================== core helpers
def test_core_partition_helpers():
    ns = _star()
    assert ns["partition"](list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert ns["partition_by_cores"](list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert ns["chunks"]("abcde", 2).__next__() == "ab"
    assert ns["range_of"]("abc") == [0, 1, 2] and ns["arange_of"]("abc").tolist() == [0, 1, 2]


def test_core_small_helpers():
    ns = _star()
    assert ns["float_or_x"]("0.5") == 0.5 and ns["float_or_x"]("abc") == "abc"
    assert ns["noop"](3) == 3 and ns["noop"]() is None
    assert ns["is_listy"]((1,)) and not ns["is_listy"]("a") and ns["is_tuple"]((1, 2)) and not ns["is_tuple"]([1])
    assert ns["array"](i * 2 for i in range(3)).tolist() == [0, 2, 4]
    assert ns["array"]([1, 2]).dtype == np.int64
    assert ns["even_mults"](1e-3, 1e-1, 3).tolist() == pytest.approx([1e-3, 1e-2, 1e-1])
    assert ns["num_cpus"]() >= 1
    assert ns["to_int"](["1", 2.0]) == [1, 2] and ns["one_hot"]([0, 2], 3).tolist() == [1.0, 0.0, 1.0]
    assert ns["compose"]([lambda x: x + 1, lambda x: x * 2])(3) == 8
    assert ns["idx_dict"]("ab") == {"a": 0, "b": 1}
    assert ns["recurse"](lambda x: x * 2, [1, (2, {"a": 3})]) == [2, [4, {"a": 6}]]
    assert ns["recurse_eq"]([1, np.array([2, 3])], [1, np.array([2, 3])])
    assert ns["show_some"]([1, 2, 3], n_max=2) == "1,2..."
    assert repr(ns["PrettyString"]("a b")) == "a b"


def test_core_func_args_and_kwargs_splitting():
    ns = _star()

    def f(a, b=1, *, c=2):
        return a

    assert ns["func_args"](f) == ("a", "b", "c") and ns["has_arg"](f, "c") and not ns["has_arg"](f, "d")
    kwargs = {"b": 5, "z": 6}
    taken, rest = ns["split_kwargs_by_func"](kwargs, f)
    assert taken == {"b": 5} and rest == {"z": 6} and kwargs == {"z": 6}
    assert ns["extract_kwargs"](["z"], {"z": 1, "y": 2}) == ({"z": 1}, {"y": 2})


def test_core_defaults_namespace_has_v1s_settings():
    defaults = _star()["defaults"]
    assert defaults.lr == slice(3e-3) and defaults.wd == 1e-2 and defaults.silent is False
    assert defaults.extra_callbacks is None and defaults.cpus >= 1
    assert defaults.device.type in ("cpu", "cuda")


def test_core_pre_post_init_meta_calls_both_hooks_around_init():
    calls = []

    class A(metaclass=basics.PrePostInitMeta):
        def __pre_init__(self):
            calls.append("pre")

        def __init__(self, x):
            calls.append(("init", x))

        def __post_init__(self):
            calls.append("post")

    A(1)
    assert calls == ["pre", ("init", 1), "post"]


def test_core_working_directory_tmp_files_and_texts(tmp_path):
    ns = _star()
    with ns["working_directory"](tmp_path):
        assert pathlib.Path.cwd() == tmp_path
        ns["save_texts"]("t.txt", ["a", "b"])
    assert ns["loadtxt_str"](tmp_path / "t.txt").tolist() == ["a", "b"]
    name = ns["get_tmp_file"](tmp_path)
    assert pathlib.Path(name).parent == tmp_path
    assert ns["join_paths"](["a", "b"], tmp_path) == [tmp_path / "a", tmp_path / "b"]


def test_core_random_split_and_arrays_split():
    ns = _star()
    a, b = np.arange(10), np.arange(10) * 2
    (train_a, train_b), (valid_a, valid_b) = ns["arrays_split"](a < 7, a, b)
    assert train_a.tolist() == list(range(7)) and valid_b.tolist() == [14, 16, 18]
    np.random.seed(0)
    (tr,), (va,) = ns["random_split"](0.3, a)
    assert len(tr) + len(va) == 10


# ============================================================================================== torch_core helpers
def test_torch_core_tensor_builds_like_v1():
    tensor = _star()["tensor"]
    assert torch.equal(tensor(1, 2, 3), torch.tensor([1, 2, 3]))
    assert torch.equal(tensor([]), torch.tensor(0))
    with pytest.warns(UserWarning, match="int32"):
        t = tensor(np.array([1, 2], dtype=np.int32))
    assert t.dtype == torch.int64
    arr = np.ones(3, dtype=np.float32)
    assert _star()["np_address"](arr) == tensor(arr).data_ptr()  # shares the array's memory


def test_torch_core_conversions():
    ns = _star()
    t = torch.ones(2, requires_grad=True) * 2
    assert ns["to_np"](t).tolist() == [2.0, 2.0]
    assert ns["try_int"](3.7) == 3 and ns["try_int"](np.array(4)) == 4
    assert ns["try_int"]("3") == "3" and ns["try_int"](None) is None  # sized things and non-numbers stay (v1)
    assert ns["try_int"]([1]) == [1]
    assert ns["to_float"](torch.ones(1, dtype=torch.float64)).dtype == torch.float32
    assert ns["to_cpu"]([torch.ones(1)])[0].device.type == "cpu"
    x = torch.arange(6).view(3, 2)
    assert ns["grab_idx"](x, 1).tolist() == [2, 3]
    assert ns["grab_idx"]([x, x], 0, batch_first=False)[0].tolist() == [0, 2, 4]


def test_torch_core_logit_is_the_inverse_of_sigmoid():
    ns = _star()
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(ns["logit"](torch.sigmoid(x)), x, atol=1e-5)
    assert torch.allclose(ns["logit_"](torch.sigmoid(x)), x, atol=1e-5)


def test_torch_core_random_draws_stay_in_range():
    ns = _star()
    assert 1 <= ns["uniform"](1, 2) <= 2 and ns["uniform"](3) == 3
    draws = ns["uniform"](1, 2, size=(100,))
    assert draws.shape == (100,) and draws.min() >= 1 and draws.max() <= 2
    logs = ns["log_uniform"](1e-3, 1e-1, size=100)
    assert logs.min() >= 1e-3 and logs.max() <= 1e-1
    assert 1e-3 <= ns["log_uniform"](1e-3, 1e-1) <= 1e-1
    assert ns["rand_bool"](1.0) and not ns["rand_bool"](0.0)
    assert ns["rand_bool"](0.5, size=10).dtype == torch.bool
    assert 0 <= ns["uniform_int"](0, 3) <= 3 and ns["uniform_int"](0, 1, size=5).max() <= 1


def test_torch_core_model_helpers():
    ns = _star()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 2))
    assert ns["one_param"](model) is model[0].weight
    assert ns["in_channels"](model) == 3 and ns["last_layer"](model) is model[2]
    assert ns["num_children"](model) == 3 and ns["has_params"](model) and not ns["has_params"](nn.ReLU())
    model[1].requires_grad_(False)
    model.train()
    ns["set_bn_eval"](model)
    assert not model[1].training and model[0].training  # only the frozen BatchNorm goes to eval
    assert ns["split_model_idx"](model, [1])[1][0] is model[1]
    assert [len(g) for g in ns["split_model"](model, [model[2]])] == [2, 1]
    assert ns["num_distrib"]() == 0 and ns["rank_distrib"]() == 0
    assert list(ns["remove_module_load"]({"module.a": 1})) == ["a"]


def test_torch_core_apply_init_skips_batchnorm_and_frozen_modules():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    model[2].requires_grad_(False)
    frozen = model[2].weight.detach().clone()
    _star()["apply_init"](model, nn.init.ones_)
    assert torch.all(model[0].weight == 1) and torch.all(model[0].bias == 0)
    assert torch.equal(model[2].weight, frozen) and torch.all(model[1].weight == 1)


def test_torch_core_module_needs_no_super_init_and_tolerates_one():
    Module = _star()["Module"]

    class Plain(Module):
        def __init__(self, n):
            self.lin = nn.Linear(n, 1)

    class Late(Plain):
        def __init__(self):
            self.extra = nn.Linear(1, 1)
            super().__init__(3)  # a second nn.Module.__init__ would drop `extra`: it does not run

    assert len(list(Plain(2).parameters())) == 2
    assert {n for n, _ in Late().named_children()} == {"extra", "lin"}


def test_torch_core_children_and_parameters_wraps_direct_parameters():
    ns = _star()
    m = nn.Module()
    m.lin = nn.Linear(1, 1)
    m.scale = nn.Parameter(torch.ones(1))
    kids = ns["children_and_parameters"](m)
    assert kids[0] is m.lin and isinstance(kids[1], ns["ParameterModule"]) and kids[1].val is m.scale


def test_torch_core_context_managers_move_model_and_reduction():
    ns = _star()
    model = nn.Linear(2, 2)
    with ns["ModelOnCPU"](model) as m:
        assert m.weight.device.type == "cpu"
    loss = nn.CrossEntropyLoss()
    with ns["NoneReduceOnCPU"](loss) as lf:
        assert lf(torch.randn(3, 2), torch.tensor([0, 1, 0])).shape == (3,)
    assert loss.reduction == "mean"
    with ns["NoneReduceOnCPU"](torch.nn.functional.mse_loss) as lf:
        assert lf(torch.ones(3), torch.zeros(3)).shape == (3,)


def test_half_helpers_convert_inputs_and_keep_batchnorm_in_float():
    ns = _star()
    model = ns["model2half"](nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert model[0].weight.dtype == torch.float16 and model[1].weight.dtype == torch.float32
    assert ns["bn2float"](nn.BatchNorm1d(2).half()).weight.dtype == torch.float32
    assert ns["to_half"](torch.ones(1, dtype=torch.int64)).dtype == torch.int64
    x, y = ns["batch_to_half"]([torch.ones(2), torch.ones(2)])
    assert x.dtype == torch.float16 and y.dtype == torch.float32


def test_type_aliases_evaluate_in_v1_style_signatures():
    ns = _star()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = ("def f(a: Floats, b: PathOrStr, c: Tensors, d: OptOptimizer = None, e: Collection[int] = ()) -> "
               "Rank0Tensor: pass")
        exec(compile(src, "<v1 code>", "exec", dont_inherit=True), ns)  # annotations evaluated, as in v1's days
    assert ns["f"].__annotations__["a"] is ns["Floats"]
