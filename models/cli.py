"""`kamp`: train one incremental step, evaluate a checkpoint, predict landmarks on images and measure them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .analyses.cli import add_command as add_analyse_command
from .config import (
    PRECISIONS,
    BackboneConfig,
    CodecConfig,
    RefineConfig,
    TrainConfig,
    from_dict,
    local_stage_config,
    to_dict,
)
from .registry import DEFAULT_STRATEGY, FALLBACK_MODALITY, MODALITIES, STRATEGIES, with_validated
from .step_data import StepData


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the command line; `parser` lets a larger program (the service's `kamp`) add commands."""
    parser = parser or build_parser()[0]
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, KeyError) as exc:
        print(f"kamp {args.command}: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The library's parser and its subcommand group (so other packages can add commands)."""
    p = argparse.ArgumentParser(prog="kamp", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-step", help="train the model of the next incremental step")
    _data_args(t)
    t.add_argument("--previous", type=Path, help="checkpoint of the previous step (omit for step 0)")
    t.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        choices=STRATEGIES,
        help="trained at its validated settings (models/registry.py) under --config and --set "
        f"(default: {DEFAULT_STRATEGY})",
    )
    t.add_argument(
        "--modality",
        default=FALLBACK_MODALITY,
        choices=MODALITIES,
        help=f"whose validated settings the strategy trains with (default: {FALLBACK_MODALITY})",
    )
    t.add_argument("--out", type=Path, required=True, help="where to write the new checkpoint")
    t.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field, e.g. --set iterations=300 --set kanet.iterations=100",
    )
    t.add_argument("--backbone", default="hrnet_w32", help="step 0 only: backbone name")
    t.add_argument("--pretrained", type=Path, help="step 0 only: local pretrained backbone weights")
    t.add_argument(
        "--features-before-last-relu",
        action="store_true",
        help="step 0 only: both stages' heads read the backbone's features before its last ReLU "
        "(BackboneConfig.last_relu false; the local stage's unless --local-stage names last_relu)",
    )
    t.add_argument("--input-size", default="256x320", help="step 0 only: network input WxH")
    t.add_argument("--sigma", type=float, default=2.0, help="step 0 only: target sigma (heatmap px)")
    t.add_argument(
        "--local-stage",
        metavar="JSON",
        help="step 0 only: train a local stage too, with these RefineConfig fields ('{}' for the defaults); "
        "later steps keep the previous model's stages",
    )
    t.add_argument("--state", type=Path, help="training-state file to resume from and checkpoint into")
    _precision_arg(t, "train in (TrainConfig.precision; overrides --config and --set)")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="radial errors, MRE and SDR of a checkpoint on labelled images")
    _data_args(e)
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--json", type=Path, help="also write the full report here")
    _precision_arg(e, "predict in")
    _global_only_arg(e)
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("predict", help="predict every landmark of a checkpoint on image files")
    r.add_argument("--checkpoint", type=Path, required=True)
    r.add_argument("images", nargs="+", type=Path)
    r.add_argument("--spacing", type=float, help="pixel spacing in mm (all images)")
    _precision_arg(r, "predict in")
    _global_only_arg(r)
    r.set_defaults(func=_predict)

    add_analyse_command(sub, _predict_options)

    i = sub.add_parser("info", help="print a checkpoint's metadata")
    i.add_argument("checkpoint", type=Path)
    i.set_defaults(func=_info)
    return p, sub


def _precision_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help=f"precision to {what}: auto (bf16 where the device has fast bf16, default), bf16 or fp32",
    )


def _predict_options(p: argparse.ArgumentParser) -> None:
    _precision_arg(p, "predict in")
    _global_only_arg(p)


def _global_only_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global-only", action="store_true", help="a two-stage model's first stage alone (for comparisons)")


def _local_stage(spec: str | None, *, last_relu: bool) -> RefineConfig | None:
    if spec is None:
        return None
    try:
        fields = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise CliError(f"--local-stage wants a JSON object of RefineConfig fields, got {spec!r}") from exc
    if not isinstance(fields, dict):
        raise CliError(f"--local-stage wants a JSON object of RefineConfig fields, got {spec!r}")
    return local_stage_config(fields, last_relu=last_relu)


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data: a protocol step, or a dataset folder with explicit images and codes")
    g.add_argument(
        "--data-root",
        type=Path,
        help="folder of dataset folders and protocols.json (default: $KAMP_DATA_ROOT or ../shared/data)",
    )
    g.add_argument("--protocol", help="IKL protocol name in protocols.json")
    g.add_argument(
        "--step", type=int, help="protocol step index (train-step), or landmarks learned up to it (evaluate)"
    )
    g.add_argument("--split", default="test", help="evaluate: 'test', 'val' or an extra test name")
    g.add_argument("--dataset", type=Path, help="a dataset folder (dataset.json + landmarks.csv)")
    g.add_argument("--annotator", help="annotator of the labels (default: the dataset's first)")
    g.add_argument("--images", help="comma-separated image ids, or @file with one id per line")
    g.add_argument("--codes", help="comma-separated landmark codes (default: all of the dataset)")


