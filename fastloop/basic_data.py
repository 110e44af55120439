"""`DataBunch`: the training, validation (and optional test) loaders a `Learner` reads, as in fastai v1.

Differences from fastai v1, chosen for plain PyTorch datasets (there are no ItemLists here):

* fastloop does not patch ``torch.utils.data.DataLoader``.  Instead `DeviceDataLoader` looks unknown
  attributes up on the loader, then on its dataset, so ``learn.data.c`` or ``train_dl.y`` still reach the
  dataset; and `DeviceDataLoader.new` rebuilds a loader from the loader's own attributes.
* ``DataBunch.create(train_ds, valid_ds, test_ds)`` builds ``fix_dl`` from the training set (unshuffled,
  no dropped batch) and passes the test set as ``test_dl``.
* ``one_batch(denorm=...)`` is accepted and ignored: fastloop has no normalisation transform to undo.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.dataloader import default_collate

from .core import defaults, ifnone, listify
from .torch_core import to_detach, to_device

__all__ = ["DatasetType", "DataBunch", "DeviceDataLoader", "data_collate"]


class DatasetType(IntEnum):
    "Which dataset a loader serves."
    Train = 1
    Valid = 2
    Test = 3
    Single = 4
    Fix = 5


def data_collate(batch: Sequence[Any]) -> Any:
    "The default collate function: torch's ``default_collate``."
    return default_collate(batch)


class DeviceDataLoader:
    """Wraps a loader: every batch is moved to `device` (non-blocking), then passed through each of `tfms`.

    ``len`` is the wrapped loader's.  Unknown attributes are read from the loader, then from its dataset.
    The wrapped loader's ``collate_fn`` is replaced by `collate_fn` (fastai v1 does the same).
    """

    def __init__(self, dl: Any, device: torch.device | str, tfms: Any = None,
                 collate_fn: Callable | None = data_collate):
        self.dl, self.device, self.tfms = dl, torch.device(device), listify(tfms)
        self.collate_fn = collate_fn
        if collate_fn is not None and isinstance(dl, DataLoader):
            dl.collate_fn = collate_fn

    def __len__(self) -> int:
        return len(self.dl)

    def __getattr__(self, k: str) -> Any:
        if k in ("dl", "__setstate__") or (k.startswith("__") and k.endswith("__")):
            raise AttributeError(k)
        try:
            return getattr(self.dl, k)
        except AttributeError:
            dataset = getattr(self.dl, "dataset", None)
            if dataset is None:
                raise
            return getattr(dataset, k)

    def __setstate__(self, data: Any) -> None:
        self.__dict__.update(data)

    @property
    def batch_size(self) -> int:
        "The wrapped loader's batch size."
        return self.dl.batch_size

    @batch_size.setter
    def batch_size(self, v: int) -> None:
        self.dl = self.new(batch_size=v).dl

    @property
    def num_workers(self) -> int:
        "The wrapped loader's number of worker processes."
        return self.dl.num_workers

    @num_workers.setter
    def num_workers(self, v: int) -> None:
        self.dl.num_workers = v

    def add_tfm(self, tfm: Callable) -> None:
        "Add `tfm` to the batch transforms."
        self.tfms.append(tfm)

    def remove_tfm(self, tfm: Callable) -> None:
        "Remove `tfm` from the batch transforms (if present)."
        if tfm in self.tfms:
            self.tfms.remove(tfm)

    def new(self, **kwargs: Any) -> DeviceDataLoader:
        "A copy whose torch loader is rebuilt with `kwargs` overriding the current settings."
        dl = self.dl
        if not isinstance(dl, DataLoader):
            raise TypeError(f"new() needs a torch DataLoader, not {type(dl).__name__}")
        settings: dict[str, Any] = dict(
            num_workers=dl.num_workers, pin_memory=dl.pin_memory, timeout=dl.timeout,
            worker_init_fn=dl.worker_init_fn, collate_fn=dl.collate_fn, generator=dl.generator,
            persistent_workers=dl.persistent_workers, multiprocessing_context=dl.multiprocessing_context,
            pin_memory_device=dl.pin_memory_device, prefetch_factor=dl.prefetch_factor)
        custom_batches = type(dl.batch_sampler) is not BatchSampler and dl.batch_sampler is not None
        custom_sampler = type(dl.sampler) not in (RandomSampler, SequentialSampler)
        if custom_batches and not {"batch_size", "shuffle", "drop_last", "sampler", "batch_sampler"} & set(kwargs):
            settings["batch_sampler"] = dl.batch_sampler  # a user's batch sampler is kept as it is
        else:
            settings.update(batch_size=dl.batch_size, drop_last=dl.drop_last)
            if custom_sampler and "shuffle" not in kwargs:
                settings["sampler"] = dl.sampler  # a user's sampler is kept unless shuffling is asked for
            else:
                settings["shuffle"] = isinstance(dl.sampler, RandomSampler)
        settings.update(kwargs)
        if not settings["num_workers"]:  # torch refuses these options without worker processes
            settings.pop("prefetch_factor")
            settings["persistent_workers"] = False
        return DeviceDataLoader(DataLoader(dl.dataset, **settings), self.device, self.tfms, self.collate_fn)

    def proc_batch(self, b: Any) -> Any:
        "Move `b` to the device and apply the transforms."
        b = to_device(b, self.device)
        for f in self.tfms:
            b = f(b)
        return b

    def __iter__(self) -> Iterator[Any]:
        "Yield each batch on the device, transformed."
        for b in self.dl:
            yield self.proc_batch(b)

    def skip_batches(self, n: int, then: Callable[[], None] | None = None) -> DeviceDataLoader:
        """A one-pass copy of this loader that skips its first `n` batches at the index level (resuming a fit).

        The copy's batch sampler iterates this loader's own batch sampler -- so a shuffle is drawn exactly as a
        normal pass draws it -- drops the first `n` index lists without loading them, calls `then` (the resume
        puts the RNG states back there), and yields the rest.  Needs a torch ``DataLoader`` with a batch sampler.
        """
        dl = self.dl
        if not isinstance(dl, DataLoader) or dl.batch_sampler is None:
            raise TypeError(f"skip_batches needs a torch DataLoader with a batch sampler, not {type(dl).__name__}")
        settings: dict[str, Any] = dict(
            num_workers=dl.num_workers, pin_memory=dl.pin_memory, timeout=dl.timeout,
            worker_init_fn=dl.worker_init_fn, collate_fn=dl.collate_fn, generator=dl.generator,
            multiprocessing_context=dl.multiprocessing_context, pin_memory_device=dl.pin_memory_device)
        if dl.num_workers:
            settings.update(prefetch_factor=dl.prefetch_factor, persistent_workers=False)
        skipped = DataLoader(dl.dataset, batch_sampler=_SkipBatches(dl.batch_sampler, n, then), **settings)
        return DeviceDataLoader(skipped, self.device, self.tfms, self.collate_fn)

    @classmethod
    def create(cls, dataset: Dataset, bs: int = 64, shuffle: bool = False, device: torch.device | None = None,
               tfms: Any = None, num_workers: int | None = None, collate_fn: Callable = data_collate,
               **kwargs: Any) -> DeviceDataLoader:
        "A `DeviceDataLoader` over a new ``DataLoader(dataset, ...)``."
        dl = DataLoader(dataset, batch_size=bs, shuffle=shuffle, num_workers=ifnone(num_workers, defaults.cpus),
                        **kwargs)
        return cls(dl, device=ifnone(device, defaults.device), tfms=tfms, collate_fn=collate_fn)


class _SkipBatches:
    "A batch sampler that drops the first `n` batches of `batch_sampler` (indices only), calls `then`, yields the rest."

    def __init__(self, batch_sampler: Any, n: int, then: Callable[[], None] | None = None):
        self.batch_sampler, self.n, self.then = batch_sampler, n, then

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.n)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.batch_sampler)
        for _ in range(self.n):
            if next(it, None) is None:
                break
        if self.then is not None:
            then, self.then = self.then, None
            then()
        yield from it


class DataBunch:
    """The loaders of a `Learner`: ``train_dl``, ``valid_dl``, ``fix_dl``, ``single_dl`` and ``test_dl``.

    Each loader is wrapped in a `DeviceDataLoader` on ``device`` (``defaults.device`` if None) with the
    ``dl_tfms`` batch transforms.  ``fix_dl`` is the training set unshuffled; ``single_dl`` the validation
    set one item at a time.  A check of the first training batch warns if the data cannot be collated.
    """

    def __init__(self, train_dl: Any, valid_dl: Any, fix_dl: Any = None, test_dl: Any = None,
                 device: torch.device | str | None = None, dl_tfms: Any = None, path: str | Path = ".",
                 collate_fn: Callable = data_collate, no_check: bool = False):
        self.dl_tfms = listify(dl_tfms)
        self.device = defaults.device if device is None else torch.device(device)
        self.collate_fn = collate_fn

        def wrap(dl: Any) -> DeviceDataLoader | None:
            return None if dl is None else DeviceDataLoader(dl, self.device, self.dl_tfms, collate_fn)

        self.train_dl, self.valid_dl, self.fix_dl, self.test_dl = map(wrap, (train_dl, valid_dl, fix_dl, test_dl))
        if self.fix_dl is None:
            try:
                self.fix_dl = self.train_dl.new(shuffle=False, drop_last=False)
            except TypeError:  # not a torch DataLoader: use it as it is
                self.fix_dl = self.train_dl
        valid_ds = getattr(valid_dl, "dataset", None)
        self.single_dl = wrap(DataLoader(valid_ds, batch_size=1, num_workers=0)) if valid_ds is not None else None
        self.path = Path(path)
        if not no_check:
            self.sanity_check()

    @classmethod
    def create(cls, train_ds: Dataset, valid_ds: Dataset | None, test_ds: Dataset | None = None,
               path: str | Path = ".", bs: int = 64, val_bs: int | None = None, num_workers: int | None = None,
               dl_tfms: Any = None, device: torch.device | str | None = None, collate_fn: Callable = data_collate,
               no_check: bool = False, **dl_kwargs: Any) -> DataBunch:
        """Loaders over the datasets: training shuffled with ``drop_last=True``, the others in order.

        ``num_workers`` defaults to ``defaults.cpus`` (fastai v1's default); pass 0 for small in-memory data.
        """
        val_bs = ifnone(val_bs, bs)
        nw = ifnone(num_workers, defaults.cpus)

        def loader(ds: Dataset | None, b: int, shuffle: bool) -> DataLoader | None:
            if ds is None:
                return None
            return DataLoader(ds, batch_size=b, shuffle=shuffle, drop_last=shuffle, num_workers=nw, **dl_kwargs)

        return cls(loader(train_ds, bs, True), loader(valid_ds, val_bs, False),
                   test_dl=loader(test_ds, val_bs, False), path=path, device=device, dl_tfms=dl_tfms,
                   collate_fn=collate_fn, no_check=no_check)

    def __repr__(self) -> str:
        name = self.__class__.__name__
        return f"{name};\n\nTrain: {self.train_ds};\n\nValid: {self.valid_ds};\n\nTest: {self.test_ds}"

    def dl(self, ds_type: DatasetType = DatasetType.Valid) -> DeviceDataLoader | None:
        "The loader of `ds_type`."
        return {DatasetType.Train: self.train_dl, DatasetType.Valid: self.valid_dl, DatasetType.Test: self.test_dl,
                DatasetType.Single: self.single_dl, DatasetType.Fix: self.fix_dl}[DatasetType(ds_type)]

    @property
    def dls(self) -> list[DeviceDataLoader]:
        "The loaders that exist, in the order train, valid, fix, single, test."
        return [o for o in (self.train_dl, self.valid_dl, self.fix_dl, self.single_dl, self.test_dl) if o is not None]

    def add_tfm(self, tfm: Callable) -> None:
        "Add a batch transform to every loader."
        for dl in self.dls:
            dl.add_tfm(tfm)

    def remove_tfm(self, tfm: Callable) -> None:
        "Remove a batch transform from every loader."
        for dl in self.dls:
            dl.remove_tfm(tfm)

    def one_batch(self, ds_type: DatasetType = DatasetType.Train, detach: bool = True, denorm: bool = True,
                  cpu: bool = True) -> tuple[Any, Any]:
        "One batch of `ds_type` (loaded in this process), detached and on the CPU by default."
        dl = self.dl(ds_type)
        workers = getattr(dl, "num_workers", 0)
        if isinstance(getattr(dl, "dl", None), DataLoader):
            dl.num_workers = 0
        try:
            x, y = next(iter(dl))
        finally:
            if isinstance(getattr(dl, "dl", None), DataLoader):
                dl.num_workers = workers
        if detach:
            x, y = to_detach(x, cpu=cpu), to_detach(y, cpu=cpu)
        return x, y

    @staticmethod
    def _grab_dataset(dl: Any) -> Any:
        ds = getattr(dl, "dl", dl)
        ds = getattr(ds, "dataset", None)
        while hasattr(ds, "dataset"):
            ds = ds.dataset
        return ds

    @property
    def train_ds(self) -> Any:
        "The innermost training dataset."
        return self._grab_dataset(self.train_dl)

    @property
    def valid_ds(self) -> Any:
        "The innermost validation dataset."
        return self._grab_dataset(self.valid_dl)

    @property
    def single_ds(self) -> Any:
        "The innermost dataset of `single_dl`."
        return self._grab_dataset(self.single_dl)

    @property
    def fix_ds(self) -> Any:
        "The innermost dataset of `fix_dl`."
        return self._grab_dataset(self.fix_dl)

    @property
    def test_ds(self) -> Any:
        "The innermost test dataset (None without a test set)."
        return self._grab_dataset(self.test_dl) if self.test_dl is not None else None

    @property
    def loss_func(self) -> Callable:
        "The training set's ``y.loss_func`` if it has one, else ``F.nll_loss`` (fastai v1's rule)."
        y = getattr(self.train_ds, "y", None)
        return getattr(y, "loss_func", F.nll_loss)

    @property
    def empty_val(self) -> bool:
        "True when there is no validation loader or it is empty."
        if self.valid_dl is None:
            return True
        items = getattr(self.valid_ds, "items", None)
        if items is not None and len(items) == 0:
            return True
        return len(self.valid_dl) == 0

    @property
    def is_empty(self) -> bool:
        """True when the training, validation and test sets all have no items (a learner made by
        `load_learner`), as fastai v1's ``DataBunch.is_empty``."""
        for dl in (self.train_dl, self.valid_dl, self.test_dl):
            if dl is None:
                continue
            ds = self._grab_dataset(dl)
            items = getattr(ds, "items", None)
            n = len(items) if items is not None else (len(ds) if hasattr(ds, "__len__") else 1)
            if n != 0:
                return False
        return True

    @property
    def batch_size(self) -> int:
        "The training batch size."
        return self.train_dl.batch_size

    @property
    def c(self) -> Any:
        "Number of classes, read from the training set (None if it does not say)."
        return getattr(self.train_ds, "c", None)

    def sanity_check(self) -> None:
        """Check that the first training batch can be built; warn (as fastai v1) if not.

        As in v1, only datasets with ``items`` (fastai-style item lists) are checked: drawing a batch from a
        shuffled loader uses the random generator, which would change a seeded script's model and batches.
        """
        dl = getattr(self.train_dl, "dl", None)
        if not isinstance(dl, DataLoader) or dl.batch_sampler is None or not hasattr(self.train_ds, "items"):
            return
        try:
            idx = next(iter(dl.batch_sampler))
        except StopIteration:
            return
        try:
            samples = [dl.dataset[i] for i in idx]
            self.collate_fn(samples)
        except Exception as e:
            warnings.warn(f"It's not possible to collate samples of your dataset together in a batch: {e!r}",
                          stacklevel=2)
