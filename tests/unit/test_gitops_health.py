"""The Argo CD health check shipped with the chart, run in a real Lua interpreter (lupa)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

SCRIPT = (
    Path(__file__).resolve().parents[2]
    / "charts"
    / "cocoon-operator"
    / "health"
    / "cocoonworker.lua"
).read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def worker(phase: str, **conds: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "phase": phase,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{t} {r}"}
                for t, (s, r) in conds.items()
            ],
        },
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"metadata": {}}, "Progressing"),
        (worker("Ready", Ready=("True", "Ready")), "Healthy"),
        (worker("Attesting", Ready=("False", "NotReady")), "Progressing"),
        (worker("Attesting", Attested=("False", "EvidenceRejected")), "Degraded"),
        (worker("Attesting", Attested=("False", "WorkerUnreachable")), "Progressing"),
        (worker("Registering", OnChainAllowed=("False", "NotListed")), "Degraded"),
        (worker("Paused"), "Suspended"),
        (worker("Failed", Ready=("False", "InvalidSpec")), "Degraded"),
        (
            {**worker("Ready", Ready=("True", "Ready")), "metadata": {"generation": 3}},
            "Progressing",
        ),
        (
            {"spec": {"replicas": 3}, "status": {"readyReplicas": 3, "updatedReplicas": 3}},
            "Healthy",
        ),
        (
            {"spec": {"replicas": 3}, "status": {"readyReplicas": 3, "updatedReplicas": 1}},
            "Progressing",
        ),
    ],
)
def test_health_follows_the_conditions(obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected, message
