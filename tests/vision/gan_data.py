"""Synthetic data for the GAN tests: two unpaired 16x16 image domains built from scikit-learn's bundled digits,
noise-to-image pairs, and a 2-D mixture of Gaussians.  No download, CPU only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fastloop.basic_data import DataBunch


def digit_images(n: int = 256, size: int = 16) -> torch.Tensor:
    """`n` of scikit-learn's 8x8 digits, upsampled to `size` x `size`, scaled to [-1, 1]: shape (n, 1, size, size)."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * 2 - 1


class UnpairedDomains(Dataset):
    """Item i: ``((A[i], B[perm[i]]), 0.)`` -- domain A the digits, domain B other digits colour-inverted and
    rotated by 90 degrees, paired at random (a fixed permutation) as CycleGAN data is.  The target is a dummy."""

    def __init__(self, n: int = 256, size: int = 16, seed: int = 0):
        imgs = digit_images(2 * n, size)
        self.a = imgs[:n]
        self.b = -imgs[n:].rot90(1, dims=(2, 3))
        self.perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int):
        return (self.a[i], self.b[self.perm[i]]), torch.tensor(0.0)


def unpaired_data(n: int = 256, bs: int = 32, valid: bool = False) -> DataBunch:
    """A DataBunch over `UnpairedDomains` without a validation set (or with a small one if `valid`)."""
    train_dl = DataLoader(UnpairedDomains(n), batch_size=bs, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
    valid_dl = DataLoader(UnpairedDomains(bs, seed=1), batch_size=bs) if valid else None
    return DataBunch(train_dl, valid_dl, device="cpu")


class NoiseToImages(Dataset):
    """Item i: ``(noise, image)`` -- fresh noise of shape (noise_sz, 1, 1) at every read, and a real digit."""

    def __init__(self, n: int = 128, size: int = 16, noise_sz: int = 16):
        self.imgs, self.noise_sz = digit_images(n, size), noise_sz

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int):
        return torch.randn(self.noise_sz, 1, 1), self.imgs[i]


class GaussianMixture(Dataset):
    """Item i: ``(z, x)`` -- noise `z` of size `noise_sz`, and a point `x` of a 3-component 2-D Gaussian mixture
    centred on (2, 4), (4, 2) and (3, 3) (mean (3, 3))."""

    centers = torch.tensor([[2.0, 4.0], [4.0, 2.0], [3.0, 3.0]])

    def __init__(self, n: int = 512, noise_sz: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.real = self.centers[torch.randint(0, 3, (n,), generator=g)] + 0.2 * torch.randn(n, 2, generator=g)
        self.z = torch.randn(n, noise_sz, generator=g)

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, i: int):
        return self.z[i], self.real[i]


def mixture_data(n: int = 512, bs: int = 64, noise_sz: int = 4) -> DataBunch:
    "A DataBunch of `GaussianMixture` without a validation set."
    return DataBunch.create(GaussianMixture(n, noise_sz), None, bs=bs, num_workers=0, device="cpu")


class single_thread:  # noqa: N801 (used as a context manager, like torch.no_grad)
    """Run torch on one thread inside the block: these models are tiny, and on a busy 2-core machine torch's
    thread pool spends more time waiting than computing."""

    def __enter__(self) -> None:
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.n)
