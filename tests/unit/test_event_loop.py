"""The operator's event loop: uvloop unless ``--event-loop asyncio`` asks for Python's own
(cli.py ``event_loop_runner``; why, in docs/bench.md)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from cocoon_operator.cli import build_parser, event_loop_runner


async def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_the_operator_runs_on_uvloop_unless_told_otherwise() -> None:
    args = build_parser().parse_args(["run"])
    assert args.event_loop == "uvloop"
    with event_loop_runner(args.event_loop) as runner:
        assert isinstance(runner.run(_loop()), uvloop.Loop)


def test_asyncio_runs_pythons_own_loop() -> None:
    args = build_parser().parse_args(["run", "--event-loop", "asyncio"])
    with event_loop_runner(args.event_loop) as runner:
        loop = runner.run(_loop())
    assert isinstance(loop, asyncio.BaseEventLoop) and not isinstance(loop, uvloop.Loop)


def test_another_loop_is_refused_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--event-loop", "trio"])
    assert "--event-loop" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--event-loop: 'trio'"):
        event_loop_runner("trio")
