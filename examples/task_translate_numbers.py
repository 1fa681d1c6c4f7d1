"""Translate English number words into French with an attention GRU encoder-decoder, tested on numbers it
never saw in training (greedy and beam search; exact match, BLEU and chrF from sacrebleu).

    python examples/task_translate_numbers.py
"""

import numpy as np

from grukit.datasets import number_word_pairs
from grukit.tasks import Translator


def main() -> None:
    numbers = np.random.default_rng(0).permutation(10000)
    train = number_word_pairs(numbers[1000:], "en", "fr")
    test = number_word_pairs(numbers[:1000], "en", "fr")
    model = Translator(tokens="word", epochs=15).fit([a for a, _ in train], [b for _, b in train])
    for beam in (1, 4):
        scores = model.evaluate([a for a, _ in test], [b for _, b in test], beam_size=beam)
        print(f"beam {beam}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(model.predict(["one thousand, nine hundred and ninety-eight", "seventy-one"]))


if __name__ == "__main__":
    main()
