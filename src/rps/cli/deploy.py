"""``rps deploy ...``: fetch the champion, build the image, run it, verify, roll back.

Container engine options read environment variables too, so a machine sets them once:
``RPS_CONTAINER_ENGINE`` (podman/docker), ``RPS_CONTAINER_SANDBOX=1`` (podman without a
Docker daemon, as on the project's machines), ``RPS_CONTAINER_STORE`` and
``RPS_CONTAINER_STORAGE_DRIVER`` (the sandbox image store).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rps.cli.common import console, err_console, fail_on, load_config
from rps.git import GitError, run_git

deploy_app = typer.Typer(
    help="Release the service: fetch the champion, build and run the image, verify, roll back.",
    no_args_is_help=True,
)

EngineOpt = Annotated[
    str | None,
    typer.Option("--engine", envvar="RPS_CONTAINER_ENGINE", help="podman or docker"),
]
SandboxOpt = Annotated[
    bool,
    typer.Option(
        "--sandbox/--no-sandbox",
        envvar="RPS_CONTAINER_SANDBOX",
        help="podman profile for machines without a Docker daemon (chroot builds, runc, "
        "host network, a dedicated image store)",
    ),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", envvar="RPS_CONTAINER_STORE", help="sandbox image store folder"),
]
DriverOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-driver",
        envvar="RPS_CONTAINER_STORAGE_DRIVER",
        help="sandbox storage driver: overlay or vfs (default: overlay when possible)",
    ),
]
ModelDirOpt = Annotated[
    Path, typer.Option("--model-dir", help="the bundle folder inside the build context")
]


def _errors() -> tuple[type[Exception], ...]:
    from rps.deploy import DeployError
    from rps.models.bundle import BundleError

    return (DeployError, BundleError)


def _engine(name: str | None, sandbox: bool, store: Path | None, driver: str | None) -> Any:
    from rps.deploy.engine import make_engine

    with fail_on(*_errors(), code=2):
        return make_engine(name, sandbox=sandbox, store=store, storage_driver=driver)


def _git_sha(root: Path) -> str:
    """The checkout's HEAD commit, or "" outside a git checkout."""
    try:
        result = run_git(root, "rev-parse", "HEAD", check=False, timeout=10)
    except GitError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _resolve(root: Path, path: Path) -> Path:
    return path if path.is_absolute() else root / path


def fetch_model_command(
    *,
    ref: Annotated[str, typer.Option("--ref", help="alias or version")] = "champion",
    dest: Annotated[Path, typer.Option("--dest", help="where the bundle goes")] = Path("model"),
    as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
) -> None:
    """Download a registered model into DEST, verify its checksums, print version and digest."""
    settings, _ = load_config()
    from rps.deploy.fetch import fetch_model

    with fail_on(*_errors()):
        fetched = fetch_model(settings, ref=ref, dest=_resolve(settings.project_root, dest))
    if as_json:
        console.print_json(json.dumps(fetched.to_dict()))
        return
    console.print(f"version={fetched.version}")
    console.print(f"digest={fetched.digest}")
    console.print(f"registry_digest={fetched.registry_digest}")
    console.print(f"path={fetched.path}")


def build_command(
    *,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="image tag (repeatable; default rps-api:v<version>)"),
    ] = None,
    engine: EngineOpt = None,
    sandbox: SandboxOpt = False,
    store: StoreOpt = None,
    storage_driver: DriverOpt = None,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image",
            envvar="RPS_BASE_IMAGE",
            help="BASE_IMAGE (default python:3.11-slim; localhost/bookworm-python:local is "
            "built with debootstrap when missing)",
        ),
    ] = None,
    model_dir: ModelDirOpt = Path("model"),
    ref: Annotated[str, typer.Option("--ref", help="what to fetch when needed")] = "champion",
    fetch: Annotated[
        bool | None,
        typer.Option(
            "--fetch/--no-fetch",
            help="fetch the model first (default: only when MODEL_DIR is empty)",
        ),
    ] = None,
) -> None:
    """Build the serving image with the bundle baked in, and record it in the deploy history."""
    settings, _ = load_config()
    from rps.deploy.fetch import fetch_model
    from rps.deploy.history import DeployHistory, Release
    from rps.deploy.image import IMAGE_NAME, build_image

    root = settings.project_root
    directory = _resolve(root, model_dir)
    with fail_on(*_errors()):
        if fetch or (fetch is None and not (directory / "bundle.json").exists()):
            fetched = fetch_model(settings, ref=ref, dest=directory)
            console.print(f"fetched {ref}: version {fetched.version} ({fetched.digest[:12]})")
        from rps.deploy.fetch import bundle_version

        version, _digest = bundle_version(directory)
        tags = list(tag or [f"{IMAGE_NAME}:v{version}"])
        chosen = _engine(engine, sandbox, store, storage_driver)
        with console.status(f"building {tags[0]} with {chosen.name}..."):
            built = build_image(
                chosen,
                repo_root=root,
                model_dir=directory,
                tags=tags,
                base_image=base_image,
                git_sha=_git_sha(root),
            )
        DeployHistory.for_settings(settings).append(
            Release(
                action="build",
                image=built.image,
                model_version=built.model_version,
                model_digest=built.model_digest,
                engine=chosen.name,
                git_sha=_git_sha(root),
            )
        )
    console.print(
        f"built {', '.join(built.tags)} (model v{built.model_version}) in {built.seconds:.0f} s"
    )


