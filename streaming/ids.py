"""The rule for stream ids, which clients choose and dashboards, logs and metrics labels show."""

from __future__ import annotations

import re

STREAM_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")
STREAM_ID_RULE = "1-128 letters, digits or ._:@+-"


def is_stream_id(value: object) -> bool:
    """True for a string made only of the allowed characters, from its first to its last."""
    return isinstance(value, str) and STREAM_ID.fullmatch(value) is not None
