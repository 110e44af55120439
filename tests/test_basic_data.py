"""fastloop.basic_data: DataBunch, DeviceDataLoader, DatasetType (spec §15)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, SubsetRandomSampler, TensorDataset

from fastloop.basic_data import DataBunch, DatasetType, DeviceDataLoader

META = torch.device("meta")


def _ds(n: int, offset: int = 0) -> TensorDataset:
    """Item i is (x=[i + offset, ...], y=i % 2): the x value tells which item a batch holds."""
    x = (torch.arange(n, dtype=torch.float32) + offset).unsqueeze(1).repeat(1, 3)
    return TensorDataset(x, torch.arange(n) % 2)


def _bunch(n_train: int = 40, n_valid: int = 20, bs: int = 8, **kw) -> DataBunch:
    kw.setdefault("num_workers", 0)
    kw.setdefault("device", "cpu")
    return DataBunch.create(_ds(n_train), _ds(n_valid, offset=1000), bs=bs, **kw)


def _ids(dl) -> list[int]:
    return [int(v) for xb, _ in dl for v in xb[:, 0]]


# ------------------------------------------------------------------------------------------ DatasetType


def test_dataset_type_members():
    assert [t.name for t in DatasetType] == ["Train", "Valid", "Test", "Single", "Fix"]


# ------------------------------------------------------------------------------------------ DataBunch.create


@pytest.mark.parametrize(("n", "n_batches"), [(40, 5), (44, 5), (47, 5), (48, 6)])
def test_create_train_dl_drops_last_partial_batch(n, n_batches):
    """Train uses drop_last: 40 items at bs 8 give 5 batches, and 44 items also 5."""
    data = _bunch(n_train=n, bs=8)
    assert len(data.train_dl) == n_batches
    batches = list(data.train_dl)
    assert len(batches) == n_batches
    assert all(xb.shape[0] == 8 for xb, _ in batches)


def test_create_train_dl_is_shuffled():
    data = _bunch(n_train=40, bs=8)
    assert isinstance(data.train_dl.dl.sampler, RandomSampler)
    torch.manual_seed(0)
    order = _ids(data.train_dl)
    assert sorted(order) == list(range(40))
    assert order != list(range(40))


def test_create_valid_dl_is_ordered_and_keeps_last_batch_with_val_bs():
    data = _bunch(n_valid=21, bs=8, val_bs=5)
    assert isinstance(data.valid_dl.dl.sampler, SequentialSampler)
    assert data.valid_dl.batch_size == 5
    assert len(data.valid_dl) == 5  # ceil(21 / 5)
    assert _ids(data.valid_dl) == [1000 + i for i in range(21)]


def test_create_val_bs_defaults_to_bs():
    data = _bunch(bs=4)
    assert data.valid_dl.batch_size == 4
    assert data.batch_size == 4


def test_create_test_dl_is_ordered_with_val_bs():
    data = DataBunch.create(_ds(16), _ds(8), test_ds=_ds(7, offset=500), bs=4, val_bs=3, num_workers=0,
                            device="cpu")
    assert data.test_dl is not None
    assert data.test_dl.batch_size == 3
    assert _ids(data.test_dl) == [500 + i for i in range(7)]
    assert data.test_ds is not None and len(data.test_ds) == 7


def test_create_without_test_ds_has_no_test_dl():
    data = _bunch()
    assert data.test_dl is None and data.test_ds is None


def test_fix_dl_is_train_set_unshuffled_and_complete():
    data = _bunch(n_train=44, bs=8)
    assert len(data.fix_dl) == 6
    assert _ids(data.fix_dl) == list(range(44))
    assert data.fix_dl.batch_size == 8
    assert data.fix_ds is data.train_ds


def test_single_dl_is_valid_set_with_batch_size_one():
    data = _bunch(n_valid=6)
    assert data.single_dl.batch_size == 1
    assert len(data.single_dl) == 6
    xb, yb = next(iter(data.single_dl))
    assert xb.shape == (1, 3) and int(xb[0, 0]) == 1000
    assert data.single_ds is data.valid_ds


@pytest.mark.parametrize(("ds_type", "attr"), [(DatasetType.Train, "train_dl"), (DatasetType.Valid, "valid_dl"),
                                                (DatasetType.Test, "test_dl"), (DatasetType.Single, "single_dl"),
                                                (DatasetType.Fix, "fix_dl")])
def test_dl_returns_the_loader_of_each_dataset_type(ds_type, attr):
    data = DataBunch.create(_ds(16), _ds(8), test_ds=_ds(4), bs=4, num_workers=0, device="cpu")
    assert data.dl(ds_type) is getattr(data, attr)


def test_dl_defaults_to_valid():
    data = _bunch()
    assert data.dl() is data.valid_dl


def test_datasets_are_unwrapped_to_innermost():
    train, valid = _ds(16), _ds(8)
    data = DataBunch.create(train, valid, bs=4, num_workers=0, device="cpu")
    assert data.train_ds is train and data.valid_ds is valid


def test_create_passes_dl_kwargs_and_collate_fn_to_loaders():
    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.utils.data.default_collate(items)

    data = _bunch(bs=8, collate_fn=collate, pin_memory=False, timeout=0)
    next(iter(data.valid_dl))
    assert calls and calls[-1] == 8
    assert data.train_dl.dl.collate_fn is collate
    assert data.fix_dl.dl.collate_fn is collate


def test_wrapping_replaces_the_loaders_collate_fn():
    """DataBunch(train_dl, valid_dl, collate_fn=f) installs f on the torch loaders."""
    marker = []

    def collate(items):
        marker.append(True)
        return torch.utils.data.default_collate(items)

    dl = DataLoader(_ds(8), batch_size=4)
    data = DataBunch(dl, DataLoader(_ds(4), batch_size=4), device="cpu", collate_fn=collate)
    assert dl.collate_fn is collate
    marker.clear()
    next(iter(data.train_dl))
    assert marker == [True]


def test_path_and_device_are_kept():
    data = _bunch(path="/tmp/somewhere")
    assert str(data.path) == "/tmp/somewhere"
    assert data.device == torch.device("cpu")


def test_c_comes_from_the_training_dataset():
    train = _ds(16)
    train.c = 2
    data = DataBunch.create(train, _ds(8), bs=4, num_workers=0, device="cpu")
    assert data.c == 2
    assert data.train_dl.c == 2


# ------------------------------------------------------------------------------------------ DeviceDataLoader


def test_device_data_loader_len_is_wrapped_loaders_len():
    dl = DataLoader(_ds(10), batch_size=3)
    ddl = DeviceDataLoader(dl, "cpu")
    assert len(ddl) == len(dl) == 4


def test_device_data_loader_moves_batches_to_device():
    ddl = DeviceDataLoader(DataLoader(_ds(4), batch_size=2), META)
    xb, yb = next(iter(ddl))
    assert xb.device == META and yb.device == META
    assert ddl.device == META


def test_device_data_loader_applies_tfms_in_order_after_moving():
    seen_devices = []

    def double(b):
        seen_devices.append(b[0].device)
        return b[0] * 2, b[1]

    def plus_one(b):
        return b[0] + 1, b[1]

    ddl = DeviceDataLoader(DataLoader(_ds(4), batch_size=4), "cpu", tfms=[double, plus_one])
    xb, _ = next(iter(ddl))
    assert xb[:, 0].tolist() == [1.0, 3.0, 5.0, 7.0]  # (x * 2) + 1, not (x + 1) * 2
    assert seen_devices == [torch.device("cpu")]


def test_device_data_loader_add_and_remove_tfm():
    ddl = DeviceDataLoader(DataLoader(_ds(4), batch_size=4), "cpu")

    def neg(b):
        return -b[0], b[1]

    ddl.add_tfm(neg)
    assert ddl.tfms == [neg]
    assert next(iter(ddl))[0][1, 0] == -1.0
    ddl.remove_tfm(neg)
    assert ddl.tfms == []
    assert next(iter(ddl))[0][1, 0] == 1.0
    ddl.remove_tfm(neg)  # removing an absent tfm is a no-op
    assert ddl.tfms == []


def test_databunch_add_tfm_reaches_every_loader_and_dl_tfms_apply():
    def tag(b):
        return b[0] + 0.5, b[1]

    data = _bunch(dl_tfms=[tag])
    assert int(next(iter(data.fix_dl))[0][0, 0] * 2) == 1
    data.remove_tfm(tag)
    assert all(tag not in dl.tfms for dl in data.dls)
    data.add_tfm(tag)
    assert all(dl.tfms == [tag] for dl in data.dls)


def test_device_data_loader_attributes_fall_through_to_loader_then_dataset():
    ds = _ds(8)
    ds.c = 7
    ds.drop_last = "from the dataset"
    ddl = DeviceDataLoader(DataLoader(ds, batch_size=4, drop_last=True), "cpu")
    assert ddl.drop_last is True  # the loader wins over the dataset
    assert ddl.c == 7  # the loader has no `c`: read from the dataset
    assert ddl.tensors is ds.tensors
    with pytest.raises(AttributeError):
        ddl.no_such_attribute


def test_device_data_loader_batch_size_and_num_workers_setters():
    ddl = DeviceDataLoader(DataLoader(_ds(10), batch_size=5), "cpu")
    ddl.batch_size = 2
    assert ddl.batch_size == 2 and len(ddl) == 5
    ddl.num_workers = 0
    assert ddl.num_workers == 0


def test_device_data_loader_new_overrides_settings_and_keeps_the_rest():
    def tfm(b):
        return b

    ddl = DeviceDataLoader(DataLoader(_ds(10), batch_size=4, shuffle=True, drop_last=True), META, tfms=[tfm])
    new = ddl.new(shuffle=False)
    assert isinstance(new, DeviceDataLoader) and new is not ddl
    assert isinstance(new.dl.sampler, SequentialSampler)
    assert new.batch_size == 4 and new.dl.drop_last is True
    assert new.dl.dataset is ddl.dl.dataset
    assert new.device == META and new.tfms == [tfm]
    assert isinstance(ddl.dl.sampler, RandomSampler)  # original untouched
    new2 = ddl.new(batch_size=3, drop_last=False)
    assert len(new2) == 4 and isinstance(new2.dl.sampler, RandomSampler)


def test_device_data_loader_new_keeps_a_custom_sampler():
    ds = _ds(10)
    ddl = DeviceDataLoader(DataLoader(ds, batch_size=2, sampler=SubsetRandomSampler([0, 1, 2, 3])), "cpu")
    new = ddl.new(batch_size=4)
    assert len(new) == 1
    assert sorted(_ids(new)) == [0, 1, 2, 3]


def test_device_data_loader_create():
    ddl = DeviceDataLoader.create(_ds(6), bs=4, device="cpu", num_workers=0)
    assert len(ddl) == 2 and ddl.batch_size == 4
    assert _ids(ddl) == list(range(6))


# ------------------------------------------------------------------------------------------ one_batch / misc


def test_one_batch_returns_a_detached_cpu_train_batch():
    data = _bunch(bs=8)
    xb, yb = data.one_batch()
    assert xb.shape == (8, 3) and yb.shape == (8,)
    assert xb.device.type == "cpu" and not xb.requires_grad


def test_one_batch_of_valid_is_its_first_batch():
    data = _bunch(bs=8)
    xb, _ = data.one_batch(DatasetType.Valid)
    assert xb[:, 0].tolist() == [1000.0 + i for i in range(8)]


def test_one_batch_restores_num_workers():
    data = _bunch(bs=8)
    data.train_dl.num_workers = 0
    data.one_batch()
    assert data.train_dl.num_workers == 0


def test_one_batch_applies_the_loader_tfms():
    def plus_half(b):
        return b[0] + 0.5, b[1]

    data = _bunch(bs=8, dl_tfms=[plus_half])
    xb, _ = data.one_batch(DatasetType.Fix)
    assert xb[:, 0].tolist() == [i + 0.5 for i in range(8)]


def test_one_batch_cpu_false_keeps_the_device():
    data = _bunch(bs=8, device=META)
    xb, yb = data.one_batch(cpu=False)
    assert xb.device == META and yb.device == META


def test_empty_val_without_valid_set():
    data = DataBunch.create(_ds(16), None, bs=4, num_workers=0, device="cpu")
    assert data.valid_dl is None
    assert data.empty_val is True


def test_empty_val_with_zero_items():
    data = DataBunch.create(_ds(16), _ds(0), bs=4, num_workers=0, device="cpu")
    assert data.empty_val is True


def test_empty_val_false_with_items():
    assert _bunch().empty_val is False


def test_loss_func_defaults_to_nll_loss_for_a_tensor_dataset():
    assert _bunch().loss_func is F.nll_loss


def test_loss_func_read_from_train_ds_y():
    class Y:
        loss_func = staticmethod(F.mse_loss)

    train = _ds(16)
    train.y = Y()
    data = DataBunch.create(train, _ds(8), bs=4, num_workers=0, device="cpu")
    assert data.loss_func is F.mse_loss


class _Ragged(Dataset):
    """Items of different lengths: torch's default collate cannot stack them (fastai-style: it has `items`)."""

    items = list(range(8))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.ones(i + 1), 0


def test_sanity_check_warns_on_uncollatable_data():
    with pytest.warns(UserWarning, match="collate"):
        data = DataBunch.create(_Ragged(), _Ragged(), bs=4, num_workers=0, device="cpu")
    assert len(data.train_dl) == 2  # only a warning: the bunch is still built


def test_creating_a_bunch_of_plain_datasets_draws_no_random_numbers():
    """As v1: only item-list datasets are sanity-checked, so a seeded script's model init and batches match v1."""
    torch.manual_seed(1)
    DataBunch.create(_ds(16), _ds(8), bs=4, num_workers=0, device="cpu")
    after_bunch = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after_bunch, torch.rand(1))


def test_sanity_check_no_check_skips_the_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataBunch.create(_Ragged(), _Ragged(), bs=4, num_workers=0, device="cpu", no_check=True)
        DataBunch.create(_ds(8), _ds(8), bs=4, num_workers=0, device="cpu")


def test_repr_mentions_datasets():
    assert "Train" in repr(_bunch()) and "Valid" in repr(_bunch())