def verify_command(
    *,
    url: Annotated[str, typer.Option("--url", help="the service's base URL")],
    expect_version: Annotated[
        str, typer.Option("--expect-version", help="the model version it must serve")
    ],
    expect_digest: Annotated[
        str | None, typer.Option("--expect-digest", help="the bundle digest it must serve")
    ] = None,
    model_dir: ModelDirOpt = Path("model"),
    wait: Annotated[
        float, typer.Option("--wait", help="seconds to wait for /health (a starting service)")
    ] = 60.0,
    replay: Annotated[
        bool,
        typer.Option("--replay/--no-replay", help="without a bundle, test with replayed weather"),
    ] = True,
) -> None:
    """Check a running service: health, served version, a sane prediction, metrics."""
    settings, _ = load_config()
    from rps.deploy.verify import target_bounds, verify_deployment

    directory = _resolve(settings.project_root, model_dir)
    report = verify_deployment(
        url,
        expect_version,
        expect_digest=expect_digest,
        model_dir=directory if directory.exists() else None,
        use_replay=replay,
        bounds=target_bounds(settings.params_file),
        wait_s=wait,
    )
    for check in report.checks:
        (console if check.ok else err_console).print(check.line(), markup=False)
    if not report.ok:
        err_console.print(f"verification failed: {report.reason()}", style="red", markup=False)
        raise typer.Exit(1)
    console.print(f"{url} serves model v{expect_version}: verified")


def rollback_command(
    *,
    url: Annotated[str | None, typer.Option("--url", help="the running service")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="RPS_API_TOKEN", help="admin bearer token", show_default=False
        ),
    ] = None,
    container: Annotated[
        str | None, typer.Option("--container", help="restart this local container")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="the container's port")] = 8000,
    redeploy_command: Annotated[
        str | None,
        typer.Option(
            "--redeploy-command", help="shell command deploying $RPS_DEPLOY_IMAGE (CD's script)"
        ),
    ] = None,
    to_image: Annotated[str | None, typer.Option("--to-image", help="override the target")] = None,
    to_version: Annotated[
        str | None, typer.Option("--to-version", help="override the target model version")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="verify after")] = True,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for health")] = 60.0,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="bundle of the target, for the test row")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="recorded with the rollback")] = "",
    engine: EngineOpt = None,
    sandbox: SandboxOpt = False,
    store: StoreOpt = None,
    storage_driver: DriverOpt = None,
) -> None:
    """Go back to the previous release: previous image and/or previous model, then verify."""
    settings, _ = load_config()
    from rps.deploy.history import DeployHistory
    from rps.deploy.rollback import rollback
    from rps.deploy.verify import target_bounds

    chosen = _engine(engine, sandbox, store, storage_driver) if container else None
    with fail_on(*_errors()):
        result = rollback(
            DeployHistory.for_settings(settings),
            url=url,
            token=token or (settings.api_token.get_secret_value() if settings.api_token else None),
            engine=chosen,
            container=container,
            port=port,
            redeploy_command=redeploy_command,
            to_image=to_image,
            to_version=to_version,
            verify=verify,
            wait_s=wait,
            model_dir=_resolve(settings.project_root, model_dir) if model_dir else None,
            bounds=target_bounds(settings.params_file),
            reason=reason,
        )
    abandoned = result.abandoned.label() if result.abandoned else "-"
    console.print(f"rolled back: {abandoned} -> {result.target.label()}", markup=False)
    for step in result.steps:
        console.print(f"  {step}", markup=False)
    if result.report is not None:
        for check in result.report.checks:
            (console if check.ok else err_console).print(f"  {check.line()}", markup=False)
    if not result.ok:
        reason_text = result.report.reason() if result.report else ""
        err_console.print(f"rollback not verified: {reason_text}", style="red", markup=False)
        raise typer.Exit(1)


