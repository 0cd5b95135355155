"""Keep secrets out of logs, errors and job records, and the app's path fields inside the folders it may read.

Online basemaps and tile sources take API keys in their URLs (Tianditu ``tk=``, Gaode ``key=``, Baidu ``ak=``).
Anything that writes a URL where a person or a file can see it passes it through :func:`redact_secrets` first.

The app serves on 127.0.0.1, where whoever types a local path into it can read that file anyway. Served to others
(behind a proxy), the path fields of the Map's import and the Align page would read any file of the server and tell
by their errors whether it exists. ``SEGHZ_IMPORT_ROOTS`` (folders, separated by ``os.pathsep``) limits them:
:func:`check_server_path` refuses a path outside every root before looking at it, with the same message whether it
exists or not. The CLI is not limited (its user has the shell).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from seghz.errors import BadInputError

IMPORT_ROOTS_ENV = "SEGHZ_IMPORT_ROOTS"


def import_roots() -> list[Path] | None:
    """The folders the app's path fields may read (``SEGHZ_IMPORT_ROOTS``), resolved; None when unset (no limit)."""
    raw = os.environ.get(IMPORT_ROOTS_ENV, "").strip()
    if not raw:
        return None
    return [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r.strip()]


def check_server_path(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` (expanded, resolved, so ``..`` and links count where they lead) when the app may read it.

    Raises:
        BadInputError: When ``SEGHZ_IMPORT_ROOTS`` is set and the path lies outside every root (said before the
            file is looked at, so the message does not tell whether it exists).
    """
    p = Path(path).expanduser()
    roots = import_roots()
    if roots is None:
        return p
    full = p.resolve()
    if not any(full.is_relative_to(r) for r in roots):
        raise BadInputError(path, f"this {what} lies outside the folders this server may read ({IMPORT_ROOTS_ENV}: "
                                  f"{os.pathsep.join(str(r) for r in roots)})")
    return full

#: Query/template parameter names whose values are secrets.
SECRET_PARAMS = ("tk", "key", "ak", "token", "access_token", "api_key", "apikey", "secret", "sig", "signature")

_PARAM_RE = re.compile(
    r"(?P<pre>(?:^|[?&;\s\"'])(?:" + "|".join(SECRET_PARAMS) + r")=)(?P<val>[^&\s\"'#]+)",
    re.IGNORECASE,
)
_MASK = "***"


def redact_secrets(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``***``.

    Args:
        text: A URL, URL template, log line or error message.

    Returns:
        The same text; e.g. ``"https://t0.tianditu.gov.cn/img_w/wmts?tk=abc123&x=1"`` becomes
        ``"https://t0.tianditu.gov.cn/img_w/wmts?tk=***&x=1"``. Template placeholders (``{x}``) are left alone.
    """
    def _sub(m: re.Match[str]) -> str:
        val = m.group("val")
        if val.startswith("{") and val.endswith("}"):
            return m.group(0)
        return m.group("pre") + _MASK

    return _PARAM_RE.sub(_sub, str(text))


def mask_value(secret: str | None) -> str:
    """A display form of one secret: ``"****1a2b"`` (last 4 characters kept when the secret is long), ``""`` if none."""
    if not secret:
        return ""
    return "****" + (secret[-4:] if len(secret) >= 12 else "")