def _load_data(args: argparse.Namespace, *, training: bool) -> StepData:
    from .datasets import default_data_root, load_dataset, load_protocol

    root = args.data_root or default_data_root()
    if args.protocol:
        protocol = load_protocol(root, args.protocol)
        ds = protocol.load_dataset(root)
        if args.step is None:
            raise CliError("--protocol needs --step")
        if not 0 <= args.step < protocol.num_steps:
            raise CliError(f"--step must be in 0..{protocol.num_steps - 1}")
        if training:
            step = protocol.steps[args.step]
            return ds.step_data(step.images, step.landmarks, protocol.annotator)
        images = {"test": protocol.test_images, "val": protocol.val_images, **protocol.extra_tests}
        if args.split not in images or not images[args.split]:
            raise CliError(f"protocol {protocol.name} has no split {args.split!r}")
        return ds.step_data(images[args.split], protocol.landmarks_up_to(args.step), protocol.annotator)
    if not args.dataset:
        raise CliError("give --protocol NAME --step K, or --dataset DIR --images IDS")
    ds = load_dataset(args.dataset)
    ids = _id_list(args.images) if args.images else list(ds.image_ids)
    codes = args.codes.split(",") if args.codes else None
    return ds.step_data(ids, codes, args.annotator)


def _id_list(spec: str) -> list[str]:
    if spec.startswith("@"):
        return [ln.strip() for ln in Path(spec[1:]).read_text().splitlines() if ln.strip()]
    return [s.strip() for s in spec.split(",") if s.strip()]


def _train_config(args: argparse.Namespace) -> TrainConfig:
    data = with_validated(args.strategy, json.loads(args.config.read_text()) if args.config else {}, args.modality)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise CliError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if args.precision:
        data["precision"] = args.precision
    return from_dict(TrainConfig, data)


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import Checkpoint
    from .trainer import Progress, train_step

    config = _train_config(args)
    last_relu = not args.features_before_last_relu
    refine = _local_stage(args.local_stage, last_relu=last_relu)
    data = _load_data(args, training=True)
    previous = Checkpoint.load(args.previous) if args.previous else None
    try:
        w, h = (int(v) for v in args.input_size.lower().split("x"))
    except ValueError as exc:
        raise CliError(f"--input-size must look like 256x320, got {args.input_size!r}") from exc
    backbone = BackboneConfig(
        name=args.backbone,
        pretrained=str(args.pretrained) if args.pretrained else None,
        last_relu=last_relu,
    )
    codec = CodecConfig(input_size=(w, h), sigma=args.sigma)
    bars: dict[str, tqdm] = {}

    def progress(p: Progress) -> None:
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit="it", initial=p.iteration - 1)
        bar.update(p.iteration - bar.n)
        bar.set_postfix({k: f"{v:.3g}" for k, v in p.losses.items()})

    checkpoint, report = train_step(
        previous,
        data,
        args.strategy,
        config,
        backbone=backbone,
        codec=codec,
        refine=refine,
        progress=progress,
        state_path=args.state,
    )
    for bar in bars.values():
        bar.close()
    sha = checkpoint.save(args.out)
    print(
        json.dumps(
            {
                "checkpoint": str(args.out),
                "sha256": sha,
                "step": checkpoint.step,
                "landmarks": checkpoint.codes,
                "triplets": report.triplets,
                "seconds": round(report.seconds, 1),
                "local_stage_seconds": round(report.refine_seconds, 1),
                "stages": 1 if checkpoint.refine is None else 2,
                "seconds_per_image": round(report.seconds_per_image, 4),
                "precision": report.precision,
            },
            indent=1,
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import Checkpoint
    from .evaluate import evaluate
    from .predictor import Predictor

    checkpoint = Checkpoint.load(args.checkpoint)
    if args.protocol and args.step is None:
        args.step = checkpoint.step
    predictor = Predictor(checkpoint, precision=args.precision or "auto", local=not args.global_only)
    result = evaluate(predictor, _load_data(args, training=False))
    print(f"{'code':<8} {'MRE':>7} {'SD':>7} {'SDR2':>6} {'SDR4':>6}  ({result.unit})")
    for code, s in result.landmarks.items():
        print(f"{code:<8} {s.mre:7.2f} {s.sd:7.2f} {s.sdr[2.0]:6.1%} {s.sdr[4.0]:6.1%}")
    o = result.overall
    print(f"{'all':<8} {o.mre:7.2f} {o.sd:7.2f} {o.sdr[2.0]:6.1%} {o.sdr[4.0]:6.1%}  n={o.n}")
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=1))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from .checkpoint import Checkpoint
    from .predictor import Predictor

    predictor = Predictor(
        Checkpoint.load(args.checkpoint), precision=args.precision or "auto", local=not args.global_only
    )
    images = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("L")))
        except OSError as exc:
            raise CliError(f"cannot read image {path}: {exc}") from exc
    spacing = [args.spacing] * len(images) if args.spacing else None
    out = [
        {"image": str(p), **pred.to_dict()}
        for p, pred in zip(args.images, predictor.predict(images, spacing), strict=True)
    ]
    print(json.dumps(out, indent=1))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .checkpoint import Checkpoint

    ck = Checkpoint.load(args.checkpoint)
    meta = ck.metadata()
    meta["sha256"] = ck.sha256
    meta["backbone"] = to_dict(ck.backbone)
    print(json.dumps(meta, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
