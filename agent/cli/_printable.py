"""Text from input or the network as one printable line (stdlib only: usage errors use it)."""

from __future__ import annotations

__all__ = ["printable"]


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``value`` as one line of text: every character Python deems unprintable is escaped.

    That covers C0/C1 control characters (ESC, so ANSI sequences; CR, LF, BEL, DEL), bidi
    overrides and other invisible formatting characters, line/paragraph separators and
    non-ASCII spaces. A plain space stays a space.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)
