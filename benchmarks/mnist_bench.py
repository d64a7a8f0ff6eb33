"""Trains the seed's MNIST model (fig. 10) to completion, handgrad layers vs the stock-Keras twin.

    nice -n 5 python benchmarks/mnist_bench.py --data_dir=../shared/datasets/mnist [--epochs=N]

Both models use the `mnist_cnn` config (same widths, optimizer, schedule, augmentation, seed) and
are trained one after the other in this process on the 60 000 training digits, then scored on the
10 000 test digits. Prints ONE JSON line: per model the test accuracy, the training wall seconds
(fit only, no per-epoch evaluation or checkpoints), the process CPU seconds of the fit, images/s,
plus the handgrad/stock ratios and the conditions (CPU count, load average before/after,
versions).
"""

import argparse
import json
import os
import platform
import time

import keras
import tensorflow as tf

from handgrad.zoo.run import registry


def train_one(config, data_dir):
    task = registry.get_task(config)
    model = task.build_model(config)
    train_ds, _ = task.datasets(config, data_dir)
    start = time.perf_counter()
    cpu_start = time.process_time()
    model.fit(train_ds, epochs=config.training.epochs,
              steps_per_epoch=config.training.steps_per_epoch, verbose=0, shuffle=False)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    images = int(model.optimizer.iterations) * config.training.batch_size
    metrics = task.evaluate(model, config, data_dir, None)
    return {"test_accuracy": round(metrics["test_accuracy"], 4),
            "test_errors": metrics["test_errors"], "train_wall_s": round(wall, 1),
            "train_cpu_s": round(cpu, 1), "images_per_s": round(images / wall, 1),
            "steps": int(model.optimizer.iterations)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="MNIST IDX folder (default: TFDS)")
    parser.add_argument("--config", default="mnist_cnn")
    parser.add_argument("--epochs", type=int, default=None, help="override config.training.epochs")
    args = parser.parse_args()
    config = registry.apply_overrides(registry.get_config(args.config),
                                      {"training.epochs": args.epochs})
    load_before = os.getloadavg()
    ours = train_one(config, args.data_dir)
    stock = train_one(registry.apply_overrides(config, {"model.stock_layers": True}),
                      args.data_dir)
    result = {
        "benchmark": "mnist_cnn_fig10", "config": args.config, "epochs": config.training.epochs,
        "batch_size": config.training.batch_size, "filters": list(config.model.filters),
        "handgrad": ours, "stock_keras": stock,
        "ratio_handgrad_over_stock": {
            "train_wall_s": round(ours["train_wall_s"] / stock["train_wall_s"], 3),
            # CPU seconds are less sensitive than wall seconds to other load on a shared machine.
            "train_cpu_s": round(ours["train_cpu_s"] / stock["train_cpu_s"], 3),
            "images_per_s": round(ours["images_per_s"] / stock["images_per_s"], 3),
            "test_accuracy": round(ours["test_accuracy"] / stock["test_accuracy"], 4)},
        "conditions": {"cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in
                                                                   load_before],
                       "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                       "tensorflow": tf.__version__, "keras": keras.__version__,
                       "python": platform.python_version()},
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
