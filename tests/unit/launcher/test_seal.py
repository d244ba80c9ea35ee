"""``cocoon-operator seal-server``: enclave checked before start, readiness from what is known."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from cocoon_operator.launcher._plan import LaunchError
from cocoon_operator.launcher._seal import (
    ENCLAVE_CREATED,
    Readiness,
    check_binaries,
    seal_argv,
    supervise,
)
from cocoon_operator.simulator._release import seal_digests, write_release

# What seal-server.cpp logs (lines 291 and 49), then it serves until stopped.
FAKE_SERVER = """#!/bin/sh
echo "seal-server port=$4 enclave='$2'"
{created}
while [ ! -e "{stop}" ]; do sleep 0.05; done
exit {status}
"""


def fake_server(release: Path, tmp: Path, *, created: bool = True, status: int = 0) -> Path:
    stop = tmp / "stop"
    line = f"echo \"[INFO] {ENCLAVE_CREATED} path='$2' quote_size=4578\"" if created else ""
    server = release / "bin" / "seal-server"
    server.write_text(FAKE_SERVER.format(created=line, stop=stop, status=status))
    server.chmod(0o755)
    return stop


def run_in_thread(release: Path, readiness: Readiness) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(supervise(seal_argv(release, 12345), readiness, poll=0.05)),
        daemon=True,
    )
    thread.start()
    return thread, result


def wait_for(predicate: object, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_the_release_enclave_with_the_spec_digest_passes(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r")
    digests = seal_digests()
    check_binaries(release, digests["enclave"], digests["sealServer"])


def test_another_enclave_is_refused_naming_the_file_and_both_digests(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r")
    (release / "bin" / "enclave.signed.so").write_bytes(b"another enclave")
    got = hashlib.sha256(b"another enclave").hexdigest()
    with pytest.raises(LaunchError, match=f"bin/enclave.signed.so .* has sha256 {got}"):
        check_binaries(release, seal_digests()["enclave"], None)


def test_a_missing_seal_server_is_refused(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r")
    (release / "bin" / "seal-server").unlink()
    with pytest.raises(LaunchError, match="bin/seal-server not found"):
        check_binaries(release, seal_digests()["enclave"], None)


def test_the_command_refuses_to_start_a_wrong_enclave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path / "r")
    ready = tmp_path / "ready"
    code = main(
        [
            "seal-server",
            f"--release={release}",
            f"--expect-enclave-sha256={'0' * 64}",
            f"--ready-file={ready}",
        ]
    )
    assert code == 1
    assert "enclave.signed.so" in capsys.readouterr().err
    assert not ready.exists()


def test_seal_argv_is_the_readmes_command_with_the_port(tmp_path: Path) -> None:
    assert seal_argv(tmp_path, 12345) == [
        f"{tmp_path}/bin/seal-server",
        "--enclave-path",
        f"{tmp_path}/bin/enclave.signed.so",
        "--port",
        "12345",
    ]


def test_ready_once_the_enclave_line_is_logged_and_the_port_answers_cleared_on_exit(
    tmp_path: Path,
) -> None:
    release = write_release(tmp_path / "r")
    stop = fake_server(release, tmp_path, status=3)
    answers: list[bool] = [False]
    readiness = Readiness(
        tmp_path / "run" / "ready", 12345, lambda cid, port: None if answers[0] else "refused"
    )
    thread, result = run_in_thread(release, readiness)
    assert wait_for(lambda: readiness.enclave_created)
    time.sleep(0.2)
    assert not readiness.ready_file.exists()  # enclave up, listener not answering yet
    answers[0] = True
    assert wait_for(readiness.ready_file.exists)
    stop.touch()
    thread.join(10)
    assert result == [3]  # the server's own exit status
    assert not readiness.ready_file.exists()


def test_never_ready_without_the_enclave_line_even_if_something_answers(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r")
    stop = fake_server(release, tmp_path, created=False)
    readiness = Readiness(tmp_path / "ready", 12345, lambda cid, port: None)
    thread, result = run_in_thread(release, readiness)
    time.sleep(0.5)
    assert not readiness.ready_file.exists()
    stop.touch()
    thread.join(10)
    assert result == [0]
    assert not readiness.enclave_created


def test_the_enclave_line_is_seen_when_it_arrives_in_one_write_with_the_line_before(
    tmp_path: Path,
) -> None:
    # seal-server logs its start and the enclave line together, then waits for
    # guests: a buffered readline after select kept the second line unseen.
    release = write_release(tmp_path / "r")
    stop = tmp_path / "stop"
    server = release / "bin" / "seal-server"
    server.write_text(
        "#!/bin/sh\n"
        f"printf 'starting\\n[INFO] {ENCLAVE_CREATED} path=x quote_size=1\\n'\n"
        f'while [ ! -e "{stop}" ]; do sleep 0.05; done\n'
    )
    server.chmod(0o755)
    readiness = Readiness(tmp_path / "run" / "ready", 12345, lambda cid, port: None)
    thread, result = run_in_thread(release, readiness)
    assert wait_for(lambda: readiness.enclave_created, seconds=10)
    stop.touch()
    thread.join(10)
    assert result == [0]
