"""fastai v1's bundled callbacks, one family per module, under v1's module names.

``from fastloop.callbacks import *`` gives what ``from fastai.callbacks import *`` gave (plus
`StopAfterNBatches` from ``callbacks.misc``).  `fastloop.callbacks.tensorboard` is not imported here: it
needs the optional ``tensorboard`` extra, so import it by name.  Nothing here imports matplotlib.
"""

# The engine first: ``fastloop.basic_train`` imports ``fastloop.train`` at its end, which imports the callback
# submodules one by one; loading it before any of them keeps that chain free of half-initialised modules
# when a script's first import is a callback module.
from .. import basic_train  # noqa: F401  (isort: skip)
from . import (
    csv_logger,
    flat_cos_anneal,
    fp16,
    general_sched,
    hooks,
    loss_metrics,
    lr_finder,
    misc,
    mixup,
    one_cycle,
    rnn,
    tracker,
)
from .csv_logger import *  # noqa: F403
from .flat_cos_anneal import *  # noqa: F403
from .fp16 import *  # noqa: F403
from .general_sched import *  # noqa: F403
from .hooks import *  # noqa: F403
from .loss_metrics import *  # noqa: F403
from .lr_finder import *  # noqa: F403
from .misc import *  # noqa: F403
from .mixup import *  # noqa: F403
from .one_cycle import *  # noqa: F403
from .rnn import *  # noqa: F403
from .tracker import *  # noqa: F403

# ``callbacks.mixup`` is the module, as in v1 (whose `mixup` function lived in ``fastai.train``): the star import
# above bound the function `mixup` over it.  ``fastloop.train.mixup`` / ``Learner.mixup`` is the function.
import importlib as _importlib  # noqa: E402  (isort: skip)

mixup = _importlib.import_module(f"{__name__}.mixup")  # noqa: F811

_modules = [lr_finder, one_cycle, fp16, general_sched, hooks, mixup, rnn, tracker, csv_logger, loss_metrics,
            flat_cos_anneal, misc]
_module_names = {m.__name__.rsplit(".", 1)[-1] for m in _modules}
__all__ = [name for m in _modules for name in m.__all__ if name not in _module_names]
