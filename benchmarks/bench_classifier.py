"""How many epochs the dataset classifier needs: trains it on grey (and, with --binary, binarised)
Fashion-MNIST for each budget in --epochs and prints its test accuracy and wall time, to choose
the cheapest budget that reaches 90 % grey test accuracy. Writes benchmarks/results/classifier.json.

    python benchmarks/bench_classifier.py --epochs 1 2 4 --threads 2 [--binary]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from workbench.data import load_split
from workbench.devices import resolve_device
from workbench.features import (DOMAINS, ClassifierBudget, DatasetClassifier, PrivateStream, classifier_accuracy,
                                fit_classifier)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--binary", action="store_true", help="also the binary-domain classifier")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-train-images", type=int, default=0, help="a subset (0: all 60,000)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train_x, train_y = load_split("fashion-mnist", "train", None)
    test_x, test_y = load_split("fashion-mnist", "test", None)
    if args.max_train_images:
        train_x, train_y = train_x[:args.max_train_images], train_y[:args.max_train_images]
    rows = []
    for domain in DOMAINS if args.binary else ("grey",):
        for epochs in args.epochs:
            budget = replace(ClassifierBudget(), epochs=epochs)
            stream = PrivateStream(budget.seed, device)
            with stream.draws():
                model = DatasetClassifier((1, 28, 28), 10, width=budget.width).to(device)
            start = time.perf_counter()
            fit_classifier(model, train_x, train_y, budget, device, domain, progress=False, stream=stream)
            seconds = time.perf_counter() - start
            accuracy = classifier_accuracy(model, test_x, test_y, device, domain)
            row = {"domain": domain, "epochs": epochs, "train_images": len(train_x), "test_accuracy": accuracy,
                   "seconds": round(seconds, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "classifier.json").write_text(json.dumps(
        {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}",
         "budget": asdict(ClassifierBudget()), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
