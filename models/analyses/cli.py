"""`kamp analyse`: a checkpoint's landmarks on image files, measured by the catalogue's analyses."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import load_catalogue
from .measure import Measurements, measure


def add_command(sub: argparse._SubParsersAction, common: Any) -> None:
    """Add `analyse` to the `kamp` parser's subcommands; `common(parser)` adds the precision options."""
    a = sub.add_parser("analyse", help="cephalometric measurements of a checkpoint's landmarks on image files")
    a.add_argument("--checkpoint", type=Path, required=True)
    a.add_argument("images", nargs="+", type=Path)
    a.add_argument("--spacing", help="pixel spacing in mm, 'S' or 'SX,SY' (all images; without it lengths are omitted)")
    known = ",".join(x.code for x in load_catalogue().analyses)
    a.add_argument("--analyses", help=f"comma-separated analyses (default all): {known}")
    a.add_argument(
        "--errors",
        help="each landmark's mean radial error, for the plausible ranges: a number (mm, every landmark) or a JSON "
        "file {code: mm} (e.g. the version's per-landmark validation MRE)",
    )
    a.add_argument("--mapping", type=Path, help="JSON file {catalogue code: the checkpoint's code} where they differ")
    a.add_argument("--json", action="store_true", help="print JSON instead of tables")
    common(a)
    a.set_defaults(func=run)


def _spacing(spec: str | None) -> tuple[float, float] | None:
    if spec is None:
        return None
    try:
        parts = [float(p) for p in spec.split(",")]
    except ValueError as exc:
        raise ValueError(f"--spacing wants 'S' or 'SX,SY' in mm, got {spec!r}") from exc
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise ValueError(f"--spacing wants one or two positive numbers, got {spec!r}")
    return (parts[0], parts[-1])


def _errors(spec: str | None, codes: list[str]) -> dict[str, float] | None:
    if spec is None:
        return None
    try:
        return dict.fromkeys(codes, float(spec))
    except ValueError:
        data = json.loads(Path(spec).read_text())
        return {str(k): float(v) for k, v in data.items()}


def run(args: argparse.Namespace) -> int:
    """Predict each image with the checkpoint and print its measurements (tables, or JSON with --json)."""
    from PIL import Image

    from models.analyses import to_catalogue

    from ..checkpoint import Checkpoint
    from ..predictor import Predictor

    predictor = Predictor(
        Checkpoint.load(args.checkpoint), precision=args.precision or "auto", local=not args.global_only
    )
    spacing = _spacing(args.spacing)
    chosen = args.analyses.split(",") if args.analyses else None
    for name in chosen or []:
        load_catalogue().analysis(name)  # KeyError naming the known ones
    mapping = json.loads(args.mapping.read_text()) if args.mapping else {}
    if args.errors is not None and spacing is None:
        raise ValueError("--errors are in mm: give the images' --spacing too")
    errors = _errors(args.errors, predictor.codes)
    out = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L"))
        except OSError as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
        prediction = predictor.predict([pixels], [spacing])[0]
        points = to_catalogue({lm.code: (lm.x, lm.y) for lm in prediction.landmarks}, mapping)
        lm_errors = to_catalogue(errors, mapping) if errors else None
        out.append((path, measure(points, spacing, analyses=chosen, landmark_error=lm_errors)))
    if args.json:
        print(json.dumps([_as_json(p, m) for p, m in out], indent=1))
    else:
        for path, result in out:
            _print_table(path, result)
    return 0


def _as_json(path: Path, m: Measurements) -> dict[str, Any]:
    return {
        "image": str(path),
        "measurements": [asdict(v) for v in m.values],
        "omitted": [asdict(o) for o in m.omitted],
    }


def _print_table(path: Path, m: Measurements) -> None:
    print(f"{path}")
    print(f"  {'analysis':<15} {'measurement':<13} {'value':>9} {'range':>17} {'norm':>13}  class")
    for v in m.values:
        digits = 2 if v.unit == "ratio" else 1
        rng = f"{v.low:.{digits}f} .. {v.high:.{digits}f}" if v.low is not None and v.high is not None else ""
        norm = f"{v.norm_mean:g} ± {v.norm_sd:g}" if v.norm_mean is not None else ""
        print(f"  {v.analysis:<15} {v.code:<13} {v.value:>7.2f} {v.unit:<3}{rng:>15} {norm:>13}  {v.class_name or ''}")
    for o in m.omitted:
        print(f"  {o.analysis:<15} {o.code:<13} omitted: {o.reason}")
