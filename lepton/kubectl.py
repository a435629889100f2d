"""``kubectl lepton``: budgets, waiting jobs, placements and power, from the command line.

Installed with the package as the ``kubectl-lepton`` executable, which kubectl
finds on PATH as a plugin (like Kueue's ``kubectl kueue``). It reads what the
operator writes into EnergyBudget and LeptonJob status, the ``LeptonScored``
Events the Lepton scheduler records on pods, and — for power — the exporter's metrics
through Prometheus.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from lepton.api.v1alpha1 import held_watt_hours
from lepton.core.names import EVENT_REASON_SCORED, GROUP, SCHEDULER_NAME, VERSION


def _apis(kubeconfig: str | None, context: str | None) -> tuple[Any, Any]:
    from kubernetes import client

    from lepton.kube import KubeConfigError, api_client

    try:
        api = api_client(kubeconfig, context=context)
    except KubeConfigError as error:
        raise click.ClickException(str(error)) from None
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _list(api: Any, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    from kubernetes.client.exceptions import ApiException

    try:
        if namespace:
            result = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        else:
            result = api.list_cluster_custom_object(GROUP, VERSION, plural)
    except ApiException as error:
        if error.status == 404:
            raise click.ClickException(
                f"the {plural}.{GROUP} CRD is not installed: `helm install lepton "
                "deploy/helm/lepton` or `lepton crds | kubectl apply -f -`"
            ) from None
        raise click.ClickException(f"listing {plural}: {error.reason}") from None
    return list(result.get("items", []))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _wh(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    full = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(full, timeout=10) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise click.ClickException(f"Prometheus at {url} did not answer: {error}") from None
    if body.get("status") != "success":
        raise click.ClickException(f"Prometheus rejected {query!r}: {body.get('error')}")
    return list(body["data"]["result"])


def _sum_watts(url: str, query: str) -> float:
    return sum(float(r["value"][1]) for r in _prometheus_query(url, query))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Kubeconfig file.")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option(
    "--prometheus-url",
    envvar="LEPTON_PROMETHEUS_URL",
    default=None,
    help="Prometheus scraping Lepton's exporters (env LEPTON_PROMETHEUS_URL), for power figures.",
)
@click.pass_context
def main(
    ctx: click.Context, kubeconfig: str | None, context: str | None, prometheus_url: str | None
) -> None:
    """Lepton's view of the cluster: energy budgets, waiting jobs, placements and power."""
    ctx.obj = {"kubeconfig": kubeconfig, "context": context, "prometheus_url": prometheus_url}


namespace_option = click.option("-n", "--namespace", default=None, help="One namespace.")
all_option = click.option(
    "-A", "--all-namespaces", is_flag=True, help="Every namespace (default when -n is not given)."
)


