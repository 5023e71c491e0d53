r"""The `ckptkit` command: look inside, check, edit and convert TF checkpoints.

This package owns parsing and rendering only, no format logic: every number and every
edit comes from the library's public modules (info, edit, convert, average, merge,
stats, state, metagraph, saver, reader, selection), which the commands import inside
their functions, so that `ckptkit --help` and shell completion start at the speed of
click alone (no numpy, protobuf or rich). app holds the group and its error handling,
render the output, options the shared options, failure the one-line errors; inspect
(ls, show, diff, verify, stats), edit (rename, ema, rm), transform (convert, average,
merge), meta (meta, state, recover, example) and view the commands, added to the group here.
Bad input: one line `ckptkit: error: FILE: ...` on stderr, exit 1; usage errors exit 2;
Ctrl-C exits 130; never a traceback (CKPTKIT_DEBUG=1 shows one).
"""
from __future__ import annotations

from .app import cli, main
from .edit import ema_cmd, rename_cmd, rm_cmd
from .inspect import diff_cmd, ls_cmd, show_cmd, stats_cmd, verify_cmd
from .meta import example_cmd, meta_cmd, recover_cmd, state_cmd
from .transform import average_cmd, convert_cmd, merge_cmd
from .view import view_cmd

__all__ = ["cli", "main"]

for _command in (ls_cmd, show_cmd, diff_cmd, verify_cmd, stats_cmd, rename_cmd, ema_cmd, rm_cmd,
                 convert_cmd, average_cmd, merge_cmd, meta_cmd, state_cmd, recover_cmd, example_cmd,
                 view_cmd):
    cli.add_command(_command)
