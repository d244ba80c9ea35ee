"""Log lines of the processes that do not run kopf (the node agent), in the operator's formats.

``cocoon-operator run`` formats with kopf (``cli.configure_logging``); the node
agent should not import kopf for its log lines, so this module writes the same
three formats: ``plain`` (the message), ``full`` (kopf's ``LogFormat.FULL``
layout: ``[time] logger [LEVEL] message``) and ``json`` (one object a line with
the field names of kopf's JSON: ``message``, ``timestamp``, ``severity``, and
``logger`` as the operator adds it; a traceback under ``exc_info``), so one log
pipeline reads both.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

LOG_FORMATS = ("plain", "full", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
FULL = "[%(asctime)s] %(name)-20.20s [%(levelname)-8.8s] %(message)s"


def severity(levelno: int) -> str:
    """kopf's severity words (its ObjectJsonFormatter)."""
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    return "error" if levelno <= logging.ERROR else "fatal"


class JsonFormatter(logging.Formatter):
    """One JSON object a line; the message formatted, as text formats have it."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "message": record.getMessage(),
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "severity": severity(record.levelno),
            "logger": record.name,
        }
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "full":
        return logging.Formatter(FULL)
    if log_format == "plain":
        return logging.Formatter("%(message)s")
    raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")


def configure(log_format: str, log_level: str) -> logging.Handler:
    """Every record from ``log_level`` up to stderr in ``log_format``; the handler."""
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log level {log_level!r}: one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level.upper())
    return handler
