"""Commands that write a new checkpoint or file from others: convert, average, merge.

Conversion, averaging and merging are the library's (convert, average, merge); this
module parses their options, shows a progress bar on a terminal, and reports.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from . import render
from .app import Command
from .options import PATH, check_output, filter_options, located, overwrite_option, raw_names_option
from .render import echo, echo_json, human, note, plural, printable, shape_text, table

if TYPE_CHECKING:
    from ..location import Location


@click.command("convert", cls=Command)
@click.argument("src", type=PATH)
@click.argument("dst", type=PATH)
@click.option("--num-shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="data shards when DST is a checkpoint")
@filter_options()
@click.option("--cast", "casts", multiple=True, metavar="FROM=TO",
              help="convert dtype FROM to TO, e.g. bfloat16=float32 (repeatable)")
@click.option("--rename", nargs=2, metavar="REGEX TEMPLATE",
              help="a name REGEX fully matches becomes TEMPLATE (\\1, \\g<name> expand)")
@click.option("--friendly-names", is_flag=True,
              help="TF2 keys as the model's object paths (model/dense/kernel, not the optimizer's path "
                   "to the same weight), without /.ATTRIBUTES/VARIABLE_VALUE; --include/--exclude "
                   "match these names")
@click.option("--layout", type=click.Choice(["torch"]),
              help="torch: kernels in PyTorch's layout (dense [in,out] -> [out,in], conv HWIO -> OIHW, "
                   "depthwise -> grouped) and torch's names (conv/kernel -> conv.weight); README, "
                   "\"From Keras or TensorFlow to PyTorch\"")
@click.option("--keep-names", is_flag=True, help="with --layout torch: keep the names, change only the layout")
@raw_names_option()
@click.option("--strict", is_flag=True, help="fail instead of leaving out tensors DST cannot hold")
@click.option("--metadata", "metadata_pairs", multiple=True, metavar="KEY=VALUE",
              help="add KEY=VALUE to a .safetensors DST's __metadata__ (repeatable)")
@click.option("--dry-run", is_flag=True,
              help="print the plan (name, new name, dtype, shape, bytes of each tensor); write nothing")
@overwrite_option("replace an existing DST (a checkpoint's old .meta and surplus data shards go in the "
                   "same commit)")
@click.option("--json", "as_json", is_flag=True, help="print the summary (with --dry-run, the plan) as JSON")
def convert_cmd(src: str, dst: str, num_shards: int, include: tuple[str, ...], exclude: tuple[str, ...],
                casts: tuple[str, ...], rename: tuple[str, str] | None, friendly_names: bool, layout: str | None,
                keep_names: bool, strict: bool, metadata_pairs: tuple[str, ...], dry_run: bool, overwrite: bool,
                as_json: bool) -> None:
    """Convert between checkpoints, .npz and .safetensors (by extension).

    A path ending in .npz or .safetensors is that format; anything else is a
    checkpoint (SRC resolves like every CKPT; DST is the prefix to write). One
    tensor is in memory at a time. Tensors DST cannot hold (strings and the TF2
    object graph in .safetensors, bfloat16/float8 in .npz) are left out with a
    note, unless --strict; --cast bfloat16=float32 keeps them. A .safetensors
    DST records format "pt", SRC and the ckptkit version in its __metadata__,
    plus each --metadata KEY=VALUE. A glob matching no name, or nothing left to
    write, is an error: no empty file is written. An existing DST (any file of
    that checkpoint, or the file) is refused unless --overwrite. --layout torch
    changes kernels by name and rank (--dry-run lists each, with its old shape).
    """
    from ..ops import convert  # noqa: PLC0415

    if keep_names and layout is None:
        raise click.UsageError("--keep-names goes with --layout torch")

    cast = {}
    for pair in casts:
        a, sep, b = pair.partition("=")
        if not sep or not a or not b:
            raise click.BadParameter(f"{pair!r} is not FROM=TO", param_hint="--cast")
        cast[a] = b
    metadata = {}
    for pair in metadata_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    total = convert.source_bytes(located(src)) if render.stderr_is_tty() and not dry_run else 0
    with render.progress(total, "converting") as progress:
        result = convert.convert(located(src), dst, num_shards=num_shards, include=include, exclude=exclude,
                                 cast=cast, rename=rename if rename else None,
                                 friendly_names=friendly_names, strict=strict, metadata=metadata,
                                 overwrite=overwrite, progress=progress, dry_run=dry_run, layout=layout,
                                 torch_names=not keep_names)
    if as_json:
        echo_json(result)
        return
    if dry_run:
        table([("name", "l"), ("new name", "l"), ("dtype", "l"), ("shape", "l"), ("bytes", "r")]
              + ([("layout", "l")] if layout else []),
              [[r["name"], r["new_name"], r["dtype"] if r["dtype"] == r["source_dtype"]
                else f"{r['source_dtype']} -> {r['dtype']}", _shape_change(r), f"{r['bytes']:,}"]
               + ([r["layout"] or ""] if layout else []) for r in result["plan"]])
        if layout:
            note(f"--layout {layout}: {plural(sum(1 for r in result['plan'] if r['layout']))} change layout")
    left = result["left_out"]
    if left:
        shown = ", ".join(f"{printable(d['name'])} ({d['reason']})" for d in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        note(f"{'would leave' if dry_run else 'left'} out {plural(len(left))}: {shown}{more} "
              "(--strict makes this an error)")
    if dry_run:
        note(f"dry run: would convert {plural(result['tensors'])} ({human(result['bytes'])}): "
              f"{printable(src)} -> {printable(dst)}; nothing written")
        return
    note(f"converted {result['tensors']} tensors ({human(result['bytes'])}): "
          f"{printable(src)} -> {printable(dst)}")


def _shape_change(row: dict) -> str:
    """A dry run's shape: `[3,3,3,4] -> [4,3,3,3]` where --layout changed it."""
    if row["layout"]:
        return f"{shape_text(row['source_shape'])} -> {shape_text(row['shape'])}"
    return shape_text(row["shape"])


