"""Data loading: real MNIST and CIFAR-10 from the shared copy, a generated CIFAR-100,
clear errors when data are missing, per-channel normalisation, and augmentation."""

import hashlib
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pcsim.config.schema import DataConfig, ExperimentConfig
from pcsim.augment import augment_batch, augment_generator, augment_train_batch
from pcsim.data import DATA_ENV, DataError, Dataset, dataset_info, load_dataset, resolve_data_root
from tests.conftest import _shared_datasets, assert_close

# Test-set label histogram of MNIST, from shared/datasets/README.md.
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_loads_offline_from_the_shared_copy(mnist_root):
    """torchvision verifies the original .gz files and extracts them without a network;
    the test labels have the published histogram and pixels are standardised."""
    data = load_dataset("mnist", mnist_root, download=True)
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)
    assert torch.bincount(data.test_y, minlength=10).tolist() == MNIST_TEST_HISTOGRAM
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-4
    fashion = load_dataset("fashion_mnist", mnist_root, download=True, limit_train=100)
    assert fashion.train_x.shape == (100, 784)
    assert torch.bincount(fashion.test_y, minlength=10).tolist() == [1000] * 10


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "empty", download=False)
    message = str(info.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "--data-root" in message and DATA_ENV in message and "download" in message


def test_corrupt_data_gets_the_same_clear_error(tmp_path):
    """A truncated IDX file (what an interrupted extraction leaves) is reported, not a
    traceback from inside torchvision."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="could not load the data set"):
        load_dataset("mnist", tmp_path, download=False)


def test_data_root_precedence(monkeypatch):
    """Flag beats config beats $PCSIM_DATA beats the default."""
    monkeypatch.setenv(DATA_ENV, "/env/root")
    assert str(resolve_data_root("cfg", "flag")) == "flag"
    assert str(resolve_data_root("cfg", None)) == "cfg"
    assert str(resolve_data_root(None, None)) == "/env/root"
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_root(None, None).name == "data"


# --- CIFAR ----------------------------------------------------------------------------

# First ten training and test labels of CIFAR-10, from shared/datasets/README.md.
CIFAR10_FIRST_TRAIN = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
CIFAR10_FIRST_TEST = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
# Published per-channel mean and std of the CIFAR-10 training pixels (in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def cifar10_root() -> Path:
    """The shared data root itself: CIFAR-10 is read in place (read-only is fine), from
    ``<root>/CIFAR10/cifar-10-batches-py``. Missing data fails in CI, skips elsewhere
    (the convention of ``mnist_root``)."""
    source = _shared_datasets()
    if not (source / "CIFAR10" / "cifar-10-batches-py").is_dir():
        message = (f"shared CIFAR-10 not found at {source}; set PCSIM_TEST_DATASETS to the "
                   "folder that holds CIFAR10/cifar-10-batches-py")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return source


@pytest.fixture(scope="module")
def cifar10(cifar10_root):
    return load_dataset("cifar10", cifar10_root, download=True)


def test_cifar10_loads_in_place_from_the_shared_copy(cifar10, cifar10_root):
    """Read-only shared copy, torchvision's md5 checks, the published labels, flat
    channel-major rows, and the image shape kept on the data set."""
    data = cifar10
    assert data.train_x.shape == (50000, 3072) and data.test_x.shape == (10000, 3072)
    assert data.train_x.dtype == torch.float32
    assert data.image_shape == (3, 32, 32) and dataset_info("cifar10").image_shape == (3, 32, 32)
    assert data.n_classes == 10 and dataset_info("cifar10").n_features == 3072
    assert torch.bincount(data.train_y, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(data.test_y, minlength=10).tolist() == [1000] * 10
    assert data.train_y[:10].tolist() == CIFAR10_FIRST_TRAIN
    assert data.test_y[:10].tolist() == CIFAR10_FIRST_TEST
    assert_close(torch.tensor(data.mean), torch.tensor(CIFAR10_MEAN), atol=5e-5)
    assert_close(torch.tensor(data.std), torch.tensor(CIFAR10_STD), atol=5e-5)
    # the flat row is torchvision's (H, W, C) image transposed to (C, H, W)
    import torchvision
    raw = torchvision.datasets.CIFAR10(str(cifar10_root / "CIFAR10"), train=False).data[7]
    mean, std = torch.tensor(data.mean).view(3, 1, 1), torch.tensor(data.std).view(3, 1, 1)
    pixels = data.test_x[7].view(3, 32, 32) * std + mean
    assert_close(pixels * 255, torch.from_numpy(raw).permute(2, 0, 1).double(), atol=1e-3)


def test_cifar10_channels_are_standardised(cifar10):
    """Each channel of the normalised training set has mean 0 and std 1."""
    x = cifar10.train_x.view(50000, 3, 1024)
    for c in range(3):  # full float32 reductions of each channel (a float64 copy: +2 s)
        assert abs(float(x[:, c].mean())) < 1e-5 and abs(float(x[:, c].std()) - 1) < 1e-5
    test = cifar10.test_x.view(10000, 3, 1024)  # the test set by the training statistics
    assert all(abs(float(test[:, c].mean())) < 0.05 for c in range(3))


def test_cifar10_missing_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path / "empty", download=False)
    message = str(info.value)
    assert str(tmp_path / "empty" / "CIFAR10" / "cifar-10-batches-py") in message
    assert "--data-root" in message and DATA_ENV in message and "download" in message
    assert "data_batch_1" in message


def test_one_channel_normalisation_is_bitwise_the_global_formula(mnist_root):
    """For MNIST the per-channel statistics are bitwise the global ones of pcsim before
    per-channel normalisation (reference runs compare weights bitwise)."""
    import torchvision
    data = load_dataset("mnist", mnist_root, download=True)
    raw = torchvision.datasets.MNIST(str(mnist_root), train=True)
    raw_test = torchvision.datasets.MNIST(str(mnist_root), train=False)
    # the formula as it was: pixels / 255, standardised by the global mean and std
    train_x = raw.data.reshape(60000, -1).to(torch.float32) / 255.0
    test_x = raw_test.data.reshape(10000, -1).to(torch.float32) / 255.0
    mean, std = train_x.mean(), train_x.std()
    assert torch.equal(data.train_x, (train_x - mean) / std)
    assert torch.equal(data.test_x, (test_x - mean) / std)
    assert data.mean == (float(mean),) and data.std == (float(std),)
    plain = load_dataset("mnist", mnist_root, download=True, normalize=False, limit_train=10)
    assert torch.equal(plain.train_x, train_x[:10]) and plain.mean is None


# CIFAR-100 has no offline copy; the test writes a miniature one in torchvision's format
# (Python pickles of a dict with 'data' (N, 3072) uint8 rows, R plane then G then B, and
# 'fine_labels'; 'meta' holds 'fine_label_names'). torchvision checks each file against
# the md5 in the class attributes CIFAR100.train_list / test_list / meta. Of the ways to
# make a generated file pass, the cleanest is a subclass that carries the md5s of the
# generated files and replaces torchvision.datasets.CIFAR100 for the test: pcsim's own
# loader and torchvision's reader and integrity check then run unchanged, nothing private
# is patched, and no 150 MB full-size file is written. pcsim's expected split sizes (a
# guard against truncated downloads) are set to the miniature's for the test.
FIXTURE_TRAIN, FIXTURE_TEST = 300, 200  # 3 and 2 images per class


def _write_cifar100(folder: Path, seed: int = 0) -> dict:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    made = {}
    for split, n in (("train", FIXTURE_TRAIN), ("test", FIXTURE_TEST)):
        labels = rng.permutation(np.arange(n) % 100).tolist()
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"filenames": [f"img_{i}.png" for i in range(n)], "batch_label":
                         split, "fine_labels": labels, "coarse_labels": [k // 5 for k in labels],
                         "data": rows}, f, protocol=2)
        made[split] = (rows, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{k}" for k in range(100)],
                     "coarse_label_names": [f"super_{k}" for k in range(20)]}, f, protocol=2)
    return made


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar100_fixture(tmp_path, monkeypatch):
    import torchvision
    import pcsim.data as pdata
    folder = tmp_path / "CIFAR100" / "cifar-100-python"
    made = _write_cifar100(folder)

    class MiniCIFAR100(torchvision.datasets.CIFAR100):
        train_list = [["train", _md5(folder / "train")]]
        test_list = [["test", _md5(folder / "test")]]
        meta = {**torchvision.datasets.CIFAR100.meta, "md5": _md5(folder / "meta")}

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", MiniCIFAR100)
    monkeypatch.setitem(pdata._DATASETS, "cifar100", pdata._DATASETS["cifar100"]._replace(
        n_train=FIXTURE_TRAIN, n_test=FIXTURE_TEST))
    return tmp_path, made


def test_cifar100_fixture_loads_with_100_classes(cifar100_fixture):
    root, made = cifar100_fixture
    data = load_dataset("cifar100", root, download=False)
    assert data.n_classes == 100 and dataset_info("cifar100").n_classes == 100
    assert data.image_shape == (3, 32, 32)
    assert data.train_x.shape == (FIXTURE_TRAIN, 3072) and data.test_x.shape == (FIXTURE_TEST, 3072)
    assert torch.bincount(data.train_y, minlength=100).tolist() == [3] * 100
    assert data.test_y.tolist() == made["test"][1]
    assert data.one_hot(data.train_y, torch.float32).shape == (FIXTURE_TRAIN, 100)
    x = data.train_x.double().view(FIXTURE_TRAIN, 3, 1024)
    assert_close(x.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5)
    assert_close(x.std(dim=(0, 2)), torch.ones(3), atol=1e-5)
    # the file's rows are already channel-major: unnormalised flat rows equal them
    plain = load_dataset("cifar100", root, download=True, normalize=False)
    assert torch.equal(plain.train_x * 255, torch.from_numpy(made["train"][0]).float())
    rows = made["train"][0].astype(np.float64).reshape(FIXTURE_TRAIN, 3, 1024) / 255
    assert_close(torch.tensor(data.mean), rows.mean(axis=(0, 2)), atol=1e-6)
    assert_close(torch.tensor(data.std), rows.std(axis=(0, 2), ddof=1), atol=1e-6)


def test_cifar100_corrupt_file_is_a_data_error(cifar100_fixture):
    root, _ = cifar100_fixture
    path = root / "CIFAR100" / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:1000])  # truncated: the md5 no longer matches
    with pytest.raises(DataError, match=r"the file present is corrupt \(md5 mismatch\)") as info:
        load_dataset("cifar100", root, download=False)
    assert str(path) in str(info.value) and "delete it or copy it again" in str(info.value)


# --- augmentation ---------------------------------------------------------------------

SHAPE = (3, 5, 7)  # C, H, W: non-square, so rows and columns cannot be mixed up


def _batch(b=6, shape=SHAPE, dtype=torch.float64):
    return torch.randn(b, math.prod(shape), dtype=dtype)


def test_augment_off_is_the_identity():
    x = _batch()
    assert augment_batch(x, SHAPE) is x
    assert augment_batch(x, SHAPE, crop_padding=0, hflip=False,
                         generator=augment_generator(0, 1, 0)) is x
    config = ExperimentConfig(network={"layers": [{"size": 105}, {"size": 2}]})
    data = Dataset("toy", x, torch.zeros(6).long(), x, torch.zeros(6).long(), 2, None, SHAPE)
    assert augment_train_batch(config, data, x, 1, 0) is x


def test_flip_twice_is_the_identity_and_a_flip_mirrors_columns():
    x = _batch(b=64)
    once = augment_batch(x, SHAPE, hflip=True, generator=augment_generator(3, 2, 5))
    twice = augment_batch(once, SHAPE, hflip=True, generator=augment_generator(3, 2, 5))
    assert torch.equal(twice, x)
    flips = torch.randint(0, 2, (64,), generator=augment_generator(3, 2, 5)).bool()
    assert 10 < int(flips.sum()) < 54  # both kinds drawn
    images, out = x.view(64, *SHAPE), once.view(64, *SHAPE)
    assert torch.equal(out[flips], images[flips].flip(-1))
    assert torch.equal(out[~flips], images[~flips])


def test_crop_shifts_content_by_the_drawn_offsets():
    """Output pixel (i, j) is input pixel (i + dy - p, j + dx - p), and the fill where
    that falls outside the image; checked against a hand-built slice per sample."""
    p, b = 2, 40
    c, h, w = SHAPE
    x = _batch(b=b)
    fill = torch.tensor([-1.5, 0.25, 9.0], dtype=torch.float64)
    out = augment_batch(x, SHAPE, crop_padding=p, generator=augment_generator(7, 1, 3),
                        fill=fill).view(b, c, h, w)
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=augment_generator(7, 1, 3))
    assert len({tuple(o) for o in offsets.tolist()}) > 5
    images = x.view(b, c, h, w)
    for k in range(b):
        dy, dx = offsets[k].tolist()
        padded = fill.view(c, 1, 1).repeat(1, h + 2 * p, w + 2 * p)
        padded[:, p:p + h, p:p + w] = images[k]
        assert torch.equal(out[k], padded[:, dy:dy + h, dx:dx + w]), (k, dy, dx)
    # the same, as a shift: content moves by (p - dy, p - dx); what is uncovered is fill
    for k in range(b):
        sy, sx = (offsets[k] - p).tolist()  # output (i, j) <- input (i + sy, j + sx)
        kept = out[k, :, max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)]
        assert torch.equal(kept, images[k, :, max(0, sy):h - max(0, -sy),
                                         max(0, sx):w - max(0, -sx)])
        mask = torch.ones(h, w, dtype=torch.bool)
        mask[max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)] = False
        assert torch.equal(out[k][:, mask], fill.view(c, 1).expand(c, int(mask.sum())))


def test_crop_then_flip_is_torchvision_order():
    p, b = 1, 16
    x = _batch(b=b)
    out = augment_batch(x, SHAPE, crop_padding=p, hflip=True,
                        generator=augment_generator(1, 1, 1)).view(b, *SHAPE)
    g = augment_generator(1, 1, 1)
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=g)
    flips = torch.randint(0, 2, (b,), generator=g).bool()
    cropped = augment_batch(x, SHAPE, crop_padding=p,
                            generator=augment_generator(1, 1, 1)).view(b, *SHAPE)
    assert torch.equal(out[flips], cropped[flips].flip(-1))
    assert torch.equal(out[~flips], cropped[~flips]) and offsets.shape == (b, 2)


def test_augmentation_is_a_function_of_seed_epoch_and_batch():
    x = _batch(b=32, dtype=torch.float32)
    def run(seed, epoch, batch):
        return augment_batch(x, SHAPE, crop_padding=2, hflip=True,
                             generator=augment_generator(seed, epoch, batch))
    assert torch.equal(run(0, 1, 4), run(0, 1, 4))
    for other in ((1, 1, 4), (0, 2, 4), (0, 1, 5)):
        assert not torch.equal(run(0, 1, 4), run(*other)), other
    assert run(0, 1, 4).dtype == torch.float32 and run(0, 1, 4).shape == x.shape


def test_shards_get_the_augmentation_of_their_global_positions():
    """A data-parallel shard (idx[rank::world]) gets exactly its rows of the single-process
    augmentation of the whole batch."""
    config = ExperimentConfig(network={"layers": [{"size": 105}, {"size": 2}]},
                              data={"augment": {"crop_padding": 2, "hflip": True}})
    x = _batch(b=11)
    data = Dataset("toy", x, torch.zeros(11).long(), x, torch.zeros(11).long(), 2, None, SHAPE,
                   (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    whole = augment_train_batch(config, data, x, 3, 2)
    assert not torch.equal(whole, x)
    for rank in range(3):
        shard = lambda idx, r=rank: idx[r::3]  # noqa: E731
        part = augment_train_batch(config, data, shard(x), 3, 2, 11, shard)
        assert torch.equal(part, whole[rank::3])
    # the padding is black: 0 in pixel units, -mean/std = -2 after standardisation
    assert (whole == -2).any()


def test_augment_config_validation():
    assert DataConfig().augment.crop_padding == 0 and DataConfig().augment.hflip is False
    cfg = DataConfig(dataset="cifar10", augment={"crop_padding": 4, "hflip": True})
    assert cfg.augment.crop_padding == 4 and cfg.augment.hflip
    for bad, what in (({"crop_padding": -1}, "greater than or equal to 0"),
                      ({"crop_padding": 1.5}, "integer"), ({"flip": True}, "Extra inputs"),
                      ({"hflip": "sideways"}, "boolean")):
        with pytest.raises(ValidationError, match=what):
            DataConfig(augment=bad)
    with pytest.raises(ValidationError, match="cifar10"):
        DataConfig(dataset="cifar")


def test_a_truncated_file_is_reported_as_corrupt_not_as_a_download_error(mnist_root, tmp_path):
    """A data root whose train images file was cut short: the error says the file
    present is corrupt (md5 mismatch), names it and says to delete or copy it again --
    not "Error downloading"; a missing root that could not be loaded is not left behind."""
    import shutil
    from pcsim.data import DataError, load_dataset
    src = mnist_root / "MNIST" / "raw"
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.glob("*.gz"):
        shutil.copy(f, raw / f.name)
    target = raw / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100_000])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "root")
    message = str(info.value)
    assert "the file present is corrupt (md5 mismatch)" in message
    assert str(target) in message and "delete it or copy it again" in message
    assert "Error downloading" not in message
    missing = tmp_path / "nowhere" / "data"
    with pytest.raises(DataError):
        load_dataset("cifar10", missing, download=True)
    assert not (tmp_path / "nowhere").exists()


def test_runs_started_together_on_a_fresh_root_all_load(tmp_path):
    """A loader waits while another process holds the data folder's lock; and six
    processes load MNIST at once from a root that holds only the original .gz files
    (nothing extracted yet): the first to take the lock extracts, the others wait and
    find the files, so all six load the 10,000 test images (without the lock, runs read
    each other's half-extracted files and failed)."""
    import shutil
    import subprocess
    import sys

    source = _shared_datasets() / "MNIST" / "raw"
    if not source.is_dir():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"shared data sets not found at {source.parent.parent}")
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in source.glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
        (raw / gz.name).chmod(0o644)
    code = ("import sys; from pcsim.data import load_dataset; "
            "d = load_dataset('mnist', sys.argv[1], download=True, normalize=False); "
            "print(d.test_x.shape[0], int(d.test_y.sum()))")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def start():
        return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "root")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    import fcntl
    import time
    # while another run holds the data folder (here: this test), a loader waits for it
    with open(tmp_path / "root" / ".pcsim-data.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = start()
        time.sleep(8)
        assert waiting.poll() is None, waiting.communicate()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-1500:]
    for extracted in raw.glob("*-ubyte"):
        extracted.unlink()  # fresh again for the crowd
    procs = [start() for _ in range(6)]
    answers = [p.communicate(timeout=300) for p in procs]
    expected = f"10000 {sum(k * n for k, n in enumerate(MNIST_TEST_HISTOGRAM))}"
    for (out, err), p in zip(answers, procs):
        assert p.returncode == 0 and out.strip() == expected, err[-1500:]
