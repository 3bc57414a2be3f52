"""The deploy history: events in a JSON-lines file, releases as a stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from rps.deploy import DeployError
from rps.deploy.history import DeployHistory, Release, history_path
from rps.settings import Settings


def _history(tmp_path: Path, *events: tuple[str, str, str]) -> DeployHistory:
    history = DeployHistory(tmp_path / "deploy" / "history.jsonl")
    for action, image, version in events:
        history.append(Release(action=action, image=image, model_version=version))
    return history


def test_empty_history(tmp_path: Path) -> None:
    history = _history(tmp_path)
    assert history.events() == [] and history.current() is None and history.previous() is None


def test_builds_and_deploys_stack_up_without_repeats(tmp_path: Path) -> None:
    history = _history(
        tmp_path,
        ("build", "rps-api:v1", "1"),
        ("deploy", "rps-api:v1", "1"),  # the same release: not a new one
        ("build", "rps-api:v2", "2"),
    )
    assert [r.key for r in history.releases()] == [("rps-api:v1", "1"), ("rps-api:v2", "2")]
    assert history.current().key == ("rps-api:v2", "2")  # type: ignore[union-attr]
    assert history.previous().key == ("rps-api:v1", "1")  # type: ignore[union-attr]
    assert len(history.events()) == 3


def test_rollbacks_walk_back_one_release_each(tmp_path: Path) -> None:
    history = _history(
        tmp_path,
        ("deploy", "i:1", "1"),
        ("deploy", "i:2", "2"),
        ("deploy", "i:3", "3"),
        ("rollback", "i:2", "2"),
    )
    assert history.current().key == ("i:2", "2")  # type: ignore[union-attr]
    assert history.previous().key == ("i:1", "1")  # type: ignore[union-attr]
    history.append(Release(action="rollback", image="i:1", model_version="1"))
    assert history.current().key == ("i:1", "1")  # type: ignore[union-attr]
    assert history.previous() is None


def test_rollback_to_a_release_not_in_the_stack(tmp_path: Path) -> None:
    history = _history(tmp_path, ("deploy", "i:5", "5"), ("rollback", "i:4", "4"))
    assert [r.key for r in history.releases()] == [("i:4", "4")]


def test_file_format_and_errors(tmp_path: Path) -> None:
    history = _history(tmp_path, ("build", "i:1", "1"))
    line = history.path.read_text(encoding="utf-8").strip()
    assert '"action": "build"' in line and '"model_version": "1"' in line
    with history.path.open("a", encoding="utf-8") as handle:
        handle.write("\n{not json\n")
    with pytest.raises(DeployError, match=r"history.jsonl:3: not a history entry"):
        history.events()
    history.path.write_text('{"action": "explode", "image": "x", "model_version": "1"}\n')
    with pytest.raises(DeployError, match="unknown action"):
        history.events()


def test_release_round_trip_and_label() -> None:
    release = Release(action="deploy", image="ghcr.io/o/rps-api:1.2", model_version="7")
    again = Release.from_dict({**release.to_dict(), "unknown_field": 1})
    assert again == release
    assert release.label() == "ghcr.io/o/rps-api:1.2 (model v7)"


def test_history_lives_under_the_state_folder(tmp_path: Path) -> None:
    settings = Settings(project_root=tmp_path, state_dir=Path(".state"))
    assert history_path(settings) == tmp_path / ".state" / "deploy" / "history.jsonl"
    assert DeployHistory.for_settings(settings).path == history_path(settings)
