"""The one checker of config rules: what every config field accepts, checked once a config is
final: by `registry.resolve_config` (after all overrides, so rules across fields see the final
values) and `registry.from_saved` (a config read from config.json). A bad value raises ValueError
naming the dotted field, what it accepts and what was received, before anything is built or written:

    training.learning_rate must be a number > 0. Received: training.learning_rate=-0.001

A rule is read as written: "int >= 1", "number > 0", "number in [0, 1)", "int in [0, 27]",
"bool", "str", "ints >= 1" / "numbers > 0" (one or more), "4 numbers > 0", "None or <rule>"; a
bound may name another field ("number >= anchors.min_size"). ("one of", choices) lists the
accepted values; (predicate(value, config), "text") is any other rule, its text may quote fields
as {section.field}. A field may have several rules; rules of fields a config lacks (the MLP has
no `model.filters`) are skipped.

The rules themselves live beside the fields they check: each family's configs module declares
`rules()` (`zoo/mnist/configs.py`, `zoo/face/retinanet/configs.py`, `zoo/face/blazeface/configs.py`,
the shared face sections in `zoo/face/configs.py`); `registry.validate` hands them here.
"""

import functools
import re

_SPEC = re.compile(r"^(?:(?P<count>\d+) )?(?P<kind>ints?|numbers?)"
                   r"(?: (?P<op>>=|>) (?P<low>\S+)|"
                   r" in (?P<lb>[\[(])(?P<lo>[^,]+), (?P<hi>[^\])]+)(?P<rb>[\])]))?$")
_MISSING = object()


def _get(config, name):
    return functools.reduce(lambda obj, attr: getattr(obj, attr, _MISSING)
                            if obj is not _MISSING else obj, name.split("."), config)


def _literal(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bound(text, config):
    """A rule's bound: a number, or the value of the field it names."""
    return float(text) if _literal(text) else _get(config, text)


def _scalar(value, match, config):
    kind = int if match["kind"].startswith("int") else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value:  # NaN
        return False
    if match["op"]:
        low = _bound(match["low"], config)
        return value > low if match["op"] == ">" else value >= low
    if match["lb"]:
        low, high = _bound(match["lo"], config), _bound(match["hi"], config)
        return ((value > low if match["lb"] == "(" else value >= low) and
                (value < high if match["rb"] == ")" else value <= high))
    return True


def accepts(value, rule, config):
    """Whether `value` satisfies `rule` (module docstring) in `config`."""
    if isinstance(rule, tuple):
        return value in rule[1] if rule[0] == "one of" else bool(rule[0](value, config))
    if rule.startswith("None or "):
        return value is None or accepts(value, rule[len("None or "):], config)
    if rule in ("bool", "str"):
        return isinstance(value, bool if rule == "bool" else str)
    match = _SPEC.match(rule)
    if match is None:
        raise ValueError(f"config rule {rule!r} is not one of the forms in config_rules.py")
    if not match["kind"].endswith("s"):
        return _scalar(value, match, config)
    count = int(match["count"]) if match["count"] else None
    return (isinstance(value, tuple | list) and len(value) >= 1 and
            count in (None, len(value)) and all(_scalar(v, match, config) for v in value))


def describe(rule, config):
    """What `rule` accepts, in words, with the values of the fields it names."""
    if isinstance(rule, tuple):
        text = f"one of {list(rule[1])}" if rule[0] == "one of" else rule[1]
        return re.sub(r"\{([\w.]+)\}", lambda m: f"{m[1]}={_get(config, m[1])!r}", text)
    if rule.startswith("None or "):
        return "None or " + describe(rule[len("None or "):], config)
    if rule in ("bool", "str"):
        return "true or false" if rule == "bool" else "a string"
    match = _SPEC.match(rule)
    kind, count = match["kind"], match["count"]
    if count:
        words = f"{count} {kind}"  # "4 numbers"
    elif kind.endswith("s"):
        words = f"one or more {kind}"
    else:
        words = f"{'an' if kind == 'int' else 'a'} {kind}"
    named = [n for n in (match["low"], match["lo"], match["hi"]) if n and not _literal(n)]
    return words + rule[match.end("kind"):] + "".join(f" ({n}={_get(config, n)!r})"
                                                       for n in named)


def check(config, rules):
    """Raises ValueError for the first field of `config` that breaks one of `rules`
    ([(dotted name, rule)]); returns `config`."""
    for name, rule in rules:
        value = _get(config, name)
        if value is _MISSING:
            continue
        try:
            ok = accepts(value, rule, config)
        except (TypeError, AttributeError):  # compared with a bound of another type
            ok = False
        if not ok:
            raise ValueError(f"{name} must be {describe(rule, config)}. Received: "
                             f"{name}={value!r}")
    return config
