"""The page: page.html (every script and style inline, nothing fetched from elsewhere)
with the data it shows embedded as JSON, and a fresh nonce for its Content-Security-
Policy (only the template's own script and style run: an injected `<script>` or event
handler would not, on top of the escaping).

The JSON goes inside a `<script type="application/json">` element, so it must not end
it: `embed_json` writes it as ASCII with `<`, `>` and `&` as \\u escapes (so neither
`</script>` nor `<!--` can occur), and U+2028/U+2029 escaped as well. Undecodable bytes
of a name (kept as lone surrogates) become their \\udcXX escape, as in `--json`.
"""
from __future__ import annotations

import json
import math
import secrets
from importlib import resources
from typing import Any

__all__ = ["embed_json", "render"]

_NONCE = "__CKPTKIT_NONCE__"
_DATA = "__CKPTKIT_DATA__"


def _template() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such a float is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def embed_json(value: Any) -> str:
    """`value` as JSON that can sit inside an HTML <script> element (see the module doc)."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_finite)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(model: dict[str, Any]) -> str:
    """The whole page for `model` ({"title", "served", "checkpoint", "run", ...}: see
    model.ViewModel.page), as one self-contained HTML document."""
    try:
        data = embed_json(model)
    except ValueError:  # a NaN or Infinity somewhere: rare enough to pay for the walk
        data = embed_json(_finite(model))
    head, rest = _template().split(_DATA)
    nonce = secrets.token_urlsafe(16)
    return head.replace(_NONCE, nonce) + data + rest.replace(_NONCE, nonce)
