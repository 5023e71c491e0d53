"""Choosing tensors by pattern: globs, regexes, and the optimizer's state in TF1 checkpoints.

Patterns match tensor names as a reader lists them (a partitioned variable once, by its
name; the edit then takes its slices along). Globs are fnmatch's (`*` crosses `/`);
regexes must match a whole name (re.fullmatch).

TF1 optimizers keep their state as slot variables named `<variable>/<slot name>`, with
the slot name from the optimizer's `_name` and TF's unique-name suffixes (`_1`, `_2`, ...
for a second slot or a second optimizer of the same kind): Adam `v/Adam`, `v/Adam_1`
and the `beta1_power`/`beta2_power` accumulators, Momentum `v/Momentum`, RMSProp
`v/RMSProp`, `v/RMSProp_1`, Adagrad `v/Adagrad`, AdagradDA `v/AdagradDA`,
`v/AdagradDA_1`, Adadelta `v/Adadelta`, `v/Adadelta_1`, Ftrl `v/Ftrl`, `v/Ftrl_1`,
ProximalAdagrad `v/ProximalAdagrad`; BERT's AdamWeightDecay (also used for LAMB-style
optimizers) `v/adam_m`, `v/adam_v`. Facts from TF's python/training/*.py and
google-research/bert's optimization.py.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

from .errors import InvalidArgumentError

__all__ = ["OPTIMIZER_SLOT", "as_patterns", "by_glob", "by_regex", "compile_regex", "glob_renamer", "optimizer_keys",
           "select"]

_SLOT_NAMES = ("Adam", "Momentum", "RMSProp", "Adagrad", "AdagradDA", "Adadelta", "Ftrl", "ProximalAdagrad")
# The last name component of an optimizer's state.
OPTIMIZER_SLOT = re.compile(r"(?:" + "|".join(_SLOT_NAMES) + r")(?:_\d+)?|adam_[mv]|beta[12]_power(?:_\d+)?")


def optimizer_keys(keys: Iterable[str]) -> list[str]:
    """The keys holding TF1 optimizer state (slots and Adam's beta powers), in order."""
    return [k for k in keys if OPTIMIZER_SLOT.fullmatch(k.rsplit("/", 1)[-1])]


def by_glob(keys: Iterable[str], patterns: Iterable[str], *, path: str | None = None,
            what: str = "glob") -> list[str]:
    """The keys some glob matches; a glob matching nothing is an error naming it (and
    `what` it is: "include glob", ...)."""
    keys = list(keys)
    out: list[str] = []
    for pattern in patterns:
        hits = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
        if not hits:
            raise InvalidArgumentError(f"no tensor name matches the {what} {pattern!r}", path=path)
        out += hits
    return list(dict.fromkeys(out))


def select(names: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = (), *,
           base: Iterable[str] | None = None, path: str | None = None) -> list[str]:
    """The names `--include`/`--exclude` pick, in the order of `names` (after `base`): the
    one rule of every command that takes them (globs as fnmatch's: `*` crosses `/`).

    Include globs select (their union; with none, every name), then exclude globs remove.
    `base`: names chosen another way (a command's NAME arguments, `rm --optimizer`):
    include globs add to them, exclude globs remove from them, and with no include
    nothing else is picked. Each glob must match some name of `names` and the
    filters must leave a name: a typo in a glob is an InvalidArgumentError naming it and
    `path`, never a silently empty result (an empty file written, everything skipped).
    With no globs and no `base`, every name, whatever their number.
    """
    names = list(names)
    include, exclude = list(include), list(exclude)
    if not include and not exclude:
        return names if base is None else list(dict.fromkeys(base))
    included = set(by_glob(names, include, path=path, what="include glob"))
    dropped = set(by_glob(names, exclude, path=path, what="exclude glob"))
    chosen = [n for n in names if n in included or not include]
    if base is not None:
        chosen = [*base, *(chosen if include else ())]
    picked = [n for n in dict.fromkeys(chosen) if n not in dropped]
    if not picked:
        raise InvalidArgumentError(f"the filters leave no tensor (include {include}, exclude {exclude})",
                                   path=path)
    return picked


def compile_regex(pattern: str, path: str | None = None) -> re.Pattern:
    """`re.compile`, a bad pattern an InvalidArgumentError naming it (not re.error)."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidArgumentError(f"bad regex {pattern!r}: {exc}", path=path) from None


def by_regex(keys: Iterable[str], patterns: list[str], *, path: str | None = None) -> list[str]:
    """The keys some regex fully matches; a regex matching nothing is an error naming it."""
    keys = list(keys)
    out: list[str] = []
    for pattern in patterns:
        compiled = compile_regex(pattern, path)
        hits = [k for k in keys if compiled.fullmatch(k)]
        if not hits:
            raise InvalidArgumentError(f"no tensor name matches the regex {pattern!r} (re.fullmatch)", path=path)
        out += hits
    return list(dict.fromkeys(out))


def glob_renamer(old: str, new: str) -> Callable[[str], str | None]:
    """key -> NEW with each `*` (and `?`) replaced by what the corresponding wildcard of OLD
    matched, or None where OLD does not match: `rename --glob 'enc/*' 'encoder/*'`."""
    wildcards = sum(1 for c in old if c in "*?")
    if sum(1 for c in new if c in "*?") > wildcards:
        raise InvalidArgumentError(f"{new!r} has more wildcards than {old!r}")
    regex = "".join("(.*)" if c == "*" else "(.)" if c == "?" else re.escape(c) for c in old)
    pattern = re.compile(regex, re.DOTALL)

    def renamer(key: str) -> str | None:
        m = pattern.fullmatch(key)
        if m is None:
            return None
        groups = iter(m.groups())
        return "".join(next(groups) if c in "*?" else c for c in new)

    return renamer


def as_patterns(value: str | Iterable[str] | None, what: str = "include", path: str | None = None) -> list[str]:
    """A str or an iterable of str as a list of globs (None: none); anything else is an
    InvalidArgumentError saying what `what` takes."""
    if value is None:
        return []
    patterns = [value] if isinstance(value, str) else list(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidArgumentError(f"{what} takes globs (str), not {pattern!r}", path=path)
    return patterns
