"""Logging: human-readable or JSON on stderr, every line redacted of secrets.

The code never logs a secret on purpose; the filter is the second line of defence for what a
library might print (a URL with a token, an exception carrying a header). Credentials and tokens
the reconciler handles are registered here so that their exact values are scrubbed too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from .redaction import redact

# Registered secrets: by length, and as their hashes. A log line is looked through once per distinct
# length (a few: the shapes of tokens and keys), not once per secret: with a token per Trigger, 10,000
# Triggers would otherwise cost 10,000 replaces for each line logged, which grew the operator's CPU
# with N. Hashes, not the strings: the logs keep no copy of every token (~0.3 KiB each of ACK's, one
# per Trigger), and a registration is one insertion into a set (a copy-on-write frozenset made 10,000
# registrations quadratic). A window of a line whose hash is registered is scrubbed: a collision of
# the 64-bit string hash can only scrub an innocent substring, never let a secret through.
_by_length: dict[int, set[int]] = {}
_lock = threading.Lock()


def register_secret(*values: str | None) -> None:
    fresh = [v for v in values if v and len(v) >= 6]
    if not fresh:
        return
    with _lock:
        for v in fresh:
            _by_length.setdefault(len(v), set()).add(hash(v))


def scrub(text: str) -> str:
    """`text` with every registered secret (longest first where they overlap) and every token shape
    replaced by ***."""
    spans: list[tuple[int, int]] = []
    with _lock:
        buckets = sorted(_by_length.items(), reverse=True)
    for n, bucket in buckets:  # read without the lock: a membership test sees a set whole
        for i in range(len(text) - n + 1):
            if hash(text[i : i + n]) in bucket:
                spans.append((i, i + n))
    if spans:
        spans.sort(key=lambda sp: (sp[0], -sp[1]))
        out, at = [], 0
        for start, end in spans:
            if end <= at:
                continue  # inside a secret already scrubbed
            out.append(text[at:start])  # "" where it starts inside the one before
            out.append("***")
            at = max(at, end)
        out.append(text[at:])
        text = "".join(out)
    return redact(text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered later from exc_info; render and scrub them now instead.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _trigger_of(record: logging.LogRecord) -> str | None:
    ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers attach this
    if isinstance(ref, dict) and ref.get("name"):
        return f"{ref.get('namespace')}/{ref['name']}"
    trigger = getattr(record, "trigger", None)
    return str(trigger) if trigger else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trigger = _trigger_of(record)
        if trigger:
            out["trigger"] = trigger
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        trigger = _trigger_of(record)
        text = super().format(record)
        # kopf's object loggers already put "[ns/name]" in the message.
        if trigger and f"[{trigger}]" not in text and trigger not in record.getMessage():
            text = text.replace(": ", f": [{trigger}] ", 1)
        return text


def configure(fmt: str = "text", level: str = "info", stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Request-level debug lines of HTTP libraries add nothing an operator needs and may carry URLs.
    for noisy in ("urllib3", "kubernetes.client.rest", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # kopf says "Handler ... succeeded" at INFO for every watch event of every Trigger (three a
    # create, three quarters of the log at 1,000 Triggers), beside our own lines that say what was
    # done. Its warnings and errors still show; at debug, everything does.
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.setLevel(root.level if root.level <= logging.DEBUG else max(logging.WARNING, root.level))
    return handler
