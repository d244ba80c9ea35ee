"""Running COCOON's own ``scripts/build-model`` against the stand-in Hub.

The script builds under ``$REPO_ROOT`` (the directory above the script's own):
``reprodebian/venv`` for its virtualenv, ``reprodebian/models/NAME`` for the
download, ``images/NAME.tar*`` for the outputs (build-model:12-15, 56-60, 78,
92-94). A temporary directory with a symbolic link to the read-only script in
its ``scripts/`` makes that root a scratch directory, and ``reprodebian/venv`` a
link to a virtualenv cached in ``~/.cache/cocoon-operator/`` keeps re-runs from
reinstalling huggingface_hub. The script then only activates it and runs
``pip install huggingface_hub==1.0.1``, which finds it installed.

The cached virtualenv holds huggingface_hub 1.0.1, as the script installs it,
with one constraint the script lacks: typer-slim 0.20.0. huggingface_hub 1.0.1's
``hf`` command imports click without declaring it, relying on typer-slim to
bring it; typer-slim 0.22 and later no longer do, so on a clean machine today
the script's own ``pip install`` gives an ``hf`` that fails with
``ModuleNotFoundError: No module named 'click'``. 0.20.0 is the release current
when huggingface_hub 1.0.1 came out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REFERENCE = Path("/work/shared/reference/cocoon/scripts/build-model")
HUB_VERSION = "1.0.1"
CONSTRAINTS = ("typer-slim==0.20.0",)
VENV = Path.home() / ".cache" / "cocoon-operator" / f"build-model-venv-hf{HUB_VERSION}-typer0.20"


def reference_script() -> Path:
    """COCOON's script: ``$COCOON_REFERENCE`` (a checkout's root) or the shared reference copy."""
    root = os.environ.get("COCOON_REFERENCE")
    return Path(root) / "scripts" / "build-model" if root else REFERENCE


def reference_venv() -> Path:
    """The cached virtualenv for the script, created and filled from PyPI on first use."""
    ready = VENV / ".ready"
    if ready.exists():
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    python = shutil.which("python3") or "python3"  # the interpreter the script would use
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text("".join(f"{c}\n" for c in CONSTRAINTS))
    subprocess.run(
        [
            str(VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(constraints),
            f"huggingface_hub=={HUB_VERSION}",
        ],
        check=True,
    )
    ready.touch()
    return VENV


def run_reference(spec: str, endpoint: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Run build-model for ``spec`` with ``root`` as its repository root, against ``endpoint``."""
    (root / "scripts").mkdir(parents=True)
    script = root / "scripts" / "build-model"
    script.symlink_to(reference_script())
    (root / "reprodebian").mkdir()
    (root / "reprodebian" / "venv").symlink_to(reference_venv())
    hf_home = root / "hf-home"
    hf_home.mkdir()
    # huggingface_hub's CLI asks PyPI for a newer version once a day unless this is fresh.
    (hf_home / ".check_for_update_done").touch()
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CONSTRAINT": str(VENV / "constraints.txt"),
    }
    env.pop("HF_TOKEN", None)
    # Under umask 077 the script's download is owner-only (files 0600, directories
    # 0700), unlike this process's; the images still match only because tar's
    # --mode=go+u,go-w makes group and other bits copies of the owner's.
    argv = ["bash", "-c", 'umask 077 && exec "$0" "$@"', str(script), spec]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
