"""A budget status an older operator wrote (``reservedWattHours``, now ``heldWattHours``) still
reads, for one release: the operator's books and gauges, the API model and kubectl lepton."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lepton_operator.metrics import JOULES_PER_WATT_HOUR, BudgetMetrics
from lepton_operator.translate import budget_state, budget_status

from lepton.api.v1alpha1 import OLD_HELD_FIELD, EnergyBudget, WhenExhausted, held_watt_hours
from tests.support.builders import energy_budget

NOW = datetime(2025, 1, 1, 0, 10, tzinfo=UTC)


def old_budget() -> dict[str, Any]:
    """A budget as an operator before the rename left it: 30 Wh reserved, 12 used, 18 held."""
    body = energy_budget(100.0, namespace="ml")
    body["status"] = {
        "periodStartTime": "2025-01-01T00:00:00Z",
        "consumedWattHours": 12.0,
        OLD_HELD_FIELD: 18.0,
        "remainingWattHours": 70.0,
        "admittedJobs": 1,
        "reservations": [
            {
                "jobUid": "uid-1",
                "jobName": "train",
                "gpuModel": "A100",
                "reservedWattHours": 30.0,
                "consumedWattHours": 12.0,
            }
        ],
    }
    return body


def test_the_operator_books_an_old_status_and_writes_the_new_name() -> None:
    state = budget_state(old_budget(), NOW)
    assert state.held_watt_hours == 18.0  # a reservation's reservedWattHours is its estimate
    status = budget_status(
        state,
        queued_jobs=0,
        when_exhausted=WhenExhausted.QUEUE,
        previous=old_budget()["status"],
        generation=1,
        now=NOW,
    )
    assert status["heldWattHours"] == 18.0
    assert OLD_HELD_FIELD not in status
    assert status["reservations"][0]["reservedWattHours"] == 30.0


def test_the_held_gauge_reads_an_old_status() -> None:
    metrics = BudgetMetrics()
    metrics.observe(old_budget())
    held = metrics.registry.get_sample_value(
        "lepton_energybudget_held_joules", {"namespace": "ml", "energybudget": "team"}
    )
    assert held == 18.0 * JOULES_PER_WATT_HOUR
    assert metrics.registry.get_sample_value("lepton_energybudget_reserved_joules") is None


def test_the_model_reads_an_old_status_and_writes_the_new_name() -> None:
    budget = EnergyBudget.model_validate(old_budget())
    assert budget.status is not None and budget.status.held_watt_hours == 18.0
    written = budget.model_dump(by_alias=True, mode="json")["status"]
    assert written["heldWattHours"] == 18.0 and OLD_HELD_FIELD not in written


def test_the_old_name_wins_while_the_apiserver_defaults_the_new_one() -> None:
    # Under the new CRD, a stored old status reads back with heldWattHours defaulted to 0
    # until the operator's next write replaces the whole status.
    assert held_watt_hours({OLD_HELD_FIELD: 18.0, "heldWattHours": 0.0}) == 18.0
    assert held_watt_hours({"heldWattHours": 18.0}) == 18.0
    assert held_watt_hours({}) == 0.0
