"""Classify hand motions (GunPoint) and accelerometer + gyroscope recordings (BasicMotions) with the GRU-FCN
SequenceClassifier, against 1-NN DTW computed on the same official splits.

    python examples/task_classify_motion.py
"""

import numpy as np

from grukit.datasets import load_ucr
from grukit.tasks import SequenceClassifier
from grukit.tasks.baselines import one_nearest_neighbour


def main() -> None:
    for name in ("GunPoint", "BasicMotions"):
        x_train, y_train = load_ucr(name, "train")
        x_test, y_test = load_ucr(name, "test")
        model = SequenceClassifier().fit(x_train, y_train)
        dtw = np.mean(one_nearest_neighbour(x_train, y_train, x_test, "dtw") == y_test)
        print(f"{name}: GRU-FCN accuracy {model.score(x_test, y_test):.3f}, 1-NN DTW {dtw:.3f}")


if __name__ == "__main__":
    main()
