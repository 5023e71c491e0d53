"""The narrower views of `saved_model_cli show`, over `saved_model.summarize_saved_model`'s digest.

    saved_model_cli show --dir D --tag_set serve                               # signature keys
    saved_model_cli show --dir D --tag_set serve --signature_def serving_default  # one signature

are `ckptkit meta D --tag-set serve [--signature-def serving_default]`, with the same
text. A tag-set is given as saved_model_cli takes it, tags separated by commas, in any
order; an unknown tag-set or signature key is an error naming the ones there are.
"""
from __future__ import annotations

from ..errors import InvalidArgumentError, NotFoundError

__all__ = ["parse_tag_set", "select_meta_graph", "select_signature", "signature_lines",
           "signature_keys_lines", "tag_set_text"]


def parse_tag_set(tag_set: str) -> frozenset[str]:
    """`serve,gpu` -> {"serve", "gpu"}: split at commas, spaces around a tag dropped."""
    tags = frozenset(t.strip() for t in tag_set.split(",") if t.strip())
    if not tags:
        raise InvalidArgumentError(f"empty tag-set {tag_set!r}: give the tags separated by commas, e.g. serve")
    return tags


def tag_set_text(tags: list[str]) -> str:
    """A tag-set as saved_model_cli lists them: `'serve, gpu'` (sorted)."""
    return repr(", ".join(sorted(tags)))


def select_meta_graph(summary: dict, tag_set: str | None) -> dict:
    """The MetaGraphDef of the SavedModel digest whose tags are `tag_set` (as a set, like
    TF's loader); with `tag_set` None, the only one there is."""
    graphs = summary["meta_graphs"]
    available = "; ".join(tag_set_text(g["tags"]) for g in graphs)
    if tag_set is None:
        if len(graphs) == 1:
            return graphs[0]
        raise InvalidArgumentError(f"the SavedModel has {len(graphs)} MetaGraphDefs: choose one with "
                                   f"--tag-set (tag-sets: {available})", path=summary["path"])
    wanted = parse_tag_set(tag_set)
    for graph in graphs:
        if frozenset(graph["tags"]) == wanted:
            return graph
    raise NotFoundError(f"no MetaGraphDef with tag-set {tag_set_text(list(wanted))} "
                        f"(tag-sets: {available})", path=summary["path"])


def select_signature(summary: dict, graph: dict, key: str) -> dict:
    """The signature `key` of one MetaGraphDef of the digest."""
    for sig in graph["signatures"]:
        if sig["key"] == key:
            return sig
    keys = ", ".join(s["key"] for s in graph["signatures"]) or "none"
    raise NotFoundError(f"no signature {key!r} in the MetaGraphDef with tag-set "
                        f"{tag_set_text(graph['tags'])} (signatures: {keys})", path=summary["path"])


def _shape_text(shape: list[int] | None) -> str:
    return "unknown_rank" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def signature_lines(sig: dict, indent: int = 0) -> list[str]:
    """saved_model_cli's inputs, outputs and method name of one signature (its
    _show_inputs_outputs), `indent` steps of two spaces in (1 under --all)."""
    pad = "  " * indent
    lines = []
    for kind, label in (("inputs", "input(s)"), ("outputs", "output(s)")):
        lines.append(f"{pad}The given SavedModel SignatureDef contains the following {label}:")
        for t in sig[kind]:
            lines.append(f"{pad}  {kind}['{t['key']}'] tensor_info:")
            lines.append(f"{pad}      dtype: {t['dtype']}")
            lines.append(f"{pad}      shape: {_shape_text(t['shape'])}")
            lines.append(f"{pad}      name: {t['name']}")
    lines.append(f"{pad}Method name is: {sig['method_name']}")
    return lines


def signature_keys_lines(graph: dict) -> list[str]:
    """saved_model_cli's list of a MetaGraphDef's signature keys (`show --tag_set T`)."""
    return (["The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:"]
            + [f'SignatureDef key: "{s["key"]}"' for s in graph["signatures"]])
