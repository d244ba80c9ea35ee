"""The ``cocoon-operator`` command fails with one line naming the command and the
cause, never a traceback (unless ``--traceback``); ``--help`` shows defaults and
every option says what it is."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from cocoon_operator.cli import build_parser, main
from cocoon_operator.kubectl_plugin.cli import build_parser as plugin_parser
from tests.unit.helpers import serve, write_kubeconfig


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_nodes_against_an_unreachable_apiserver_is_one_line_naming_the_server(
    tmp_path: Path,
) -> None:
    port = _closed_port()
    config = write_kubeconfig(tmp_path / "kubeconfig", {"server": f"https://127.0.0.1:{port}"}, {})
    # The installed command, as an admin runs it from a laptop.
    done = subprocess.run(
        [sys.executable, "-m", "cocoon_operator", "nodes", "--kubeconfig", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"cocoon-operator nodes: cannot reach the apiserver at https://127.0.0.1:{port}: "
    )
    assert "Traceback" not in done.stderr


def test_a_missing_kubeconfig_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["nodes", "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"cocoon-operator nodes: kubeconfig {missing}: [Errno 2] No such file or directory:"
        f" '{missing}'"
    ]


async def _forbidding(request: web.Request) -> web.Response:
    status = {
        "kind": "Status",
        "code": 403,
        "message": 'nodes is forbidden: User "alice" cannot list resource "nodes"\nat the'
        " cluster scope",
    }
    return web.json_response(status, status=403)


@pytest.fixture
async def forbidding_apiserver() -> Iterator[str]:  # type: ignore[misc]
    runner, port = await serve(_forbidding)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_an_apiserver_refusal_is_one_line_with_its_message(
    tmp_path: Path, forbidding_apiserver: str
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", {"server": forbidding_apiserver}, {})
    done = await _run_cli("nodes", "--kubeconfig", str(config))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"cocoon-operator nodes: {forbidding_apiserver}: 403 Forbidden: nodes is forbidden:"
        ' User "alice" cannot list resource "nodes" at the cluster scope'
    ]


async def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import asyncio  # noqa: PLC0415

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cocoon_operator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


def test_traceback_flag_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "cocoon_operator", "--traceback", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"KUBECONFIG": str(missing), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "KubeconfigError" in done.stderr


def _options(
    parser: argparse.ArgumentParser, path: list[str]
) -> Iterator[tuple[str, argparse.Action, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, [*path, name])
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield " ".join(path), action, parser


@pytest.mark.parametrize(
    "build", [build_parser, plugin_parser], ids=["cocoon-operator", "kubectl-cocoon"]
)
def test_every_option_and_argument_says_what_it_is(build: object) -> None:
    assert callable(build)
    undocumented = [
        f"{where} {'/'.join(a.option_strings) or a.dest}"
        for where, a, _ in _options(build(), [])
        if not a.help
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    "build", [build_parser, plugin_parser], ids=["cocoon-operator", "kubectl-cocoon"]
)
def test_help_shows_every_default_worth_showing(build: object) -> None:
    assert callable(build)
    for where, action, parser in _options(build(), []):
        default = action.default
        if not action.option_strings or default is None or default is False or default == []:
            continue
        # Whitespace dropped: help lines wrap, at hyphens too.
        text = "".join(parser.format_help().split())
        told = "".join(f"(default: {action.default})".split())
        shown = told in text or "default" in (action.help or "")
        assert shown, f"{where} {action.option_strings}: default {action.default!r} not in --help"


def test_run_help_shows_the_defaults_of_its_intervals() -> None:
    run = next(
        child
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, child in action.choices.items()
        if name == "run"
    )
    text = " ".join(run.format_help().split())
    assert "(default: 30.0)" in text  # --chain-check-seconds
    assert "(default: full)" in text  # --log-format
    assert "(default: 64)" in text  # --max-concurrent-probes
    assert "(0: off) (default: 0)" in text  # --metrics-port
