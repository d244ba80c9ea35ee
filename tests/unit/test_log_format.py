"""`cocoon-operator run --log-format/--log-level`: kopf's formats on stderr, secrets
kept out in every format (the TON client's redaction of its API key, in JSON too)."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator

import kopf
import pytest

from cocoon_operator.cli import (
    RoutineTimerSuccesses,
    build_parser,
    configure_logging,
)
from cocoon_operator.ton.client import HttpRequest, HttpResponse, TonClient
from cocoon_operator.ton.errors import TonTransportError
from tests.support.ton import MockTransport

KEY = "sekret-api-key-0123456789"
BODY = {
    "apiVersion": "cocoon.network/v1alpha1",
    "kind": "CocoonWorker",
    "metadata": {"namespace": "fleet", "name": "w0001", "uid": "u1"},
}
ADDR = "0:83dfd552e63729b472fcbcc8c45ebcc6691702558b68ec7527e1ba403a0f31a8"


@pytest.fixture
def captured() -> Iterator[Iterator[tuple[str, str, io.StringIO]]]:
    """Configure logging as `run` does, with kopf's handler writing to a buffer;
    the root logger and kopf's object logger are restored afterwards."""
    root = logging.getLogger()
    objects = logging.getLogger("kopf.objects")
    saved = (list(root.handlers), root.level, list(objects.filters))

    def configure(log_format: str, log_level: str) -> io.StringIO:
        handler = configure_logging(log_format, log_level)
        buffer = io.StringIO()
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    yield configure  # type: ignore[misc]
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    objects.filters[:] = saved[2]


def _object_logger() -> kopf.LocalObjectLogger:
    return kopf.LocalObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())


async def _ton_error() -> TonTransportError:
    def refuse(_: HttpRequest) -> HttpResponse:
        raise OSError(f"proxy said: header X-API-Key: {KEY}")

    client = TonClient(
        "http://ton.invalid/api/v2/",
        api_key=KEY,
        transport=MockTransport(refuse),
        sleep=lambda _: _no_sleep(),
        rng=random.Random(1),
    )
    try:
        await client.get_address_balance(ADDR)
    except TonTransportError as exc:
        return exc
    raise AssertionError("the TON client did not fail")


async def _no_sleep() -> None:
    return None


def test_json_lines_carry_time_severity_logger_and_the_object(captured) -> None:  # type: ignore[no-untyped-def]
    out = captured("json", "info")
    _object_logger().warning("phase Starting -> Failed")
    logging.getLogger("cocoon_operator.handlers.chain").info("funded %s", "w0001")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["phase Starting -> Failed", "funded w0001"]
    first, second = lines
    assert first["severity"] == "warn"
    assert first["logger"] == "kopf.objects"
    assert first["object"]["namespace"] == "fleet"
    assert first["object"]["name"] == "w0001"
    assert second["severity"] == "info"
    assert second["logger"] == "cocoon_operator.handlers.chain"
    assert "object" not in second
    assert all(line["timestamp"].startswith("20") for line in lines)


def test_full_lines_name_the_level_the_logger_and_the_object(captured) -> None:  # type: ignore[no-untyped-def]
    out = captured("full", "info")
    _object_logger().warning("phase Starting -> Failed")
    (line,) = out.getvalue().splitlines()
    assert "[WARNING " in line
    assert "kopf.objects" in line
    assert line.endswith("[fleet/w0001] phase Starting -> Failed")


def test_plain_lines_are_the_message_with_the_object(captured) -> None:  # type: ignore[no-untyped-def]
    out = captured("plain", "info")
    _object_logger().warning("phase Starting -> Failed")
    assert out.getvalue() == "[fleet/w0001] phase Starting -> Failed\n"


def test_the_level_drops_what_is_less_severe(captured) -> None:  # type: ignore[no-untyped-def]
    out = captured("json", "warning")
    log = logging.getLogger("cocoon_operator.handlers.worker")
    log.info("routine")
    log.warning("worth a look")
    assert [json.loads(x)["message"] for x in out.getvalue().splitlines()] == ["worth a look"]


def test_timer_successes_are_kept_only_at_debug(captured) -> None:  # type: ignore[no-untyped-def]
    captured("json", "info")
    objects = logging.getLogger("kopf.objects")
    assert sum(isinstance(f, RoutineTimerSuccesses) for f in objects.filters) == 1
    captured("json", "info")  # configured twice: still one filter
    assert sum(isinstance(f, RoutineTimerSuccesses) for f in objects.filters) == 1
    captured("json", "debug")
    assert not any(isinstance(f, RoutineTimerSuccesses) for f in objects.filters)


@pytest.mark.parametrize("log_format", ["json", "full", "plain"])
async def test_a_ton_api_key_never_reaches_the_log_in_any_format(captured, log_format: str) -> None:  # type: ignore[no-untyped-def]
    error = await _ton_error()
    out = captured(log_format, "debug")
    log = logging.getLogger("cocoon_operator.handlers.chain")
    # As the chain step reports it, and with the traceback a crash would log.
    log.warning("funding failed: %s: %s", type(error).__name__, error)
    try:
        raise error
    except TonTransportError:
        log.exception("chain step failed")
    text = out.getvalue()
    assert KEY not in text
    assert "***" in text  # the key was there, replaced
    if log_format == "json":
        records = [json.loads(line) for line in text.splitlines()]
        assert "exc_info" in records[-1]  # the traceback is a field, redacted as well
        assert KEY not in json.dumps(records)


def test_run_flags_default_to_full_at_info_and_refuse_unknown_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["run"])
    assert (args.log_format, args.log_level) == ("full", "info")
    args = build_parser().parse_args(["run", "--log-format=json", "--log-level=warning"])
    assert (args.log_format, args.log_level) == ("json", "warning")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--log-format=yaml"])
    assert "--log-format: invalid choice: 'yaml'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="log level 'loud'"):
        configure_logging("json", "loud")
