"""kopf handlers: translate kopf's calls into admission passes and API writes, nothing more.

One timer per EnergyBudget runs its admission pass every second; passes over one budget are
serialized by an asyncio.Lock (and by kopf, which never overlaps one object's timer runs). The
timer reads LeptonJobs, Jobs and pods from kopf indices fed by watches (no re-listing every
second); the budget is read fresh each pass, and the deletion handlers list afresh. A
LeptonJob gets its suspended Job as soon as it is created, so a user sees it at once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from lepton.api.jobspec import build_job
from lepton.core.names import GROUP, LABEL_JOB_UID, VERSION

from .admission import (
    FINAL_STATES,
    EventNote,
    OperatorConfig,
    PassMemory,
    Snapshot,
    StillSettlingError,
    reconcile_budget,
)
from .kube import CONFLICT_MARK, ConflictError, KubeApi
from .metrics import BudgetMetrics

log = logging.getLogger("lepton.operator")
registry = kopf.OperatorRegistry()


@dataclass
class OperatorMemo:
    """What every handler shares (passed to kopf as its memo)."""

    api: KubeApi
    config: OperatorConfig
    metrics: BudgetMetrics = field(default_factory=BudgetMetrics)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    memories: dict[tuple[str, str], PassMemory] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())

    def memory(self, namespace: str, name: str) -> PassMemory:
        return self.memories.setdefault((namespace, name), PassMemory())


def _post(notes: list[EventNote]) -> None:
    for note in notes:
        try:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, note.obj)),
                type=note.type,
                reason=note.reason,
                message=note.message[:1000],
            )
        except Exception as error:  # events are best effort
            log.debug("event not posted: %s", error)


class QuietConflicts(logging.Filter):
    """A pass that lost a write race is retried (kopf.TemporaryError): expected, so neither
    logged nor posted as an Event unless the operator is verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("failed temporarily" in message and CONFLICT_MARK in message)


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Standalone (no peering), quiet, and events only from WARNING up from kopf itself."""
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    if not logging.getLogger("lepton.operator").isEnabledFor(logging.DEBUG):
        logging.getLogger("kopf.objects").addFilter(QuietConflicts())
    settings.watching.server_timeout = 300


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in with the pod's service account, else $KUBECONFIG (read now, not at import)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    return info


# kopf's finalizer on every object it handles: a budget being deleted that still has it has
# its closing pass to come.
BUDGET_FINALIZER = kopf.OperatorSettings().persistence.finalizer
# A pass that lost a write race is retried this soon, on fresh state.
CONFLICT_RETRY_SECONDS = 1.0


@kopf.index(GROUP, VERSION, "leptonjobs", registry=registry)
def lepton_jobs_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Every LeptonJob, by namespace (the watch cache the passes read instead of listing)."""
    return {namespace: copy.deepcopy(dict(body))}


