"""train() and `filmroom train-detector`: what can be checked without training (training itself never
runs in the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from tasks.training import TrainConfig, train


def test_fine_tuning_missing_weights_fails_before_writing_anything(tmp_path: Path) -> None:
    work, models = tmp_path / "work", tmp_path / "models"
    with pytest.raises(FileNotFoundError, match="weights to fine-tune not found"):
        train(TrainConfig(init=str(tmp_path / "no.pt")), work, models)
    assert not work.exists() and not models.exists()


def test_train_detector_refuses_missing_weights_with_a_usage_error(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "models"
    args = ["train-detector", "--workdir", str(work), "--out", str(out), "--init", str(tmp_path / "no.pt")]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.replace("│", " ").split())  # rich boxes and wraps the error
    assert "Invalid value for '--init'" in message and "does not exist" in message
    assert not work.exists() and not out.exists()
