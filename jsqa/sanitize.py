"""The one sanitiser for strings that came from outside (stream ids, Twilio fields, close
reasons, events of a remote server): applied before a terminal, a log line or a Prometheus
label sees them."""

from __future__ import annotations

import unicodedata


def _visible(ch: str) -> str:
    # control (Cc), format (Cf: bidi overrides), surrogate, private-use and unassigned
    # characters, and the line and paragraph separators, are the ones that can move a
    # cursor, retitle a terminal, reorder text or start a new log or metrics line
    category = unicodedata.category(ch)
    if category[0] == "C" or category in ("Zl", "Zp"):
        return ch.encode("unicode_escape").decode("ascii")
    return ch


def printable(text: object) -> str:
    """``text`` with every character that could act on a terminal or split a line written
    as a visible escape: ``"MZ\\x1b[2J"`` comes back as the nine characters ``MZ\\x1b[2J``."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(_visible(ch) for ch in s)
