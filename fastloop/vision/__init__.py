"""Vision trainers on the fastloop engine: `fastloop.vision.gan` (GANs) and `fastloop.vision.cyclegan` (CycleGAN).

As in fastai v1, import them from their modules (``from fastloop.vision.gan import GANLearner``).  Plain torch
only: there is no torchvision dependency, and importing this package loads nothing heavy.
"""