# --------------------------------------------------------------------------- average, merge

def _bytes_to_read(locations: Iterable[Location]) -> int:
    """The total a progress bar counts to: what reading `locations` reads (0 off a
    terminal, where there is no bar, so nothing is opened for it)."""
    if not render.stderr_is_tty():
        return 0
    from ..ops.convert import source_bytes  # noqa: PLC0415

    return sum(source_bytes(p) for p in locations)


@click.command("average", cls=Command)
@click.argument("ckpts", nargs=-1, type=PATH)
@click.option("-o", "--output", required=True, type=PATH, help="prefix of the averaged checkpoint to write")
@click.option("--last", nargs=2, type=(click.IntRange(min=2), PATH), default=None, metavar="N DIR",
              help="average the N newest checkpoints of DIR (from its `checkpoint` state file)")
@overwrite_option()
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def average_cmd(ckpts: tuple[str, ...], output: str, last: tuple[int, str] | None, overwrite: bool,
                as_json: bool) -> None:
    """Write the element-wise mean of several checkpoints (CKPT... or --last N DIR).

    Float and complex tensors are averaged in float64 and stored in their own dtype;
    integer, bool and string tensors (global_step, the TF2 object graph) are taken
    from the last checkpoint. Keys, dtypes and shapes must agree. One chunk of each
    tensor is in memory at a time. The last checkpoint's .meta is copied beside OUT.
    """
    from ..ops import average  # noqa: PLC0415

    if bool(ckpts) == bool(last):
        raise click.UsageError("give the checkpoints to average, or --last N DIR (not both)")
    if len(ckpts) == 1:
        raise click.UsageError("averaging needs two or more checkpoints")
    paths = [located(p) for p in (average.last_checkpoints(last[1], last[0]) if last is not None else ckpts)]
    check_output(output)
    with render.progress(_bytes_to_read(paths), "averaging") as progress:
        result = average.average_checkpoints(paths, output, progress=progress, overwrite=overwrite)
    if as_json:
        echo_json(result)
        return
    for prefix in result["inputs"]:
        echo(printable(prefix))
    note(f"averaged {plural(len(result['inputs']), 'checkpoint')} into {printable(output)}: "
          f"{result['averaged']} tensors averaged, {result['copied']} taken from the last"
          + (f"; its .meta copied to {printable(result['meta'])}" if result["meta"] else ""))


@click.command("merge", cls=Command)
@click.argument("parts", nargs=-1, required=True, type=PATH)
@click.option("-o", "--output", required=True, type=PATH, help="prefix of the merged checkpoint to write")
@overwrite_option()
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def merge_cmd(parts: tuple[str, ...], output: str, overwrite: bool, as_json: bool) -> None:
    """Merge checkpoints written in parts (by parallel workers) into one, as TF's
    MergeV2Checkpoints does.

    Keys must be disjoint (a partitioned variable may have its slices in several
    parts). Data shards are hard-linked (or copied byte for byte), never re-encoded;
    only the index is new. The parts are left as they are.
    """
    from ..ops import merge  # noqa: PLC0415

    locations = [located(p) for p in parts]
    check_output(output)
    with render.progress(_bytes_to_read(locations), "merging") as progress:
        result = merge.merge_checkpoints(locations, output, progress=progress, overwrite=overwrite)
    if as_json:
        echo_json(result)
        return
    note(f"merged {plural(len(result['parts']), 'checkpoint')} into {printable(output)}: "
          f"{plural(result['tensors'])} in {plural(result['shards'], 'data shard')}")
