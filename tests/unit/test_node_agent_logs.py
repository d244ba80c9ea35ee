"""The node agent's log lines (cocoon_operator.logformat) in the operator's formats,
so one log pipeline reads both: kopf's field names in JSON, its FULL layout in text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cocoon_operator import logformat
from cocoon_operator.cli import build_parser


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    logger = logging.getLogger()
    saved = (list(logger.handlers), logger.level)
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])


def _configure(log_format: str, level: str) -> io.StringIO:
    handler = logformat.configure(log_format, level)
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    return out


def test_json_has_the_operators_fields_and_the_traceback(root: logging.Logger) -> None:
    out = _configure("json", "info")
    log = logging.getLogger("cocoon_operator.nodeagent")
    log.debug("not at info")
    log.warning("node report for %s not published: %s", "n1", "409 Conflict")
    try:
        raise OSError("no /dev/kvm")
    except OSError:
        log.exception("probe failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "node report for n1 not published: 409 Conflict"
    assert first["severity"] == "warn"  # kopf's word
    assert first["logger"] == "cocoon_operator.nodeagent"
    assert first["timestamp"].endswith("+00:00")
    assert second["severity"] == "error"
    assert "OSError: no /dev/kvm" in second["exc_info"]


def test_full_is_kopfs_layout_and_plain_the_message(root: logging.Logger) -> None:
    import kopf  # noqa: PLC0415 - only to compare with kopf's own layout

    assert kopf.LogFormat.FULL.value == logformat.FULL
    out = _configure("plain", "debug")
    logging.getLogger("x").debug("hello %s", "there")
    assert out.getvalue() == "hello there\n"


def test_node_agent_flags_and_refusals() -> None:
    args = build_parser().parse_args(["node-agent", "--log-format=json", "--log-level=warning"])
    assert (args.log_format, args.log_level) == ("json", "warning")
    assert build_parser().parse_args(["node-agent"]).log_format == "full"
    with pytest.raises(ValueError, match="log level 'loud'"):
        logformat.configure("json", "loud")
    with pytest.raises(ValueError, match="log format 'xml'"):
        logformat.formatter("xml")