@kopf.index("batch", "v1", "jobs", labels={LABEL_JOB_UID: kopf.PRESENT}, registry=registry)
def jobs_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Every Lepton-managed Job, by namespace."""
    return {namespace: copy.deepcopy(dict(body))}


@kopf.index("v1", "pods", labels={LABEL_JOB_UID: kopf.PRESENT}, registry=registry)
def pods_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """Every pod of a Lepton-managed Job, by namespace."""
    return {namespace: copy.deepcopy(dict(body))}


@kopf.index(GROUP, VERSION, "energybudgets", registry=registry)
def budgets_index(namespace: str | None, name: str | None, **_: Any) -> Any:
    """Every EnergyBudget's name, by namespace (a new LeptonJob's budget is looked up here)."""
    return {namespace: name}


def snapshot_from(indices: Mapping[str, Any], namespace: str) -> Snapshot | None:
    """The namespace's objects from kopf's indices, or None where a handler has none."""
    try:
        found = [indices[k] for k in ("lepton_jobs_index", "jobs_index", "pods_index")]
    except KeyError:
        return None
    lepton_jobs, jobs, pods = (list(index.get(namespace, ())) for index in found)
    return Snapshot(lepton_jobs, jobs, pods)


async def run_budget_pass(
    memo: OperatorMemo,
    namespace: str,
    name: str,
    *,
    closing: bool = False,
    snapshot: Snapshot | None = None,
) -> None:
    """One serialized admission pass over a budget; a lost write race is a TemporaryError."""
    async with memo.lock(namespace, name):
        try:
            notes = await asyncio.to_thread(
                reconcile_budget,
                memo.api,
                memo.config,
                memo.memory(namespace, name),
                namespace,
                name,
                datetime.now(UTC),
                closing=closing,
                snapshot=snapshot,
            )
        except ConflictError as error:
            raise kopf.TemporaryError(str(error), delay=CONFLICT_RETRY_SECONDS) from None
        except StillSettlingError as settling:  # a budget's deletion waits for its jobs' books
            _post(settling.events)
            raise kopf.TemporaryError(str(settling), delay=CONFLICT_RETRY_SECONDS) from None
    _post(notes)


@kopf.timer(GROUP, VERSION, "energybudgets", interval=1.0, registry=registry)
async def budget_timer(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    """Account, release and admit for one budget, from the watch caches (no re-listing)."""
    assert isinstance(memo, OperatorMemo) and namespace is not None
    await run_budget_pass(memo, namespace, name, snapshot=snapshot_from(kwargs, namespace))


@kopf.on.delete(GROUP, VERSION, "energybudgets", registry=registry)
async def budget_deleted(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """A budget being deleted (its finalizer holds it): account what its jobs used since the
    last pass, suspend every admitted job, and record the final books in an Event."""
    assert isinstance(memo, OperatorMemo) and namespace is not None
    await run_budget_pass(memo, namespace, name, closing=True)


@kopf.on.delete(GROUP, VERSION, "leptonjobs", registry=registry)
async def lepton_job_deleted(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    """A LeptonJob being deleted (its finalizer holds it) is settled first: the energy it used
    since the last pass is consumed and its reservation released, then it may go. When its
    budget is being deleted too (one `kubectl delete -f`, the namespace's deletion), the
    budget's closing pass settles it: it waits for that, or for the budget to be gone."""
    assert isinstance(memo, OperatorMemo) and namespace is not None
    budget_name = (body.get("spec") or {}).get("budgetName", "")
    uid = body.metadata.uid
    await run_budget_pass(memo, namespace, budget_name)
    budget = await asyncio.to_thread(memo.api.get_budget, namespace, budget_name)
    if budget is None:
        return
    meta = budget["metadata"]
    if meta.get("deletionTimestamp") and BUDGET_FINALIZER not in (meta.get("finalizers") or []):
        return  # its closing pass is over (another finalizer holds it): nothing settles it now
    held = {r.get("jobUid") for r in (budget.get("status") or {}).get("reservations") or []}
    if uid in held:
        raise kopf.TemporaryError("not settled yet", delay=CONFLICT_RETRY_SECONDS)


@kopf.on.event(GROUP, VERSION, "energybudgets", registry=registry)
def budget_metrics(type: str | None, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Keep the budget's gauges equal to its status."""
    if type == "DELETED":
        memo.metrics.forget(body.metadata.namespace or "", body.metadata.name or "")
    else:
        memo.metrics.observe(body)


@kopf.on.event(GROUP, VERSION, "leptonjobs", registry=registry)
def lepton_job_metrics(type: str | None, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Keep the LeptonJob's energy gauge equal to its status (the dashboards read it)."""
    if type == "DELETED":
        memo.metrics.forget_job(body.metadata.namespace or "", body.metadata.uid or "")
    else:
        memo.metrics.observe_job(body)


@kopf.on.create(GROUP, VERSION, "leptonjobs", registry=registry)
@kopf.on.resume(GROUP, VERSION, "leptonjobs", registry=registry)
async def lepton_job_created(
    body: kopf.Body, namespace: str | None, name: str, memo: Any, **kwargs: Any
) -> None:
    """Create the LeptonJob's suspended Job; report a missing budget with the fix. A job that
    ended (kopf resumes every LeptonJob when the operator starts) is left as it is: its Job may
    be gone (ttlSecondsAfterFinished), and one created again would run it a second time."""
    assert isinstance(memo, OperatorMemo) and namespace is not None
    raw = dict(body)
    if (raw.get("status") or {}).get("state") in FINAL_STATES:
        return
    budget_name = raw["spec"].get("budgetName", "")
    try:
        job = build_job(raw, scheduler_name=memo.config.scheduler_name)
    except ValueError as error:
        await asyncio.to_thread(
            memo.api.patch_lepton_job_status,
            namespace,
            name,
            {"state": "Failed", "conditions": [_condition("InvalidSpec", str(error))]},
        )
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        return
    created = await asyncio.to_thread(memo.api.create_job, job)
    if created:
        kopf.info(body, reason="JobCreated", message=f"created suspended Job {name!r}")
    # The watch cache knows the budget in all but a race with its creation: only then ask.
    known = budget_name in (kwargs.get("budgets_index") or {}).get(namespace, ())
    if not known and await asyncio.to_thread(memo.api.get_budget, namespace, budget_name) is None:
        message = (
            f"EnergyBudget {budget_name!r} not found in namespace {namespace!r} — create one "
            "or set spec.budgetName"
        )
        await asyncio.to_thread(
            memo.api.patch_lepton_job_status,
            namespace,
            name,
            {"state": "Waiting", "conditions": [_condition("BudgetNotFound", message)]},
        )
        kopf.warn(body, reason="BudgetNotFound", message=message)


def _condition(reason: str, message: str) -> dict[str, Any]:
    return {
        "type": "BudgetReserved",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
