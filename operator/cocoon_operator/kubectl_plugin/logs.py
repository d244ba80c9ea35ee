"""Pure parts of ``kubectl cocoon logs``: which pods, which lines, which options.

The operator writes one of three formats (``--log-format``, see
:func:`cocoon_operator.cli.configure_logging`): with ``json`` a line about a
resource carries kopf's ``object`` field (its apiVersion, kind, namespace, name
and uid), so the lines about a worker are exactly those whose ``object`` names
it, or (for lines about its launcher pod) whose message names the worker; text
formats start such a line with ``[namespace/name]``, and otherwise only the
name in the message tells, so plain lines are matched by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from cocoon_operator.api.labels import COMMON_LABELS, LABEL_WORKER

#: The chart's release namespace in the documented install (docs/deploy.md).
DEFAULT_OPERATOR_NAMESPACE: Final = "cocoon-system"
#: The chart's selector labels of the operator pods (charts/cocoon-operator/templates/_helpers.tpl).
DEFAULT_OPERATOR_SELECTOR: Final = "app.kubernetes.io/name=cocoon-operator"
#: The operator's container in the chart's Deployment.
OPERATOR_CONTAINER: Final = "operator"

_DURATION: Final = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def launcher_selector(worker: str) -> str:
    """The label selector of a worker's launcher pods (the labels the operator sets on them)."""
    labels = {**COMMON_LABELS, LABEL_WORKER: worker}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_since(text: str) -> int:
    """A kubectl duration (``30s``, ``5m``, ``1h30m``, ``2d``) in seconds; ValueError if not one."""
    value = text.strip()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration such as 30s, 5m, 1h30m: {text!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


def _names_worker(text: str, namespace: str, name: str) -> bool:
    """``[namespace/name]``, ``namespace/name`` or the name as a whole word; not
    ``other-namespace/name``, nor a longer name (``w01``, ``w0-x``) that starts with it."""
    pattern = rf"(?<![\w./-])(?:([\w.-]+)/)?{re.escape(name)}(?![\w.-])"
    return any(m.group(1) in (None, namespace) for m in re.finditer(pattern, text))


@dataclass(frozen=True)
class LineFilter:
    """Keeps the operator's lines about one worker, whatever format they are in."""

    namespace: str
    name: str

    def keeps(self, line: str) -> bool:
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                doc = json.loads(stripped)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                ref = doc.get("object")
                if (
                    isinstance(ref, dict)
                    and ref.get("name") == self.name
                    and ref.get("namespace", self.namespace) == self.namespace
                ):
                    return True
                # A line about another object (the worker's launcher pod) that names it.
                return _names_worker(str(doc.get("message", "")), self.namespace, self.name)
        return _names_worker(line, self.namespace, self.name)


def prefix(pod: str, container: str | None) -> str:
    """What each printed line starts with, as ``kubectl logs --prefix`` does."""
    return f"[pod/{pod}/{container}] " if container else f"[pod/{pod}] "


def last(lines: list[str], tail: int) -> list[str]:
    """The last ``tail`` lines (all of them when ``tail`` is negative)."""
    if tail < 0:
        return lines
    return lines[len(lines) - tail :] if tail else []
