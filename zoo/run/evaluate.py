"""Task-agnostic evaluation of a trained `model_dir`, and the `handgrad-eval` command.

    handgrad-eval --model_dir=/tmp/mnist_cnn [--config=mnist_cnn] [--data_dir=DIR] [--set=...]
        [--verbose]

Loads `model_dir/model.keras` (written by `handgrad-train`), asks the config's task to evaluate
it (MNIST: accuracy on the 10 000 test digits and `model_dir/confusion_matrix.png`; faces: WIDER
AP easy / medium / hard and `model_dir/pr_curves.png`), and prints the metrics, one
`name=value` per line, the task's headline metric last, before the plots are written (a plot
that cannot be written, e.g. into a read-only model_dir, is a warning). Without `--config`, the
config saved by training in `model_dir/config.json` is used; a `--config` of another task than
the saved run's is refused. Errors are one `handgrad-eval: error: ...` line naming the file or
argument (a missing, empty or unfinished model_dir, a damaged model.keras or config.json), exit
status 1; `--verbose` shows the traceback.
"""

from handgrad.zoo.run import cli, registry
from handgrad.zoo.run.model_dir import load_trained


def evaluate_model_dir(config, model_dir, data_dir=None, overrides=None):
    """Re-measures a trained model: loads `model_dir/model.keras` and runs the task's evaluate.

    Args:
        config: a config name, a config dataclass, or None (use `model_dir/config.json`).
        model_dir: the training output folder. data_dir: as for training.
        overrides: dotted config fields to replace (e.g. {"data.test_limit": 1000}).
    Returns: the task's metrics dict (also printed as `name=value` lines).
    """
    model, config = load_trained(model_dir, config)
    config = registry.validate(registry.apply_overrides(config, overrides or {}))
    return cli.evaluate_and_report(registry.get_task(config), model, config, data_dir, model_dir)


def main(argv):
    from absl import flags

    f = flags.FLAGS
    with cli.one_line_errors("handgrad-eval", f.verbose):
        cli.no_extra_arguments(argv)
        evaluate_model_dir(f.config, f.model_dir, f.data_dir, cli.parse_sets(f.set))


def run():
    """Console entry point `handgrad-eval`."""
    from absl import app, flags

    flags.DEFINE_string("config", None, f"Config name ({', '.join(sorted(registry.configs()))}); "
                        "default: the one saved in model_dir/config.json.")
    flags.DEFINE_string("model_dir", None, "Folder holding model.keras (from handgrad-train).")
    flags.DEFINE_string("data_dir", None, "Dataset folder (MNIST: the IDX files); default: TFDS.")
    flags.DEFINE_multi_string("set", [], "Override a config field by its dotted name: "
                              "--set=data.test_limit=1000.")
    cli.define_verbose()
    flags.mark_flag_as_required("model_dir")
    app.run(main)


if __name__ == "__main__":
    run()
