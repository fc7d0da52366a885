"""`kamp` (models.cli): a two-stage step trained, evaluated and predicted from the command line; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(data_root: Path, images: str) -> list[str]:
    return ["--dataset", str(data_root / "isbi2015"), "--images", images, "--codes", "S,N,Me", "--annotator", "senior"]


def test_a_two_stage_step_from_the_command_line(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v0.safetensors"
    args = ["train-step", *_data(data_root, "001,002,003"), "--backbone", "hrnet_w18_tiny", "--input-size", "64x80"]
    args += ["--set", "iterations=2", "--set", "refine.iterations=2", "--set", "refine.crops=4"]
    assert main([*args, "--local-stage", '{"crop_size": 32}', "--out", str(out)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["stages"] == 2 and trained["landmarks"] == ["S", "N", "Me"]
    image = data_root / "isbi2015" / "images" / "151.jpg"
    assert main(["predict", "--checkpoint", str(out), str(image), "--spacing", "0.2"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    # Two iterations leave the first stage untrained: a point it puts in the letterbox's padding stays its own.
    assert "local" in {lm["stage"] for lm in answer["landmarks"]}
    for lm in answer["landmarks"]:
        w, h = answer["image_size"]
        inside = -0.5 <= lm["x"] <= w - 0.5 and -0.5 <= lm["y"] <= h - 0.5
        assert lm["stage"] == ("local" if inside else "global"), lm
    assert main(["predict", "--checkpoint", str(out), str(image), "--global-only"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert {lm["stage"] for lm in answer["landmarks"]} == {"global"}
    assert main(["evaluate", "--checkpoint", str(out), *_data(data_root, "151,152"), "--global-only"]) == 0
    assert "all" in capsys.readouterr().out


def test_a_step_reads_the_features_before_the_last_relu_when_asked(data_root: Path, tmp_path: Path) -> None:
    from models.checkpoint import Checkpoint

    out = tmp_path / "v0.safetensors"
    args = ["train-step", *_data(data_root, "001,002"), "--backbone", "hrnet_w18_tiny", "--input-size", "64x80"]
    args += ["--set", "iterations=1", "--set", "refine.iterations=1", "--set", "refine.crops=2"]
    assert main([*args, "--local-stage", '{"crop_size": 32}', "--features-before-last-relu", "--out", str(out)]) == 0
    checkpoint = Checkpoint.load(out)
    assert checkpoint.backbone.last_relu is False
    assert checkpoint.refine is not None and checkpoint.refine.last_relu is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [("{not json", "JSON object"), ("[1]", "JSON object"), ('{"crop_size": 8}', "crop_size"), ('{"x": 1}', "x")],
)
def test_a_bad_local_stage_is_one_line_and_status_2(
    spec: str, message: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train-step", *_data(data_root, "001"), "--local-stage", spec, "--out", str(tmp_path / "v.safetensors")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("kamp train-step: error:") and message in err
    assert not (tmp_path / "v.safetensors").exists()


MODEL = Path(__file__).parents[2] / "bench/results/cld38-5step-cpu-local/checkpoints/seed0/shared/step0.safetensors"


def test_analyse_measures_a_checkpoints_landmarks(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(data_root / "isbi2015" / "images" / "151.jpg")
    args = ["analyse", "--checkpoint", str(MODEL), image, "--analyses", "isbi2015,wits"]
    assert main([*args, "--spacing", "0.2", "--errors", "1.8", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    values = {m["code"]: m for m in answer["measurements"]}
    assert list(values) == ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]
    assert values["ANB"]["low"] < values["ANB"]["value"] < values["ANB"]["high"]
    assert answer["omitted"][0]["missing"] == ["U6", "L6"]
    assert main(args) == 0  # no spacing: the table says why MW is omitted
    assert "MW            omitted: a length: needs the image's pixel spacing" in capsys.readouterr().out
    assert main([*args, "--analyses", "nope"]) == 2
    assert "no analysis 'nope'" in capsys.readouterr().err
    assert main([*args, "--spacing", "0,1"]) == 2
    assert "positive" in capsys.readouterr().err


def test_a_step_trains_its_strategys_validated_settings_under_the_callers(tmp_path: Path) -> None:
    from models.cli import _train_config, build_parser
    from models.config import TrainConfig
    from models.registry import DEFAULT_STRATEGY, strategy

    parser, _ = build_parser()
    base = ["train-step", "--protocol", "cld38-5step", "--step", "1", "--out", str(tmp_path / "v.safetensors")]
    args = parser.parse_args(base)
    assert args.strategy == DEFAULT_STRATEGY
    assert _train_config(args).alpha == strategy(DEFAULT_STRATEGY).validated_for("cephalometric")["alpha"]
    assert _train_config(args).alpha != TrainConfig().alpha
    chest = _train_config(parser.parse_args([*base, "--modality", "chest"]))
    assert chest.alpha == strategy(DEFAULT_STRATEGY).validated_for("chest").get("alpha", TrainConfig().alpha)
    config = tmp_path / "c.json"
    config.write_text('{"alpha": 2.0}')
    assert _train_config(parser.parse_args([*base, "--config", str(config)])).alpha == 2.0
    assert _train_config(parser.parse_args([*base, "--config", str(config), "--set", "alpha=4"])).alpha == 4.0
    assert _train_config(parser.parse_args([*base, "--strategy", "finetune"])).alpha == TrainConfig().alpha
