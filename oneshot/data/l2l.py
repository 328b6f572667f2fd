"""learn2learn interoperability, both ways, with learn2learn imported only when called.

Out: `to_metadataset(split)` and `to_taskdataset(split, n_way, n_shot, n_query)` give
learn2learn users our data and splits (NWays, KShots, LoadData, RemapLabels).
In: `episodes_from_tasks(taskset, n_tasks, n_shot)` turns tasks of any learn2learn
`TaskDataset` into a `Split` plus episodes `[E, N, K+Q]`, so `oneshot.evaluate.evaluate`
scores them with the same code as native episodes; `load_l2l_split(name, split, root)`
decodes learn2learn's own dataset files once (`--dataset l2l:<name>`). Nothing downloads.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .cache import cache_key, cached_arrays, fingerprint
from .split import Split
from .episodes import check_request
from ..errors import ConfigError, DataError, OneshotError

INSTALL_HINT = "pip install 'oneshot[l2l]' (or `make install` in a checkout)"
NAMES = ("omniglot", "mini-imagenet")
FORMAT = 1  # bump when the decoded layout changes
CLASS_SPLIT_SEED = 0
# learn2learn's Omniglot benchmark: 1,100 / 100 / 423 of the 1,623 characters.
OMNIGLOT_SPLIT = (1100, 100, 423)
MINI_MODES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def _learn2learn():
    """The learn2learn module, or OneshotError saying how to install it."""
    try:
        import learn2learn
        import learn2learn.data  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a missing or broken install reads the same to the user
        raise OneshotError(f"learn2learn is needed for this ({type(e).__name__}: {e}); "
                           f"install it with {INSTALL_HINT}") from None
    return learn2learn


class FloatSplit(Split):
    """A `Split` whose images are already encoder input: float [M, C, H, W]; `to_float` only casts."""

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, C, H, W] -> float32 [B, C, H, W], values unchanged."""
        return images.float()


class SplitItems(Dataset):
    """A split as a map-style Dataset: item i -> (float32 image [C, H, W] via `split.to_float`, int label)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.split.to_float(self.split.images[i:i + 1])[0], int(self.split.labels[i])


# --- out: oneshot splits as learn2learn datasets --------------------------------------------------


def to_metadataset(split: Split, min_items: int = 1):
    """`learn2learn.data.MetaDataset` over `SplitItems(split)`; its bookkeeping comes from the
    split's labels (nothing is loaded to build it) and lists only classes of `min_items` or more."""
    l2l = _learn2learn()
    table, counts = split.class_items()
    by_label = {c: table[c, :n].tolist() for c, n in enumerate(counts.tolist()) if n >= max(1, min_items)}
    return l2l.data.MetaDataset(SplitItems(split), labels_to_indices=by_label)


def to_taskdataset(split: Split, n_way: int, n_shot: int, n_query: int, num_tasks: int = -1):
    """learn2learn `Taskset` (the non-deprecated name of `TaskDataset`) of N-way (K+Q)-item tasks:
    NWays, KShots(K+Q), LoadData, RemapLabels over `to_metadataset(split, K+Q)`, so the classes
    drawn are those `sample_episodes` draws. A task is (images [N*(K+Q), C, H, W], labels [N*(K+Q)])."""
    check_request(split, n_way, n_shot, n_query)
    l2l = _learn2learn()
    t = l2l.data.transforms
    meta = to_metadataset(split, n_shot + n_query)
    steps = [t.NWays(meta, n_way), t.KShots(meta, n_shot + n_query), t.LoadData(meta), t.RemapLabels(meta)]
    return l2l.data.Taskset(meta, steps, num_tasks=num_tasks)


# --- in: learn2learn tasks as oneshot episodes ----------------------------------------------------


