"""``from fastloop.course.nb_06 import *`` gives what ``from exp.nb_06 import *`` gave
(notebook 06_cuda_cnn_hooks_init).

New here: device and batch-transform callbacks, CNN builders, ``get_runner``/``get_learn_run``, hooks.
"""

# ruff: noqa: F401, F403

from . import nb_05b as _prev
from .nb_05b import *
from .stage06 import (
    BatchTransformXCallback,
    CudaCallback,
    GeneralRelu,
    Hook,
    Hooks,
    Lambda,
    ListContainer,
    append_stats,
    children,
    conv2d,
    flatten,
    get_cnn_layers,
    get_cnn_model,
    get_learn_run,
    get_runner,
    init_cnn,
    init_cnn_,
    mnist_resize,
    view_tfm,
)

__all__ = list(
    dict.fromkeys(
        [
            *_prev.__all__,
            "CudaCallback",
            "BatchTransformXCallback",
            "view_tfm",
            "mnist_resize",
            "flatten",
            "Lambda",
            "conv2d",
            "GeneralRelu",
            "get_cnn_layers",
            "get_cnn_model",
            "init_cnn",
            "init_cnn_",
            "get_runner",
            "get_learn_run",
            "children",
            "ListContainer",
            "Hook",
            "Hooks",
            "append_stats",
        ]
    )
)
