"""UCR / UEA time-series classification sets that ``sktime`` ships, with their standard train / test split."""

from __future__ import annotations

import numpy as np

from grukit.datasets._packages import package_dir, require

SPLITS = ("train", "test")


def bundled_ucr_names() -> list[str]:
    """The UCR / UEA sets inside the installed ``sktime`` (others would need a download, which grukit never does)."""
    data = package_dir("sktime", "sktime", "The UCR / UEA sets") / "datasets" / "data"
    return sorted(p.name for p in data.iterdir() if (p / f"{p.name}_TRAIN.ts").exists())


def load_ucr(name: str, split: str = "train") -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """One split of a UCR / UEA set, e.g. ``GunPoint`` (hand-motion trajectories from video, 50 / 150 × 1 × 150),
    ``BasicMotions`` (accelerometer + gyroscope, 40 / 40 × 6 × 100) or ``JapaneseVowels`` (270 / 370 × 12 ×
    7-29 steps).

    Returns:
        ``(X, y)``: ``X`` of shape ``(n, channels, time)`` float32 as sktime gives it when every series has the
        same length, else a list of ``(time_i, channels)`` float32 arrays; ``y`` the class labels as strings,
        shape ``(n,)``.
    """
    if split not in SPLITS:
        raise ValueError(f"load_ucr expected split in {SPLITS}, got {split!r}")
    names = bundled_ucr_names()
    if name not in names:
        raise ValueError(f"load_ucr: {name!r} is not shipped with sktime; the sets available offline are {names}")
    datasets = require("sktime.datasets", "sktime", "The UCR / UEA sets")
    nested, labels = datasets.load_UCR_UEA_dataset(name, split=split, return_type="nested_univ")
    series = [
        np.stack([np.asarray(nested.iat[row, col], dtype=np.float32) for col in range(nested.shape[1])], axis=1)
        for row in range(nested.shape[0])
    ]  # each (T_i, C)
    labels = np.asarray(labels).astype(str)
    if len({s.shape[0] for s in series}) == 1:
        return np.stack(series).transpose(0, 2, 1).copy(), labels  # (n, C, T)
    return series, labels
