"""Commands that look at a checkpoint without changing it: ls, show, diff, verify, stats.

Every number comes from the library (info, stats, selection, reader); this module
parses the options and renders the answers (tables, trees, histograms, JSON).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import CheckpointError, SavedModelWithoutVariablesError
from . import render
from .app import Command
from .failure import Failure, error_line, error_text, os_message
from .options import PATH, complete_tensor_names, filter_options, located, raw_names_option
from .render import bytes_text, echo, echo_json, human, note, plural, printable, shape_text, table

if TYPE_CHECKING:
    from ..reader import CheckpointReader


@click.command("ls", cls=Command)
@click.argument("ckpt", default=".", required=False, type=PATH)
@click.argument("object_path", required=False, metavar="[OBJECT]")
@click.option("--json", "as_json", is_flag=True,
              help='print {"checkpoint", "tensors": [...], "elements", "bytes"} as JSON for scripts')
@filter_options(legacy_filter=True)
@click.option("--count-exclude", multiple=True, metavar="GLOB",
              help="list tensors matching GLOB but leave their elements and bytes out of the totals "
                   "(inspect_checkpoint's --count_exclude_pattern); repeatable")
@click.option("--sort", type=click.Choice(["name", "size"]), default="name", show_default=True,
              help="order by name, or by size (largest first)")
@click.option("--tree", is_flag=True,
              help="TF2 checkpoints: the object graph from the root (or OBJECT), each variable with "
                   "its key, dtype, shape and optimizer slots; TF1: tensors grouped by / scopes")
@raw_names_option()
def ls_cmd(ckpt: str, object_path: str | None, as_json: bool, include: tuple[str, ...], exclude: tuple[str, ...],
           count_exclude: tuple[str, ...], sort: str, tree: bool) -> None:
    """List tensors: name, dtype, shape, elements and bytes, with totals.

    OBJECT (TF2 checkpoints) is an object path such as `optimizer` or
    `model/layer_with_weights-0`: only the tensors it and the objects below it save,
    with their optimizer slots. --include/--exclude pick among those; tensors
    --count-exclude matches are listed but not counted in the totals (with --json,
    each tensor then says "counted": true or false).
    """
    from ..formats.objectgraph import tree_text  # noqa: PLC0415
    from ..ops import info  # noqa: PLC0415
    from ..selection import by_glob, select  # noqa: PLC0415

    location = located(ckpt)
    prefix, infos = info.list_tensors(location)
    if tree:
        objects = info.object_tree(location, object_path)
        if objects is not None and (include or exclude or count_exclude or sort != "name"):
            raise click.UsageError("--include, --exclude, --count-exclude and --sort apply to the flat listing; "
                                   "--tree of a TF2 checkpoint draws its object graph (give an OBJECT path to "
                                   "draw part of it)")
        if objects is not None:
            if as_json:
                echo_json(objects)
            else:
                echo(printable(prefix) + (f" {printable(object_path)}" if object_path else ""))
                for line in tree_text(objects, 1 if object_path else 0):
                    echo(printable(line))
            return
    if object_path is not None:
        wanted = set(info.object_keys(location, object_path))
        infos = [i for i in infos if i.name in wanted]
    picked = set(select([i.name for i in infos], include, exclude, path=prefix))
    infos = [i for i in infos if i.name in picked]
    uncounted = set(by_glob([i.name for i in infos], count_exclude, path=prefix, what="count-exclude glob"))
    if sort == "size":
        infos.sort(key=lambda i: (-(i.bytes or 0), i.name))  # unknown sizes (sliced strings, V1 strings) count 0
    if tree:
        root = info.scope_tree(infos)
        if as_json:
            echo_json(_tree_json(root))
        else:
            _print_tree(prefix, root, uncounted)
        return
    counted = [i for i in infos if i.name not in uncounted]
    total_el = sum(i.elements for i in counted)
    total_b = sum(i.bytes or 0 for i in counted)
    if as_json:  # as verify and stats: the checkpoint opened, then the tensors
        echo_json({"checkpoint": prefix, "tensors": [
            {**i.as_dict(), **({"counted": i.name not in uncounted} if count_exclude else {})} for i in infos],
            "elements": total_el, "bytes": total_b})
        return
    rows = [[i.name, i.dtype + (" (sliced)" if i.sliced else ""), shape_text(i.shape),
             f"{i.elements:,}", bytes_text(i.bytes)] for i in infos]
    tensors = plural(len(infos)) + (f" ({len(counted)} counted)" if count_exclude else "")
    table([("name", "l"), ("dtype", "l"), ("shape", "l"), ("elements", "r"), ("bytes", "r")], rows,
           footer=[tensors, "", "", f"{total_el:,}", f"{total_b:,} ({human(total_b)})"],
           title=prefix)


def _tree_totals(node: dict[str | None, Any], uncounted: set[str]) -> tuple[int, int]:
    count, size = 0, 0
    for key, child in node.items():
        if key is None:
            count, size = count + 1, size + (0 if child.name in uncounted else child.bytes or 0)
        else:
            c, s = _tree_totals(child, uncounted)
            count, size = count + c, size + s
    return count, size


def _tree_json(node: dict[str | None, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if None in node:
        out["tensor"] = node[None].as_dict()
    children = {k: _tree_json(v) for k, v in node.items() if k is not None}
    if children:
        out["children"] = children
    return out


def _tree_label(name: str, node: dict[str | None, Any], uncounted: set[str]) -> str:
    parts = [printable(name)]
    if None in node:
        t = node[None]
        parts.append(f"{t.dtype}{shape_text(t.shape)}  {bytes_text(t.bytes)} B"
                     + ("  (not counted)" if t.name in uncounted else ""))
    if len(node) > (1 if None in node else 0):
        count, size = _tree_totals(node, uncounted)
        parts.append(f"({plural(count)}, {human(size)})")
    return "  ".join(parts)


def _print_tree(prefix: str, root: dict[str | None, Any], uncounted: set[str]) -> None:
    if render.stdout_is_tty():
        from rich.text import Text  # noqa: PLC0415
        from rich.tree import Tree  # noqa: PLC0415

        def add(branch: Tree, node: dict[str | None, Any]) -> None:
            for key, child in node.items():
                if key is not None:
                    add(branch.add(Text(_tree_label(key, child, uncounted))), child)

        top = Tree(Text(printable(prefix)))
        add(top, root)
        render.console().print(top)
        return
    echo(printable(prefix))

    def walk(node: dict[str | None, Any], depth: int) -> None:
        for key, child in node.items():
            if key is not None:
                echo("  " * depth + _tree_label(key, child, uncounted))
                walk(child, depth + 1)

    walk(root, 1)


@click.command("show", cls=Command)
@click.argument("ckpt", type=PATH)
@click.argument("names", nargs=-1, shell_complete=complete_tensor_names)
@click.option("--all", "all_tensors", is_flag=True, help="every tensor (as TF's inspect_checkpoint --all_tensors)")
@click.option("--stats", is_flag=True, help="min/max/mean/std and NaN/Inf/zero counts")
@click.option("--hist", is_flag=True, help="a histogram of the finite values (bins and counts in --json)")
@click.option("--bins", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="histogram bins")
@click.option("--full", is_flag=True, help="print every value (default: numpy's summary)")
@filter_options()
@click.option("--json", "as_json", is_flag=True,
              help="print JSON (values only with --full or when small): an object for one NAME, "
                   "a list for several, globs or --all")
@raw_names_option()
def show_cmd(ckpt: str, names: tuple[str, ...], all_tensors: bool, stats: bool, hist: bool, bins: int,
             full: bool, include: tuple[str, ...], exclude: tuple[str, ...], as_json: bool) -> None:
    """Print tensors' values (and, with --stats/--hist, their statistics).

    NAMES are tensor names or fnmatch globs ('dense/*'; * crosses /); --all shows
    every tensor. A name that is a tensor is taken as it is, even if it holds * or ?.
    In a TF2 checkpoint a NAME may be an object path (`model/layer_with_weights-0/kernel`):
    the tensor that object saves. --include adds the tensors its globs match to NAMES;
    --exclude then leaves out those its globs match.
    """
    import numpy as np  # noqa: PLC0415

    from ..ops import stats as _stats  # noqa: PLC0415
    from ..reader import CheckpointReader  # noqa: PLC0415
    from ..selection import select  # noqa: PLC0415

    if not names and not all_tensors and not include:
        raise click.UsageError("give at least one NAME, --include GLOB or --all")
    single = len(names) == 1 and not all_tensors and not include
    out_list = []
    with CheckpointReader(located(ckpt)) as reader:
        chosen = list(reader) if all_tensors else _select(reader, names)
        chosen = select(list(reader), include, exclude, base=chosen, path=reader.prefix)
        single = single and len(chosen) == 1 and (names[0] in reader or not any(c in names[0] for c in "*?["))
        dtypes = reader.get_variable_to_dtype_map()
        for i, name in enumerate(chosen):
            array = reader.get_tensor(name)
            dtype = dtypes[name].name
            summary = _stats.array_stats(array) if stats or hist else None
            histogram = _stats.array_histogram(array, summary, bins) if hist else None
            if as_json:
                out: dict[str, object] = {"name": name, "dtype": dtype, "shape": list(array.shape)}
                if full or array.size <= 1000:
                    out["values"] = (array.astype(np.float64) if array.dtype.kind == "V" else array).tolist()
                if stats:
                    out["stats"] = summary
                if hist:
                    out["hist"] = histogram
                out_list.append(out)
                continue
            if i:
                echo()
            echo(f"{printable(name)}: {dtype}{shape_text(array.shape)}")
            threshold = sys.maxsize if full else 1000
            with np.printoptions(threshold=threshold, linewidth=_width()):
                echo(np.array2string(array, separator=", ") if array.ndim else str(array[()]))
            if stats and summary is not None:
                table([("stat", "l"), ("value", "r")], [[k, _fmt(v)] for k, v in summary.items()])
            if hist:
                _print_histogram(histogram)
    if as_json:
        echo_json(out_list[0] if single else out_list)


def _select(reader: CheckpointReader, names: tuple[str, ...]) -> list[str]:
    """The tensors NAMES pick, in the order given: a tensor's own name first, else a glob
    (every match, in key order). A name or glob that picks nothing is an error."""
    import fnmatch  # noqa: PLC0415

    from ..errors import TensorNotFoundError  # noqa: PLC0415
    from ..ops import info  # noqa: PLC0415

    chosen: dict[str, None] = {}
    for name in names:
        if name in reader:
            chosen[name] = None
            continue
        is_glob = any(c in name for c in "*?[")
        if not is_glob and reader.object_graph() is not None:  # a TF2 object path
            chosen[info.tensor_for(reader, name)] = None
            continue
        matches = [k for k in reader if fnmatch.fnmatchcase(k, name)] if is_glob else []
        if not matches:
            what = "no tensor matches this pattern" if is_glob else "tensor not found in checkpoint"
            raise TensorNotFoundError(what, path=reader.prefix, key=name)
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for histogram bars
_HIST_WIDTH = 40


def _bar(count: int, most: int, width: int = _HIST_WIDTH) -> str:
    """`count` as a bar of unicode blocks, `most` filling `width` cells (eighths resolve)."""
    eighths = round(count * width * 8 / most) if most else 0
    if count and not eighths:
        eighths = 1  # a non-empty bin always shows
    full, rest = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[rest] if rest else "")


def histogram_lines(histogram: dict[str, Any] | None) -> list[str]:
    """A histogram as text: one line per bin, `[low, high)  bar  count` (the last bin closed)."""
    if histogram is None:
        return ["histogram: no finite real values"]
    edges, counts = histogram["edges"], histogram["counts"]
    labels = [f"{edges[i]:.4g}, {edges[i + 1]:.4g}" for i in range(len(counts))]
    labels = [f"[{label}" + ("]" if i == len(counts) - 1 else ")") for i, label in enumerate(labels)]
    width = max(map(len, labels))
    most = max(counts, default=0)
    return [f"{label.ljust(width)}  {_bar(count, most).ljust(_HIST_WIDTH)}  {count:,}"
            for label, count in zip(labels, counts, strict=True)]


def _print_histogram(histogram: dict[str, Any] | None) -> None:
    for line in histogram_lines(histogram):
        echo(line)


def _width() -> int:
    import shutil  # noqa: PLC0415

    return shutil.get_terminal_size((100, 24)).columns if render.stdout_is_tty() else 100


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.9g}"
    return "-" if value is None else str(value)


class _Trouble(Failure):
    """diff's "trouble" (an unreadable or missing checkpoint): one line, exit status 2."""

    exit_code = 2


