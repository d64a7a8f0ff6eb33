"""What the four console commands share: dotted `--set` parsing, metric lines, one-line errors,
and results printed before the optional artefacts are written.

Every command reports an error (a missing or corrupt file, a bad flag or config value, a full
disk, memory running out: which setting to lower) as one line `<command>: error: <what was
expected, naming the file or argument>` and exit status 1; Ctrl-C as `<command>: interrupted;
<what a rerun does>` and exit status 130; `--verbose` shows the traceback instead. No
traceback is printed without `--verbose`, also for errors nobody foresaw (those say so and ask
for `--verbose`).
"""

import contextlib
import logging
import math
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

# Errors that are the user's to fix (bad input, missing or corrupt files, a full disk).
EXPECTED = (ValueError, OSError)
MAX_MESSAGE = 1000  # characters of one error line; --verbose shows everything


def parse_sets(items):
    """`--set` items `section.field=value` -> {"section.field": "value"}."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects section.field=value. Received: --set={item!r}")
        out[name.strip()] = value
    return out


def format_metrics(metrics):
    """`name=value` lines, in the task's order (the headline metric last)."""
    return "\n".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items())


def no_extra_arguments(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")


def define_verbose():
    from absl import flags

    flags.DEFINE_boolean("verbose", False, "Show the full traceback of an error.")


def one_line(error):
    """`Type: message` on one line (TF and Keras messages span many), cut at MAX_MESSAGE."""
    text = " ".join(str(error).split())
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + " ... (--verbose shows all)"
    return f"{type(error).__name__}: {text}"


_OOM = re.compile(r"OOM when allocating tensor with shape\[([\d, ]*)\] and type (\w+) on "
                  r"(?:\S*device:)?(\S+)")
_BYTES = {"float": 4, "half": 2, "double": 8, "bfloat16": 2, "int32": 4, "int64": 8, "uint8": 1}


def out_of_memory(error, setting):
    """One line for a TF out-of-memory error (ResourceExhaustedError "OOM when allocating ...",
    whose text holds the Python stack of the graph node) or a MemoryError, naming the tensor and
    `setting`, what to lower; None for any other error."""
    if isinstance(error, MemoryError):
        return f"OutOfMemoryError: the memory is exhausted. Lower {setting} and rerun."
    match = _OOM.search(str(error)) if type(error).__name__ == "ResourceExhaustedError" else None
    if match is None:
        return None
    dims = [int(d) for d in match.group(1).replace(" ", "").split(",") if d]
    size = math.prod(dims) * _BYTES.get(match.group(2), 4)
    return (f"OutOfMemoryError: a {match.group(2)} tensor of shape [{', '.join(map(str, dims))}] "
            f"({size / 1e9:.1f} GB) does not fit in the memory of {match.group(3)}. Lower "
            f"{setting} and rerun.")


def _fresh_line():
    """Ends a progress bar's line on a terminal, so that the message starts its own."""
    if sys.stdout.isatty():
        print(flush=True)


@contextlib.contextmanager
def deferred_interrupt():
    """Holds back Ctrl-C (SIGINT) while the block runs: one that arrives meanwhile is raised as
    KeyboardInterrupt once the block is done. `resilience.AtomicBackup` writes an epoch's state
    inside it, so a Ctrl-C during that write keeps the finished epoch (an interrupted atomic
    write would be discarded whole, and the rerun would redo the epoch)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def one_line_errors(command, verbose=False, errors=EXPECTED, interrupted=None,
                    memory_setting="the batch size"):
    """Turns errors raised inside into one `<command>: error: ...` line and exit status 1.

    Args:
        command: the command's name, first word of the line.
        verbose: re-raise instead (the traceback is shown).
        errors: the expected error types; any other exception is reported the same way, marked
            as unexpected (rerun with --verbose and report it).
        interrupted: optional callable returning what a rerun does after Ctrl-C (e.g. "rerun
            the same command to resume from epoch 3"); the line ends with it, exit status 130.
        memory_setting: what to lower when memory runs out (`out_of_memory`), e.g.
            "--batch_size (training.batch_size)".
    """
    try:
        yield
    except KeyboardInterrupt:
        if verbose:
            raise
        hint = interrupted() if interrupted is not None else "nothing was lost"
        _fresh_line()
        print(f"{command}: interrupted; {hint}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except Exception as e:  # the one place where every error becomes one line
        if verbose:
            raise
        _fresh_line()
        line = out_of_memory(e, memory_setting)
        if line is None:
            unexpected = "" if isinstance(e, errors) else (
                " (an unexpected error: rerun with --verbose for the traceback and report it)")
            line = f"{one_line(e)}{unexpected}"
        print(f"{command}: error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def evaluate_and_report(task, model, config, data_dir, model_dir):
    """Runs `task.evaluate`, prints its metrics, then puts its artefacts into `model_dir`.

    The task writes its artefacts (plots, result files) into a staging folder in the system's
    temporary folder; the metrics are printed first, then each artefact is moved into
    `model_dir`. An artefact that cannot be written there (read-only folder, full disk) is a
    warning: the printed results stand. If even the staging folder cannot take them, the
    evaluation is rerun without artefacts, with a warning.
    Returns the metrics.
    """
    if model_dir is None:
        metrics = task.evaluate(model, config, data_dir, None)
        print(format_metrics(metrics), flush=True)
        return metrics
    with tempfile.TemporaryDirectory(prefix="handgrad-artefacts-") as staging:
        try:
            metrics = task.evaluate(model, config, data_dir, staging)
        except OSError as e:
            if staging not in f"{e} {e.filename}":  # not an artefact write: a real error
                raise
            logging.warning("could not write the artefacts (%s: %s); evaluating without them",
                            type(e).__name__, e)
            metrics = task.evaluate(model, config, data_dir, None)
        print(format_metrics(metrics), flush=True)
        for item in sorted(Path(staging).iterdir()):
            dest = Path(model_dir) / item.name
            try:
                _publish(item, dest)
            except OSError as e:
                logging.warning("could not write %s (%s: %s); the results above are complete",
                                dest, type(e).__name__, e)
    return metrics


def _publish(item, dest):
    """Moves a staged file or folder to `dest`, replacing a previous one (a file atomically)."""
    if item.is_dir():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        shutil.copytree(item, dest)
        return
    tmp = dest.with_name(f".tmp-{dest.name}")
    try:
        shutil.copyfile(item, tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
