"""Keep secrets out of logs, errors and job records.

Online basemaps and tile sources take API keys in their URLs (Tianditu ``tk=``, Gaode ``key=``, Baidu ``ak=``).
Anything that writes a URL where a person or a file can see it passes it through :func:`redact_secrets` first.
"""
from __future__ import annotations

import re

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