@click.command("diff", cls=Command)
@click.argument("a", type=PATH)
@click.argument("b", type=PATH)
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="values within this absolute tolerance count as equal")
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="...or within this tolerance relative to max(|a|, |b|)")
@click.option("--friendly-names", is_flag=True,
              help="TF2: match and report tensors by the names convert --friendly-names writes "
                   "(the model's object paths), not by key")
@filter_options()
@click.option("--json", "as_json", is_flag=True, help="print the differences as JSON")
@raw_names_option()
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: str, atol: float, rtol: float, friendly_names: bool,
             include: tuple[str, ...], exclude: tuple[str, ...], as_json: bool) -> None:
    """Compare two checkpoints: names, dtypes, shapes and values.

    Lists the tensors only in A or only in B, those whose dtype or shape changed, and
    for each whose values differ how many elements do, the max absolute and the max
    relative difference (|a-b| / max(|a|, |b|)). --include/--exclude compare only the
    names they pick (of A and B together). Exit status as diff(1): 0 when equal, 1
    when different, 2 on trouble (a missing or damaged checkpoint, a glob matching no
    name: one line on stderr).
    """
    from ..ops import info  # noqa: PLC0415

    if atol < 0 or not atol == atol:  # noqa: PLR0124 - NaN check
        raise click.BadParameter("must be >= 0", param_hint="--atol")
    if rtol < 0 or not rtol == rtol:  # noqa: PLR0124 - NaN check
        raise click.BadParameter("must be >= 0", param_hint="--rtol")
    try:
        result = info.diff_checkpoints(located(a), located(b), atol=atol, rtol=rtol, friendly_names=friendly_names,
                                       include=include, exclude=exclude)
    except CheckpointError as exc:
        raise _Trouble(error_text(exc)) from None
    except OSError as exc:
        raise _Trouble(os_message(exc)) from None
    if as_json:
        echo_json(result)
    else:
        for key in result["only_a"]:
            echo(f"only in A: {printable(key)}")
        for key in result["only_b"]:
            echo(f"only in B: {printable(key)}")
        for c in result["changed"]:
            echo(f"changed:   {printable(c['name'])}: {c['a']['dtype']}{shape_text(c['a']['shape'])} -> "
                  f"{c['b']['dtype']}{shape_text(c['b']['shape'])}")
        for v in result["values"]:
            extra = ""
            if v["max_abs_diff"] is not None:
                extra = f", max |a-b| {v['max_abs_diff']:.6g}, max rel {v['max_rel_diff']:.6g}"
            echo(f"values:    {printable(v['name'])}: {v['mismatched']} of {v['elements']} differ{extra}")
        if result["equal"]:
            note(f"checkpoints are equal ({plural(result['compared'])} compared)")
    ctx.exit(0 if result["equal"] else 1)


