"""``rps run``: the main job on the embedded default, from live data to a served champion."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from rps.cli.common import (
    console,
    err_console,
    fail_on,
    load_config,
    output_to,
    run_dag_with_summary,
)


def run(
    source: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--source", "-s", help="open_meteo, replay or synthetic (default: RPS_SOURCE)"
        ),
    ] = None,
    serve: Annotated[bool, typer.Option(help="serve the champion after training")] = True,
    monitoring: Annotated[
        bool, typer.Option(help="start Prometheus + Alertmanager when installed")
    ] = True,
    demo_drift: Annotated[
        bool, typer.Option(help="send drifted traffic so DataDriftDetected fires and retrains")
    ] = False,
    port: Annotated[Optional[int], typer.Option(help="API port (default: RPS_API_PORT)")] = None,  # noqa: UP045
) -> None:
    """Run the DAG (data -> gate -> train -> gate -> champion), then serve and monitor it."""
    from rps.models.registry import ModelNotFoundError, champion_info

    settings, params = load_config()
    conf = {"reason": "rps run", "source": source or settings.source}
    console.print(
        f"running the Airflow DAG rps_pipeline in-process on {conf['source']} data "
        f"(AIRFLOW_HOME={settings.airflow_home_path})"
    )
    run_dag_with_summary(settings, conf)
    with fail_on(ModelNotFoundError):
        champion = champion_info(settings)
    metrics = champion["metrics"]
    shown = ", ".join(
        f"{k} {v:.3f}"
        for k, v in sorted(metrics.items())
        if isinstance(v, int | float) and k.startswith("holdout_")
    )
    console.print(
        f"\nchampion: {champion['name']} version {champion['version']} "
        f"({champion['model_kind']}), dataset {str(champion['dataset_md5'])[:12]}"
    )
    console.print(f"  holdout: {shown}", markup=False)
    if not serve:
        return
    _serve(
        settings,
        params,
        port=port or settings.api_port,
        monitoring=monitoring,
        demo_drift=demo_drift,
    )


def _serve(settings, params, *, port: int, monitoring: bool, demo_drift: bool) -> None:  # type: ignore[no-untyped-def]
    from rps.monitoring.local_stack import BinaryNotFoundError, start_local_monitoring
    from rps.serving.launcher import run as run_api

    url = f"http://{settings.api_host}:{port}"
    stack = None
    if monitoring:
        try:
            stack = start_local_monitoring(settings, api_port=port, demo=demo_drift)
            console.print(
                f"prometheus:   {stack.prometheus.url}  (alerts: {stack.prometheus.url}/alerts)"
            )
            console.print(f"alertmanager: {stack.alertmanager.url}")
            console.print(f"alert log:    {settings.alert_log}")
        except BinaryNotFoundError as exc:
            err_console.print(
                f"monitoring not started: {exc} "
                "(apt-get install prometheus prometheus-alertmanager)",
                markup=False,
            )
    stop = threading.Event()
    if demo_drift:
        from rps.monitoring.demo import send_drifted_traffic

        threading.Thread(
            target=send_drifted_traffic, args=(url, params, stop), daemon=True, name="drift-demo"
        ).start()
        console.print(
            "drift demo: sending drifted rows to /predict; DataDriftDetected fires "
            "in about a minute and the receiver starts a retraining run"
        )
    console.print(f"\nAPI: {url}  (OpenAPI: {url}/docs)")
    console.print(f"  curl -s {url}/forecast", markup=False)
    console.print(f"  curl -s {url}/model/info", markup=False)
    console.print(f"  curl -s {url}/metrics | grep ^predictions_total", markup=False)
    console.print("Ctrl-C stops the API and the monitoring processes.")
    try:
        run_api(host=settings.api_host, port=port, workers=1, settings=settings)
    finally:
        stop.set()
        if stack is not None:
            stack.stop()


def demo_loop(
    speed: Annotated[
        float, typer.Option(min=1.0, help="replay hours per wall hour (1440: one every 2.5 s)")
    ] = 1440.0,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes")] = 2,
    deadline: Annotated[
        float, typer.Option(min=60.0, help="wall seconds after which the loop ends anyway")
    ] = 1200.0,
    pre_onset_hours: Annotated[
        int, typer.Option(min=8, help="clean replay hours served before the drift starts")
    ] = 54,
    after_swap_hours: Annotated[
        int, typer.Option(min=1, help="replay hours the new champion serves before the end")
    ] = 48,
) -> None:
    """The closed loop on an accelerated replay clock: drift -> alert -> retrain -> new champion.

    Exits 0 when a new champion was served by every worker with no failed request.
    """
    from rps.monitoring.closed_loop import ClosedLoop, LoopError, LoopPlan

    settings, params = load_config()
    plan = LoopPlan(
        speed=speed,
        workers=workers,
        deadline_s=deadline,
        pre_onset_hours=pre_onset_hours,
        after_swap_hours=after_swap_hours,
    )
    with fail_on(LoopError):
        loop = ClosedLoop(
            settings, params, plan, say=lambda line: console.print(line, markup=False)
        )
        loop.prepare()
    log_file = loop.state / "logs" / "dag-runs.log"
    console.print(
        f"state: {loop.state}; drift scenario {loop.timeline.scenario['kind']} on "
        f"{', '.join(loop.timeline.scenario['variables'])} from replay time {loop.onset}"
    )
    console.print(f"training the first champion on the year before {loop.origin} (log: {log_file})")
    try:
        with fail_on(LoopError, RuntimeError, OSError):
            with output_to(log_file):
                version = loop.train_first_champion()
            _log_to_file(loop.state / "logs" / "demo-loop.log")
            console.print(f"first champion: version {version}; starting the API and monitoring")
            loop.start_services()
            console.print(f"API {loop.api_url} ({workers} workers), clock x{speed:g}")
            timeline = loop.run()
    finally:
        loop.stop()
    path = loop.write()
    console.print(
        f"\nended: {timeline.ended}; requests {timeline.requests}, "
        f"failed {timeline.failed_requests}"
    )
    console.print(
        "live RMSE before / during / after: "
        + " / ".join(
            "-" if v is None else f"{v:.2f}"
            for v in (
                timeline.live_rmse_before,
                timeline.live_rmse_during,
                timeline.live_rmse_after,
            )
        ),
        markup=False,
    )
    console.print(f"timeline: {path}", markup=False)
    if not timeline.new_champion_served or timeline.failed_requests:
        raise typer.Exit(1)


def _log_to_file(path: Path) -> None:
    """Send this process's log records to ``path`` (the terminal shows the timeline only).

    An in-process Airflow run leaves its own handlers on the root logger; they go too.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def register(app: typer.Typer) -> None:
    """Add ``run`` (the main job) and ``demo-loop`` to the root app."""
    app.command("run")(run)
    app.command("demo-loop")(demo_loop)
