"""``cocoon-operator model build`` against the stand-in Hub: the token, the file listing,
the commit, the exit statuses. (Byte identity with COCOON's script: test_reference_identity.)"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from tests.unit.models.hubstub import Hub, Repo, serving

NAME = "gated-org/secret-model"
COMMIT = "c0ffee" + "0" * 34
TOKEN = "hf_sEcReTtOkEn0123456789"
FILES = {"config.json": b"{}\n", "a/b/c.bin": b"\x00" * 3000, "a/d.txt": b"d\n", "e.md": b"e\n"}


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))}, token=TOKEN)) as hub:
        yield hub


def build(hub: Hub, spec: str, out: Path, *extra: str) -> int:
    return main(["model", "build", spec, "--out", str(out), "--endpoint", hub.url, *extra])


def listing(tar: str) -> list[str]:
    out = subprocess.run(["tar", "-tf", tar], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.endswith("/")]


def test_a_gated_model_is_fetched_with_the_token_from_the_file_and_never_prints_it(
    hub: Hub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    secret = tmp_path / "hf_token"
    secret.write_text(TOKEN + "\n")
    caplog.set_level(logging.DEBUG)
    assert build(hub, f"{NAME}@{COMMIT}", tmp_path / "out", "--token-file", str(secret)) == 0
    printed = capsys.readouterr()
    model_id, tar = printed.out.strip().splitlines()[-1].split(" ")
    assert model_id.startswith(f"{NAME}@{COMMIT}:") and len(model_id.rsplit(":", 1)[1]) == 64
    assert tar == str(tmp_path / "out" / "gated_org_secret_model.tar")
    assert Path(tar + ".verity").is_file()
    assert sorted(listing(tar)) == sorted(f"./{p}" for p in FILES)
    assert set(hub.seen_authorization) == {f"Bearer {TOKEN}"}
    assert TOKEN not in printed.out + printed.err + caplog.text


def test_a_refused_token_fails_with_the_status_and_without_the_token(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "hf_wRoNgToKeN987654321"
    monkeypatch.setenv("HF_TOKEN", wrong)
    assert build(hub, f"{NAME}@{COMMIT}", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "gated" in err
    assert wrong not in err
    assert hub.seen_authorization == [f"Bearer {wrong}"]
    assert not list((tmp_path / "out").glob("*.tar*"))


def test_without_a_commit_the_current_one_is_built_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(Hub({NAME: Repo(COMMIT, dict(FILES))})) as hub:
        assert build(hub, NAME, tmp_path / "out") == 0
        assert hub.requests[0] == f"GET /api/models/{NAME}"
    assert capsys.readouterr().out.split(" ")[0].startswith(f"{NAME}@{COMMIT}:")


def test_a_repository_info_without_files_is_listed_through_the_paged_tree_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(COMMIT, dict(FILES), siblings_listed=False)
    with serving(Hub({NAME: repo}, page_size=2)) as hub:
        assert build(hub, f"{NAME}@{COMMIT}", tmp_path / "out") == 0
        pages = [r for r in hub.requests if "/tree/" in r]
    assert len(pages) == 3  # 2 directories and 4 files, 2 a page
    tar = capsys.readouterr().out.strip().split(" ")[1]
    assert sorted(listing(tar)) == sorted(f"./{p}" for p in FILES)


def test_a_malformed_spec_exits_2_before_any_request(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(hub, f"{NAME}@main", tmp_path / "out") == 2
    assert "commit 'main' is not a 40-hex commit id" in capsys.readouterr().err
    assert hub.requests == []


def test_an_unknown_commit_fails_naming_the_hubs_answer(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert build(hub, f"{NAME}@{'d' * 40}", tmp_path / "out") == 1
    assert "HTTP 404 (RevisionNotFound)" in capsys.readouterr().err