@click.command("verify", cls=Command)
@click.argument("ckpt", default=".", required=False, type=PATH)
@filter_options()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@raw_names_option()
@click.pass_context
def verify_cmd(ctx: click.Context, ckpt: str, include: tuple[str, ...], exclude: tuple[str, ...],
               as_json: bool) -> None:
    """Read every tensor, checking every crc32c; exit 1 naming each damaged tensor.

    --include/--exclude check only the tensors they pick.

    TF2 checkpoints: the object graph is checked against the keys too (every key an
    object names exists; every key is saved by an object reachable from the root).

    .safetensors and .npz files have no checksums: their headers are checked and
    every tensor is read.

    A SavedModel without variables (no variables/variables.index, as TF1's builder
    writes one for a graph without variables) is OK: its saved_model.pb is parsed, and
    there is nothing else to verify.
    """
    from ..ops import info  # noqa: PLC0415

    try:
        location = located(ckpt)
    except SavedModelWithoutVariablesError as exc:
        from ..tf1 import saved_model  # noqa: PLC0415

        export_dir = exc.path or ckpt
        saved_model.read_saved_model(export_dir)  # a damaged saved_model.pb fails here
        message = "the SavedModel has no variables to verify (no variables/variables.index)"
        if as_json:
            echo_json({"checkpoint": None, "prefix": None, "saved_model": export_dir, "format": "saved_model",
                       "checked": message, "tensors": 0, "bytes": 0, "ok": True, "errors": [], "graph_problems": [],
                       "pending_commits": []})
        else:
            echo(f"OK: {printable(export_dir)}: {message}")
        ctx.exit(0)
    total = info.total_bytes(location, include=include, exclude=exclude) if render.stderr_is_tty() else 0
    with render.progress(total, "verifying") as progress:
        report = info.verify_checkpoint(location, progress=progress, include=include, exclude=exclude)
    if as_json:
        echo_json({"checkpoint": report.prefix, "prefix": report.prefix, "format": report.format,
                    "checked": report.checked,
                    "tensors": report.tensors, "bytes": report.bytes, "ok": report.ok,
                    "errors": [{"name": k, "error": m} for k, m in report.errors],
                    "graph_problems": [{"name": k, "error": m} for k, m in report.graph_problems],
                    "pending_commits": report.pending})
    else:
        for journal in report.pending:
            echo(error_line(f"{journal}: {PENDING_COMMIT}"), err=True)
        for key, message in report.errors:
            if not message.startswith(report.prefix):  # the library named neither file nor key
                message = f"{report.prefix}: key {key!r}: {message}"
            echo(error_line(message), err=True)
        for key, message in report.graph_problems:
            if not message.startswith(report.prefix):
                message = f"{report.prefix}: key {key!r}: {message}"
            echo(error_line(message), err=True)
        prefix = printable(report.prefix)
        if report.ok and not report.checksums:
            echo(f"OK: {report.tensors} tensors, {report.bytes:,} bytes read in {prefix} ({report.checked})")
        elif report.ok:
            echo(f"OK: {report.tensors} tensors, {report.bytes:,} bytes verified in {prefix}")
        elif report.errors:
            echo(f"FAILED: {len(report.errors)} of {report.tensors} tensors damaged in {prefix}"
                  + (f"; {len(report.graph_problems)} object graph problems" if report.graph_problems else ""))
        elif report.graph_problems:
            echo(f"FAILED: the object graph and the index of {prefix} disagree "
                  f"({len(report.graph_problems)} problems); every tensor's data is intact")
        else:
            echo(f"FAILED: {len(report.pending)} unfinished commit(s) in the directory of {prefix}; every "
                 f"tensor ckptkit reads is intact; run `ckptkit recover {printable(os.path.dirname(prefix) or '.')}`")
    ctx.exit(0 if report.ok else 1)


