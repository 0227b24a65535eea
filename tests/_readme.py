"""The README's snippets by name, for the tests that run them as written: a ```python block right
after an HTML comment ``<!-- snippet: NAME -->``."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def snippet(name: str) -> str:
    """The code of the README's snippet ``name`` (the block's text, without its fences)."""
    found = re.findall(rf"<!-- snippet: {re.escape(name)} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert len(found) == 1, f"README.md has {len(found)} snippets named {name!r}"
    return found[0]
