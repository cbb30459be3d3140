"""Text typed or piped in by a user: invalid UTF-8 is decoded with replacement characters, and said once.

On POSIX, Python decodes command-line arguments with 'surrogateescape': a byte that is not valid UTF-8 becomes a
lone surrogate, which the tokenizer cannot encode. The CLI reads stdin the same way (cli.py reconfigures it), so
every text input arrives here, where each such byte becomes U+FFFD (as `bytes.decode(errors="replace")` does)
and a warning on stderr says so the first time.
"""

from __future__ import annotations

import re
import sys

_warned = False
_NOT_ESCAPES = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # surrogateescape uses U+DC80..U+DCFF only


def clean_text(text: str, source: str = "the input") -> str:
    """`text` with undecodable bytes (lone surrogates) replaced by U+FFFD; warns once per process."""
    global _warned
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    # lone surrogates that are not escaped bytes (e.g. '\ud800' from Python code) cannot round-trip: U+FFFD
    text = _NOT_ESCAPES.sub("\ufffd", text)
    fixed = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not _warned:
        _warned = True
        print(f"warning: {source} is not valid UTF-8; undecodable bytes were replaced with U+FFFD", file=sys.stderr)
    return fixed


def decode_bytes(data: bytes, source: str) -> str:
    """UTF-8 bytes to text, invalid bytes replaced (with the same one-time warning)."""
    return clean_text(data.decode("utf-8", "surrogateescape"), source)
