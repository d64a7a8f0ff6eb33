"""What the four console commands share: dotted `--set` parsing, metric lines, one-line errors.

Every command reports bad input (a missing or corrupt file, a bad flag or config value) as one
line `<command>: error: <what was expected, naming the file or argument>` and exit status 1;
`--verbose` shows the traceback instead.
"""

import contextlib
import sys


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


@contextlib.contextmanager
def one_line_errors(command, verbose=False, errors=(ValueError, FileNotFoundError, OSError)):
    """Turns `errors` raised inside into one `<command>: error: ...` line and exit status 1."""
    try:
        yield
    except errors as e:
        if verbose:
            raise
        print(f"{command}: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
