"""A small grukit.nn.GRU classifier on scikit-learn's 8x8 digits, each image read as 8 rows of 8 pixels."""

import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from grukit.nn import GRU
from grukit.train import seed_everything


class RowClassifier(torch.nn.Module):
    def __init__(self, hidden_size: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.gru = GRU(8, hidden_size)
        self.head = torch.nn.Linear(hidden_size, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, h_n = self.gru(images)  # images (B, 8 rows, 8 pixels); h_n (1, B, H)
        return self.head(h_n[-1])  # (B, classes)


def main() -> None:
    seed_everything(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)  # (1797, 8, 8)
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    model = RowClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for _epoch in range(15):
        order = torch.randperm(len(x_train))
        for batch in order.split(64):
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    print(f"digits read row by row, GRU(64): test accuracy {accuracy:.3f} "
          f"({len(x_test)} images, {time.perf_counter() - start:.1f} s of training)")


if __name__ == "__main__":
    main()
