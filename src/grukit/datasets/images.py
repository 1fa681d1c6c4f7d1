"""Image sequences from scikit-learn's 8 × 8 digits: images read row by row, and short clips of digits
moving across a canvas (no video set ships in a package, so the clips are built in code from real images)."""

from __future__ import annotations

import numpy as np

DIRECTIONS = ("right", "left", "down", "up")
_STEPS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def load_digit_rows() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as sequences of rows: ``X`` ``(1797, 8 rows, 8 pixels)``
    float32 in [0, 1], ``y`` the digits ``(1797,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def make_digit_clips(
    n_clips: int, frames: int = 8, canvas: int = 16, seed: int = 0, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clips of one real 8 × 8 digit moving one pixel per frame in a straight line across a blank canvas.

    Each clip picks a digit image (from ``indices`` into :func:`load_digit_rows`, all of them by default),
    a direction in :data:`DIRECTIONS` and a start position that keeps the digit on the canvas for all
    ``frames`` frames; the start is random along both axes, so a single frame tells nothing of the motion.

    Returns:
        ``(clips, digits, directions)``: clips ``(n_clips, frames, 1, canvas, canvas)`` float32 in [0, 1];
        ``digits`` ``(n_clips,)`` 0-9; ``directions`` ``(n_clips,)`` indices into :data:`DIRECTIONS`.
    """
    if canvas < 8 + frames - 1:
        raise ValueError(f"make_digit_clips needs canvas >= 8 + frames - 1 = {8 + frames - 1}, got {canvas}")
    images, labels = load_digit_rows()
    pool = np.arange(len(images)) if indices is None else np.asarray(indices)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(pool, size=n_clips)
    directions = rng.integers(0, len(DIRECTIONS), size=n_clips)
    clips = np.zeros((n_clips, frames, 1, canvas, canvas), dtype=np.float32)
    travel = frames - 1
    for clip, (image_index, direction) in enumerate(zip(chosen, directions)):
        d_row, d_col = _STEPS[DIRECTIONS[direction]]
        # start so that start + k * step stays in [0, canvas - 8] for k = 0..travel
        row = rng.integers(travel if d_row < 0 else 0, canvas - 8 - (travel if d_row > 0 else 0) + 1)
        col = rng.integers(travel if d_col < 0 else 0, canvas - 8 - (travel if d_col > 0 else 0) + 1)
        for frame in range(frames):
            r, c = row + frame * d_row, col + frame * d_col
            clips[clip, frame, 0, r : r + 8, c : c + 8] = images[image_index]
    return clips, labels[chosen], directions.astype(np.int64)
