"""JSON from outside the process: every malformed document is a ValueError.

``json.loads`` raises RecursionError, not ValueError, for a document nested
deeper than its parser recurses (about a thousand levels: two kilobytes of
brackets). Every reader of JSON that comes from a worker, a PCCS, a TON API, a
file on the host or an annotation anyone can edit already turns ValueError
into its own error; reading through :func:`loads` makes that one clause cover
the deep document too.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """:func:`json.loads`, with a document nested too deep raised as ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested deeper than the parser recurses") from None