def episodes_from_tasks(taskset, n_tasks: int, n_shot: int) -> tuple[FloatSplit, torch.Tensor]:
    """Draw tasks `taskset[0..n_tasks-1]` -> (FloatSplit of their images, episodes int64 [E, N, K+Q]).

    Each task (data [T, C, H, W], labels [T]) must hold N classes of K+Q items each. Its items
    are regrouped by label (classes in ascending label order, task order kept within a class):
    the first `n_shot` of a class are its support, the rest its queries. Images are stored as
    given (the taskset's transforms already made them encoder input)."""
    if n_tasks < 1:
        raise ConfigError(f"n_tasks must be at least 1, got {n_tasks}")
    num = getattr(taskset, "num_tasks", -1)
    if num != -1 and n_tasks > num:
        raise ConfigError(f"the taskset holds {num} tasks; asked for {n_tasks}")
    images, labels, rows, names = [], [], [], []
    shape, offset = None, 0
    for e in range(n_tasks):
        task = taskset[e]
        x, y = task[0], torch.as_tensor(task[1]).long().reshape(-1)
        if x.dim() == 3:  # items without a channel axis
            x = x.unsqueeze(1)
        classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
        if shape is None:
            shape = (len(classes), int(counts[0]))
            if shape[1] <= n_shot:
                raise OneshotError(f"tasks have {shape[1]} items per class: too few for {n_shot} shots "
                                   f"and at least one query")
        if (len(classes), int(counts.min()), int(counts.max())) != (shape[0], shape[1], shape[1]):
            raise OneshotError(f"task {e} has {len(classes)} classes of {counts.tolist()} items; every task "
                               f"must have {shape[0]} classes of {shape[1]} items")
        rows.append(torch.argsort(inverse, stable=True).view(shape) + offset)
        images.append(x.float())
        labels.append(inverse + e * shape[0])
        names += [f"task{e}/{int(c)}" for c in classes]
        offset += len(y)
    split = FloatSplit("l2l-tasks", torch.cat(images), torch.cat(labels), names)
    return split, torch.stack(rows)


# --- learn2learn's dataset files as oneshot splits ------------------------------------------------


def load_l2l_split(name: str, split: str, root: str | Path, size: int | None = None) -> Split:
    """One split of a learn2learn dataset under `root`, decoded once into the uint8 cache.

    `omniglot`: `FullOmniglot` (torchvision's `omniglot-py/` layout); classes split 1,100 / 100 /
    423 as learn2learn's benchmark does, by a fixed seed (split `train`, `val`, `test` or `all`);
    28x28 by default, ink 255 (learn2learn's Resize(LANCZOS), ToTensor, 1 - x); groups = alphabets.
    `mini-imagenet`: `MiniImagenet` (`mini-imagenet-cache-<mode>.pkl`), 84x84 RGB; its mean/std
    are those of the split loaded. Missing files raise DataError; nothing is downloaded."""
    root = Path(root).expanduser()
    if name == "omniglot":
        return _omniglot(root, split, size or 28)
    if name in ("mini-imagenet", "miniimagenet"):
        return _mini_imagenet(root, split, size or 84)
    raise DataError(f"unknown learn2learn dataset {name!r}; choose one of {', '.join(NAMES)}")


def _class_split(n: int, split: str, total: tuple[int, ...] = OMNIGLOT_SPLIT) -> list[int]:
    """Class ids of `split` among n, shuffled by CLASS_SPLIT_SEED and cut in the ratios of `total`."""
    ids = list(range(n))
    if split == "all":
        return ids
    random.Random(CLASS_SPLIT_SEED).shuffle(ids)
    n_train = round(n * total[0] / sum(total))
    n_val = max(1, round(n * total[1] / sum(total)))
    cuts = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    cuts["validation"] = cuts["val"]
    if split not in cuts:
        raise DataError(f"learn2learn omniglot has splits train, val, test, all; got {split!r}")
    return sorted(cuts[split])


