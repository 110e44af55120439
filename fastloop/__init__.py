"""fastloop: fastai v1's callback engine and training loop, on today's PyTorch.

Import what you need from the modules named as in fastai v1 (``fastloop.basic_train``,
``fastloop.callback``, ``fastloop.metrics``...); importing the package itself loads nothing heavy.
"""

__version__ = "0.1.0"
