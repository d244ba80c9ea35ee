"""Redaction for ``kubectl cocoon report``: what could be secret material never leaves.

The report never reads a Secret (the surest redaction), but secret material can
still sit in objects it does read: a literal ``env`` value someone set instead of
a ``secretKeyRef``, an operator flag given a token on the command line, an
annotation a tool left (``last-applied-configuration`` copies whatever was
applied), a key written into a worker's INI. COCOON's own secrets are the node
wallet key and the Hugging Face token (``node_wallet_key``, ``hf_token``:
``reference/cocoon/scripts/cocoon-launch:79,89``; the launcher hides both when
it prints its configuration, ``:146``); the operator adds its control key,
treasury and root-owner wallets and the TON API key.

Rules, applied to every object before it is written to the bundle:

- an annotation whose name looks secret (:data:`SECRET_NAME`), and every
  ``kubectl.kubernetes.io/last-applied-configuration``, is replaced by
  :data:`REDACTED`;
- a string field whose key looks secret is replaced, except reference fields
  (:data:`REFERENCE_KEYS`: ``secretKeyRef``'s ``name``/``key``, label keys in
  selectors, ``topologyKey``), which name where a secret is, not what it is;
- an ``env`` entry whose ``name`` looks secret has its ``value`` replaced
  (``valueFrom`` is kept: it is a reference);
- a ``--flag=value`` or ``--flag value`` argument whose flag looks secret has
  the value replaced, unless the flag names a file or a Secret (``--*-file``,
  ``--*-secret``: where the material is, not the material);
- in any string, a PEM private key block, and an INI or ``KEY=value`` line
  whose key looks secret (a ``node_wallet_key = ...`` in a worker's INI).

Names that point at material (``*_file``, ``*_path``, ``*Ref``, ``*Name``) are
kept, so a bundle still shows where each secret comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

REDACTED: Final = "<redacted>"

#: The rules above in short, written into every bundle's manifest.
RULES: Final = (
    "Secrets are never read",
    "annotations with a secret-looking name, and kubectl's last-applied-configuration",
    "string fields with a secret-looking key (not references: secretKeyRef, selectors' keys)",
    "env values whose variable name looks secret (valueFrom references are kept)",
    "values of secret-looking command-line flags (not --*-file, --*-secret: pointers)",
    "PEM private key blocks and secret-looking KEY=value / key: value lines in any text",
)

#: A name (annotation, field, flag, variable, INI key) that may hold secret material.
SECRET_NAME: Final = re.compile(
    r"(?i)(key|token|passw(or)?d|mnemonic|secret|credential|private|seed|auth|cookie)"
)
#: Names that say where the material is (a file, a path, a reference), not what it is.
POINTER_NAME: Final = re.compile(
    r"(?i)([-_.]?(file|path|dir|ref|name|names|id|hash|secret))$|^(secret[-_]?name)$"
)
#: Field keys whose values are references or label keys, never material.
REFERENCE_KEYS: Final = frozenset(
    {"key", "topologyKey", "secretKeyRef", "secretRef", "secretName", "configMapKeyRef"}
)
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"

_PEM: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
# `name = value`, `name: value` or `NAME=value` at the start of a line (INI, env files).
_ASSIGNMENT: Final = re.compile(r"(?m)^(\s*)([A-Za-z_][\w.-]*)(\s*[=:]\s*)(\S.*)$")
_FLAG: Final = re.compile(r"^(--?[A-Za-z0-9][\w-]*)(=)(.*)$", re.S)


def secret_name(name: str) -> bool:
    """Whether a name may hold secret material (and is not a pointer to it)."""
    return bool(SECRET_NAME.search(name)) and not POINTER_NAME.search(name)


def redact_text(text: str) -> str:
    """PEM private keys and secret-looking assignments in free text replaced."""
    text = _PEM.sub(REDACTED, text)

    def line(match: re.Match[str]) -> str:
        indent, name, sep, _ = match.groups()
        return f"{indent}{name}{sep}{REDACTED}" if secret_name(name) else match.group(0)

    return _ASSIGNMENT.sub(line, text)


def redact_args(args: Sequence[Any]) -> list[Any]:
    """Command-line arguments with the values of secret-looking flags replaced."""
    out: list[Any] = []
    hide_next = False
    for arg in args:
        if not isinstance(arg, str):
            out.append(arg)
            continue
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        match = _FLAG.match(arg)
        if match is not None:
            flag = match.group(1).lstrip("-")
            out.append(f"{match.group(1)}={REDACTED}" if secret_name(flag) else redact_text(arg))
            continue
        if arg.startswith("-") and secret_name(arg.lstrip("-")):
            hide_next = True
        out.append(redact_text(arg))
    return out


def _redact_env(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: redact_object(v) for k, v in entry.items() if k != "value"}
    if "value" in entry:
        name = str(entry.get("name") or "")
        out["value"] = REDACTED if secret_name(name) else redact_object(entry["value"])
    return out


def _redact_annotations(annotations: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in annotations.items():
        # The annotation's own name, without its prefix (`cocoon.network/control-key`).
        short = name.rsplit("/", 1)[-1]
        if name == LAST_APPLIED or secret_name(short):
            out[name] = REDACTED
        else:
            out[name] = redact_object(value)
    return out


def redact_object(value: Any) -> Any:
    """A copy of a JSON-like value (an object as the apiserver returns it) with the
    rules of this module applied; the input is left unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for raw_key, item in value.items():
            key = str(raw_key)
            if key == "annotations" and isinstance(item, Mapping):
                out[key] = _redact_annotations(item)
            elif key == "env" and isinstance(item, list):
                out[key] = [
                    _redact_env(e) if isinstance(e, Mapping) else redact_object(e) for e in item
                ]
            elif key in ("args", "command") and isinstance(item, list):
                out[key] = redact_args(item)
            elif isinstance(item, str) and key not in REFERENCE_KEYS and secret_name(key):
                out[key] = REDACTED
            else:
                out[key] = redact_object(item)
        return out
    if isinstance(value, list | tuple):
        return [redact_object(v) for v in value]
    return value