@main.command()
@namespace_option
@all_option
@click.pass_obj
def status(obj: dict[str, Any], namespace: str | None, all_namespaces: bool) -> None:
    """Budgets (used / held / remaining watt-hours), jobs waiting and why, and power now."""
    custom, _ = _apis(obj["kubeconfig"], obj["context"])
    ns = None if all_namespaces else namespace
    budgets = _list(custom, "energybudgets", ns)
    jobs = _list(custom, "leptonjobs", ns)
    rows = []
    for b in sorted(budgets, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        st = b.get("status", {})
        rows.append(
            [
                b["metadata"]["namespace"],
                b["metadata"]["name"],
                str(b["spec"]["limitWattHours"]),
                _wh(st.get("consumedWattHours", 0.0)),
                _wh(held_watt_hours(st)),
                _wh(st.get("remainingWattHours")),
                str(st.get("admittedJobs", 0)),
                str(st.get("queuedJobs", 0)),
                str(b["spec"].get("whenExhausted", "Queue")),
            ]
        )
    click.echo("ENERGY BUDGETS (watt-hours this period)")
    headers = ["NAMESPACE", "NAME", "LIMIT", "USED", "HELD", "REMAINING", "ADMITTED"]
    click.echo(_table(rows, [*headers, "QUEUED", "WHEN-EXHAUSTED"]) if rows else "  (none)")

    waiting = []
    for j in jobs:
        reserved = _condition(j, "BudgetReserved")
        if reserved and reserved.get("status") == "False":
            waiting.append(
                [
                    j["metadata"]["namespace"],
                    j["metadata"]["name"],
                    str(reserved.get("reason", "")),
                    str(reserved.get("message", "")),
                ]
            )
    click.echo("")
    click.echo("JOBS WAITING")
    click.echo(
        _table(waiting, ["NAMESPACE", "NAME", "REASON", "MESSAGE"]) if waiting else "  (none)"
    )
    by_state: dict[str, int] = {}
    for j in jobs:
        state = str(j.get("status", {}).get("state") or "Pending")
        by_state[state] = by_state.get(state, 0) + 1
    click.echo("")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "none"
    click.echo(f"LEPTONJOBS: {summary}")
    url = obj["prometheus_url"]
    if url:
        watts = _sum_watts(url, "sum(lepton_gpu_power_watts)")
        sources = sorted(
            {
                r["metric"].get("source", "?")
                for r in _prometheus_query(url, "count by (source) (lepton_gpu_power_watts)")
            }
        )
        label = (
            "estimated by the model" if sources == ["model"] else f"sources: {', '.join(sources)}"
        )
        if sources:
            click.echo(f"CLUSTER GPU POWER NOW: {watts:.0f} W ({label})")
        else:
            click.echo(
                "CLUSTER GPU POWER NOW: no data yet (Prometheus has not scraped an exporter)"
            )
    else:
        click.echo(
            "CLUSTER GPU POWER NOW: unknown (give --prometheus-url or LEPTON_PROMETHEUS_URL)"
        )


@main.command()
@click.argument("pod")
@namespace_option
@click.pass_obj
def explain(obj: dict[str, Any], pod: str, namespace: str | None) -> None:
    """Why the Lepton scheduler placed POD where it did: the scoring terms of its top nodes."""
    _, core = _apis(obj["kubeconfig"], obj["context"])
    ns = namespace or "default"
    if "/" in pod:
        ns, pod = pod.split("/", 1)
    from kubernetes.client.exceptions import ApiException

    try:
        placed = core.read_namespaced_pod(pod, ns)
    except ApiException as error:
        if error.status == 404:
            raise click.ClickException(f"pod {pod!r} not found in namespace {ns!r}") from None
        raise click.ClickException(f"reading pod {ns}/{pod}: {error.reason}") from None
    events = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={pod},reason={EVENT_REASON_SCORED}"
    ).items
    click.echo(f"Pod {ns}/{pod}")
    click.echo(f"  scheduler: {placed.spec.scheduler_name}")
    click.echo(f"  node:      {placed.spec.node_name or '(not bound yet)'}")
    if not events:
        click.echo(
            "  no scoring recorded: the pod is not a LeptonJob pod, was not scheduled by "
            f"{SCHEDULER_NAME}, or the Lepton scheduler has not seen it yet"
        )
        sys.exit(1)
    latest = max(events, key=lambda e: (e.last_timestamp or e.event_time or "", e.metadata.name))
    click.echo(f"  the Lepton scheduler's scoring ({EVENT_REASON_SCORED} event):")
    for line in str(latest.message).split("; "):
        click.echo(f"    {line}")


@main.command()
@click.pass_obj
def top(obj: dict[str, Any]) -> None:
    """GPU power now by node, by GPU model and by namespace (from Prometheus)."""
    url = obj["prometheus_url"]
    if not url:
        raise click.ClickException(
            "`kubectl lepton top` reads the exporter's metrics: give --prometheus-url or set "
            "LEPTON_PROMETHEUS_URL"
        )
    sections = [
        ("NODE", "node", "sum by (node) (lepton_gpu_power_watts)"),
        ("GPU MODEL", "gpu_model", "sum by (gpu_model) (lepton_gpu_power_watts)"),
        (
            "NAMESPACE",
            "namespace",
            "sum by (namespace) (rate(lepton_pod_gpu_active_energy_joules_total[1m]))",
        ),
    ]
    sources = {
        r["metric"].get("source", "?")
        for r in _prometheus_query(url, "count by (source) (lepton_gpu_power_watts)")
    }
    for title, label, query in sections:
        rows = sorted(
            (
                [r["metric"].get(label, "?"), f"{float(r['value'][1]):.1f}"]
                for r in _prometheus_query(url, query)
            ),
            key=lambda row: -float(row[1]),
        )
        click.echo(_table(rows, [title, "WATTS"]) if rows else f"{title}: no data yet")
        click.echo("")
    note = "estimated by the model backend" if sources == {"model"} else "measured"
    if sources:
        click.echo(f"(power {note}; per-namespace figures are active power above idle)")
