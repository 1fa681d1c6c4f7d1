"""Sentiment of Rotten Tomatoes critic snippets with a BiGRU TextClassifier over BPE tokens, against TF-IDF +
logistic regression on the same split.

    python examples/task_sentiment.py
"""

import numpy as np
from sklearn.model_selection import train_test_split

from grukit.datasets import load_rotten_tomatoes
from grukit.tasks import TextClassifier
from grukit.tasks.baselines import tfidf_logistic_regression


def main() -> None:
    texts, labels = load_rotten_tomatoes()
    x_train, x_test, y_train, y_test = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=0)
    model = TextClassifier(verbose=1).fit(x_train, y_train)
    baseline = np.mean(tfidf_logistic_regression(x_train, y_train, x_test) == y_test)
    print(f"BiGRU accuracy {model.score(x_test, y_test):.3f}; TF-IDF + LR {baseline:.3f}")
    print(model.predict_proba(["a triumph: funny, moving and beautifully made", "a tedious, lifeless mess"]))


if __name__ == "__main__":
    main()