def _omniglot(root: Path, split: str, size: int) -> Split:
    folder = root / "omniglot-py"
    sets = [folder / s for s in ("images_background", "images_evaluation")]
    missing = [p.name for p in sets if not p.is_dir()]
    missing += [p.name + ".zip" for p in sets if not p.with_suffix(".zip").is_file()]
    if missing:
        raise DataError(f"learn2learn's Omniglot not found in {folder}: missing {', '.join(missing)} (torchvision "
                        f"reads the extracted folders and checks the zips' MD5). oneshot never downloads: fetch it "
                        f"with learn2learn (FullOmniglot(root, download=True)), or use --dataset omniglot")

    def build():
        l2l = _learn2learn()
        try:
            ds = l2l.vision.datasets.FullOmniglot(str(root), download=False)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            raise DataError(f"learn2learn's Omniglot in {folder} is unusable: {e}") from None
        from PIL import Image

        imgs = np.empty((len(ds), 1, size, size), np.uint8)
        labels = np.empty(len(ds), np.int64)
        for i in range(len(ds)):
            img, labels[i] = ds[i]
            imgs[i, 0] = 255 - np.asarray(img.convert("L").resize((size, size), Image.LANCZOS))
        chars = [c for part in ds.dataset.datasets for c in part._characters]
        return {"images": imgs, "labels": labels}, {"classes": [c.replace("\\", "/") for c in chars]}

    key = cache_key(FORMAT, size, fingerprint(sets))
    arrays, meta = cached_arrays(f"l2l-omniglot-{size}", key, build)
    keep = _class_split(len(meta["classes"]), split)
    names = [meta["classes"][c] for c in keep]
    alphabets = sorted({n.split("/")[0] for n in names})
    groups = torch.tensor([alphabets.index(n.split("/")[0]) for n in names])
    return _subset(f"l2l:omniglot/{split}", arrays, keep, names, groups, alphabets, (0.0,), (1.0,))


def _mini_imagenet(root: Path, split: str, size: int) -> Split:
    if split not in MINI_MODES:
        raise DataError(f"learn2learn mini-imagenet has splits {', '.join(MINI_MODES)}; got {split!r}")
    mode = MINI_MODES[split]
    pkl = root / f"mini-imagenet-cache-{mode}.pkl"
    if not pkl.is_file():  # checked first: MiniImagenet would create root and try to download
        raise DataError(f"learn2learn's mini-ImageNet not found: no {pkl}. oneshot never downloads: fetch it "
                        f"with learn2learn (MiniImagenet(root, mode={mode!r}, download=True))")

    def build():
        l2l = _learn2learn()
        ds = l2l.vision.datasets.MiniImagenet(str(root), mode=mode, download=False)
        x = torch.from_numpy(np.ascontiguousarray(ds.data["image_data"])).permute(0, 3, 1, 2)
        if x.shape[-1] != size:
            x = torch.cat([F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True)
                           .round_().clamp_(0, 255).to(torch.uint8) for c in x.split(1024)])
        xf = x[:: max(1, len(x) // 4096)].double().div(255)  # statistics from a sample of rows
        meta = {"classes": sorted(ds.class_idx, key=ds.class_idx.get),
                "mean": xf.mean((0, 2, 3)).tolist(), "std": xf.std((0, 2, 3)).clamp_min(1e-6).tolist()}
        return {"images": x.contiguous().numpy(), "labels": ds.y.astype(np.int64)}, meta

    key = cache_key(FORMAT, size, fingerprint([pkl]))
    arrays, meta = cached_arrays(f"l2l-mini-imagenet-{mode}-{size}", key, build)
    keep = list(range(len(meta["classes"])))
    return _subset(f"l2l:mini-imagenet/{split}", arrays, keep, meta["classes"], None, [],
                   tuple(meta["mean"]), tuple(meta["std"]))


def _subset(name, arrays, keep, names, groups, group_names, mean, std) -> Split:
    """The items of classes `keep` (ascending ids) as a Split with labels 0..len(keep)-1."""
    labels = torch.from_numpy(np.array(arrays["labels"]))
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
    new = remap[labels]
    idx = torch.nonzero(new >= 0).squeeze(1)
    images = torch.from_numpy(np.asarray(arrays["images"])[idx.numpy()])
    return Split(name, images, new[idx], list(names), groups, list(group_names), None, mean, std)
