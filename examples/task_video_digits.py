"""Classify short clips of real handwritten digits moving across a canvas: which digit, and which way it
moves. A small CNN reads every frame, a GRU reads the frame features.

    python examples/task_video_digits.py
"""

import numpy as np
from sklearn.model_selection import train_test_split

from grukit.datasets import DIRECTIONS, load_digit_rows, make_digit_clips
from grukit.tasks import VideoClassifier


def main() -> None:
    _, labels = load_digit_rows()
    train_images, test_images = train_test_split(np.arange(len(labels)), test_size=0.25, random_state=0)
    clips, digits, directions = make_digit_clips(3000, indices=train_images)
    test_clips, test_digits, test_directions = make_digit_clips(500, seed=1, indices=test_images)
    model = VideoClassifier(verbose=2).fit(clips, np.stack([digits, directions], 1))
    predicted = model.predict(test_clips)
    print(
        f"digit right {np.mean(predicted[:, 0] == test_digits):.3f}, "
        f"direction right {np.mean(predicted[:, 1] == test_directions):.3f}"
    )
    print("first test clip:", predicted[0, 0], "moving", DIRECTIONS[predicted[0, 1]])


if __name__ == "__main__":
    main()
