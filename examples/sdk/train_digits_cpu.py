"""A small CPU training job metered by phase with LeptonEngine.

Trains scikit-learn's SGD classifier on the handwritten digits bundled with
scikit-learn (no download) in three phases, ``init``, ``train`` and ``eval``,
and prints where the energy went. Training goes through ``engine.optimize``,
which on a machine without an NVIDIA GPU trains unchanged and says that no
power limit was tuned; on a GPU machine the same call tunes the limit.

    python examples/sdk/train_digits_cpu.py --epochs 20 --output phases.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from lepton import LeptonEngine


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="where to save the phases JSON")
    args = parser.parse_args(argv)

    engine = LeptonEngine()
    with engine.phase("init"):
        digits = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            digits.data, digits.target, test_size=0.25, random_state=0
        )
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
        model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
        classes = np.unique(digits.target)
        rng = np.random.default_rng(0)

    def batches() -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for _ in range(args.epochs):
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), args.batch_size):
                index = order[start : start + args.batch_size]
                out.append((x_train[index], y_train[index]))
        return out

    def step(batch: tuple[np.ndarray, np.ndarray]) -> None:
        model.partial_fit(batch[0], batch[1], classes=classes)

    report = engine.optimize(step, batches(), phase="train")

    with engine.phase("eval"):
        accuracy = float(model.score(x_test, y_test))

    print(f"Test accuracy: {accuracy:.3f} after {report.steps} steps")
    engine.report(args.output)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
