"""The explorer page: one HTML file with its data, script and style inline, under a strict CSP.

Sample text is untrusted. It reaches the browser only as JSON inside `<script type="application/json">`
with `<`, `>`, `&` and U+2028/U+2029 written as `\\uXXXX` escapes, so no sample can end that block or
open a tag; the page's script builds the DOM with `textContent` only. The Content-Security-Policy
allows exactly the page's own script and style (by SHA-256 hash) and nothing else: no other script,
no network (`default-src 'none'`), no forms, no `<base>`. A page opened from disk (file://) needs
nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import asdict
from importlib import resources

from seqdistill.viewer.data import Payload

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(obj: object) -> str:
    """JSON that is safe as the text of a `<script type="application/json">` element.

    >>> embed_json({"t": "</script><b>&\\u2028"})
    '{"t":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026\\\\u2028"}'
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(str.maketrans(_ESCAPES))


def asset(name: str) -> str:
    return (resources.files("seqdistill.viewer") / "assets" / name).read_text(encoding="utf-8")


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    return (
        f"default-src 'none'; script-src {csp_hash(script)}; style-src {csp_hash(style)}; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )


def render(payload: Payload, title: str, footer: str) -> str:
    """The whole page as one string."""
    script, style = asset("explore.js"), asset("explore.css")
    data = embed_json(asdict(payload))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{content_security_policy(script, style)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><nav id="tabs"></nav></header><main id="app">'
        "<noscript>This page needs JavaScript; report.html beside it shows the figures without it.</noscript>"
        f"</main><footer><small>{html.escape(footer)}</small></footer>"
        f'<script type="application/json" id="data">{data}</script>'
        f"<script>{script}</script></body></html>\n"
    )