# What a journal left by a dead writer means for TF, and what to do (verify, recover).
PENDING_COMMIT = ("a ckptkit writer died after its commit point: ckptkit reads the new checkpoint, TF sees "
                  "half-replaced files until `ckptkit recover` (or any ckptkit write in the directory) completes it")


@click.command("stats", cls=Command)
@click.argument("ckpt", default=".", required=False, type=PATH)
@filter_options(legacy_filter=True)
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
@raw_names_option()
@click.pass_context
def stats_cmd(ctx: click.Context, ckpt: str, include: tuple[str, ...], exclude: tuple[str, ...], as_json: bool) -> None:
    """Statistics of every tensor: min, max, mean, std, NaN, Inf and zero counts.

    Streams each tensor in chunks (checksums checked), so any size fits in a few MiB.
    Exit status 1 when any NaN or Inf is found (did training diverge?), 0 otherwise.
    Strings are listed without statistics.
    """
    from ..ops import stats as _stats  # noqa: PLC0415

    total = _stats.numeric_bytes(located(ckpt), include=include, exclude=exclude) if render.stderr_is_tty() else 0
    with render.progress(total, "reading") as progress:
        report = _stats.checkpoint_stats(located(ckpt), progress=progress, include=include, exclude=exclude)
    if as_json:
        echo_json({"checkpoint": report["prefix"], **report})  # "prefix": its old name
    else:
        rows = []
        for t in report["tensors"]:
            st = t["stats"] or {}
            rows.append([t["name"], t["dtype"], shape_text(t["shape"]),
                         *(_fmt(st.get(k)) for k in ("min", "max", "mean", "std")),
                         *(_fmt(st.get(k)) for k in ("nan", "inf", "zeros"))])
        table([("name", "l"), ("dtype", "l"), ("shape", "l"), ("min", "r"), ("max", "r"), ("mean", "r"),
                ("std", "r"), ("nan", "r"), ("inf", "r"), ("zeros", "r")], rows, title=report["prefix"])
        if report["nonfinite"]:
            shown = ", ".join(printable(n) for n in report["nonfinite"][:5])
            more = f" and {len(report['nonfinite']) - 5} more" if len(report["nonfinite"]) > 5 else ""
            note(f"NaN or Inf found: {report['nan']:,} NaN, {report['inf']:,} Inf in "
                  f"{plural(len(report['nonfinite']))}: {shown}{more}")
    ctx.exit(0 if report["ok"] else 1)
