"""``cocoon.network/v1alpha1`` CocoonWorkerPool: many identical workers, rolled safely.

A pool is to CocoonWorkers what a ReplicaSet with a Deployment's rollout is to
pods: ``replicas`` workers from ``template``, replaced at most
``maxUnavailable`` at a time, with up to ``maxSurge`` extra workers so a Ready
worker is removed only once its replacement is Ready. Each CocoonWorker stays
the unit of truth (its own status, wallet and finalizer); the pool only
creates and deletes them.

Pool workers get their node wallet key from a Secret the operator generates
per worker (``<worker>-wallet``). Those Secrets carry no ownerReference on
purpose: a wallet key may hold money, so deleting a pool never deletes keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field

from cocoon_operator.api.v1alpha1 import (
    Condition,
    Model,
    WorkerSpecBase,
    _cel,
    validations,
)

POOL_KIND: Final = "CocoonWorkerPool"
POOL_PLURAL: Final = "cocoonworkerpools"
MAX_REPLICAS: Final = 5000


class PoolWorkerSpec(WorkerSpecBase):
    """A worker spec in a pool template: no node wallet key, each worker gets its own."""


class WorkerTemplate(Model):
    labels: Annotated[dict[str, str], Field(max_length=32)] = {}  # noqa: RUF012 - pydantic copies
    spec: PoolWorkerSpec


class RolloutStrategy(Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            _cel(
                "self.maxUnavailable > 0 || self.maxSurge > 0",
                "spec.strategy: maxUnavailable and maxSurge cannot both be 0",
                ".maxUnavailable",
            )
        )
    )

    max_unavailable: Annotated[
        int, Field(ge=0, le=MAX_REPLICAS, description="workers that may be not Ready during a roll")
    ] = 1
    max_surge: Annotated[
        int, Field(ge=0, le=MAX_REPLICAS, description="extra workers a roll may create")
    ] = 0


class CocoonWorkerPoolSpec(Model):
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
    template: WorkerTemplate
    strategy: RolloutStrategy = RolloutStrategy()
    paused: Annotated[bool, Field(description="stop creating and deleting workers")] = False


class CocoonWorkerPoolStatus(Model):
    replicas: int = 0
    selector: Annotated[
        str | None,
        Field(
            default=None,
            description="the label selector of the pool's CocoonWorkers (the scale subresource's)",
        ),
    ] = None
    ready_replicas: int = 0
    updated_replicas: int = 0
    unavailable_replicas: int = 0
    update_revision: str | None = None
    observed_generation: Annotated[
        int | None, Field(default=None, json_schema_extra={"format": "int64"})
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = []  # noqa: RUF012 - pydantic copies defaults


class CocoonWorkerPool(Model):
    model_config = ConfigDict(extra="ignore")

    spec: CocoonWorkerPoolSpec
    status: CocoonWorkerPoolStatus = CocoonWorkerPoolStatus()


POOL_PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Updated", "type": "integer", "jsonPath": ".status.updatedReplicas"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.template.spec.model.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
