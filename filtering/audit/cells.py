"""HTML cells shared by the report's sections: numbers tied to audit.json, word diffs."""

from __future__ import annotations

import html


def fmt(value) -> str:
    return "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def num(value, key: str, tag: str = "td") -> str:
    """A table cell whose `data-key` points at the value in audit.json (the browser test checks they agree)."""
    return f'<{tag} data-key="{html.escape(key)}">{html.escape(fmt(value))}</{tag}>'


def diff_html(ops: list[dict]) -> str:
    out = []
    for op in ops:
        r, h = html.escape(op["ref"]), html.escape(op["hyp"])
        if op["op"] == "equal":
            out.append(r)
        elif op["op"] == "substitute":
            out.append(f'<span class="sub"><s>{r}</s> &rarr; {h}</span>')
        elif op["op"] == "delete":
            out.append(f'<span class="del">{r}</span>')
        else:
            out.append(f'<span class="ins">{h}</span>')
    return " ".join(out)