def record_command(
    *,
    image: Annotated[str, typer.Option("--image", help="the image reference that went live")],
    model_version: Annotated[str, typer.Option("--model-version", help="its model version")],
    model_digest: Annotated[str, typer.Option("--model-digest", help="its bundle digest")] = "",
    action: Annotated[str, typer.Option("--action", help="build or deploy")] = "deploy",
    detail: Annotated[str, typer.Option("--detail", help="free text")] = "",
) -> None:
    """Record a release made outside `rps deploy build` (e.g. CD's deploy step)."""
    settings, _ = load_config()
    from rps.deploy.history import DeployHistory, Release

    if action not in ("build", "deploy"):
        raise typer.BadParameter("build or deploy", param_hint="--action")
    release = DeployHistory.for_settings(settings).append(
        Release(
            action=action,
            image=image,
            model_version=model_version,
            model_digest=model_digest,
            git_sha=_git_sha(settings.project_root),
            detail=detail,
        )
    )
    console.print(f"recorded {release.action}: {release.label()}", markup=False)


def history_command(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """The deploy history (events) and the release a rollback would go back to."""
    settings, _ = load_config()
    from rps.deploy.history import DeployHistory

    history = DeployHistory.for_settings(settings)
    with fail_on(*_errors()):
        events = history.events()
        previous = history.previous()
    if as_json:
        for event in events:
            console.print(json.dumps(event.to_dict(), sort_keys=True), markup=False)
        return
    for event in events:
        console.print(f"{event.time}  {event.action:<9} {event.label()}", markup=False)
    console.print(f"rollback target: {previous.label() if previous else '-'}", markup=False)


def run_command(
    *,
    image: Annotated[str, typer.Option("--image", help="the image to run")],
    name: Annotated[str, typer.Option("--name", help="container name")] = "rps-api",
    port: Annotated[int, typer.Option("--port", help="loopback port to answer on")] = 8000,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for /health")] = 120.0,
    engine: EngineOpt = None,
    sandbox: SandboxOpt = False,
    store: StoreOpt = None,
    storage_driver: DriverOpt = None,
) -> None:
    """Start the service container (replacing one of the same name) and wait until healthy."""
    import httpx

    from rps.deploy.image import container_logs, run_container
    from rps.deploy.verify import check_health

    chosen = _engine(engine, sandbox, store, storage_driver)
    with fail_on(*_errors()):
        run_container(chosen, image, name=name, port=port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=5.0) as client:
        health = check_health(client, wait_s=wait)
    if not health.ok:
        err_console.print(container_logs(chosen, name), markup=False)
        err_console.print(f"{name} is not healthy: {health.detail}", style="red", markup=False)
        raise typer.Exit(1)
    console.print(f"{name} ({image}) serving on {url}: {health.detail}", markup=False)


def stop_command(
    *,
    name: Annotated[str, typer.Option("--name", help="container name")] = "rps-api",
    engine: EngineOpt = None,
    sandbox: SandboxOpt = False,
    store: StoreOpt = None,
    storage_driver: DriverOpt = None,
) -> None:
    """Stop and remove the service container."""
    from rps.deploy.image import stop_container

    chosen = _engine(engine, sandbox, store, storage_driver)
    with fail_on(*_errors()):
        stop_container(chosen, name)
    console.print(f"stopped {name}")


def base_image_command(
    *,
    engine: EngineOpt = None,
    sandbox: SandboxOpt = False,
    store: StoreOpt = None,
    storage_driver: DriverOpt = None,
) -> None:
    """Build the local Debian python base (localhost/bookworm-python:local) when missing."""
    from rps.deploy.image import ensure_local_base

    chosen = _engine(engine, sandbox, store, storage_driver)
    with fail_on(*_errors()), console.status("preparing the local base image..."):
        ref = ensure_local_base(chosen)
    console.print(ref)


def newest_version_command() -> None:
    """Print the newest registered model version (the candidate CI compares)."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors(), registry.RegistryError):
        rows = registry.list_versions(settings)
    if not rows:
        err_console.print("no registered versions", style="red")
        raise typer.Exit(1)
    newest = max(rows, key=lambda row: int(str(row["version"])))
    console.print(str(newest["version"]))


def register(app: typer.Typer) -> None:
    """Add ``rps deploy ...`` to the root app."""
    commands: dict[str, Callable[..., None]] = {
        "fetch-model": fetch_model_command,
        "build": build_command,
        "verify": verify_command,
        "rollback": rollback_command,
        "record": record_command,
        "history": history_command,
        "run": run_command,
        "stop": stop_command,
        "base-image": base_image_command,
        "newest-version": newest_version_command,
    }
    for name, command in commands.items():
        deploy_app.command(name)(command)
    app.add_typer(deploy_app, name="deploy")
