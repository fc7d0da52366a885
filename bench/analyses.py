"""Cephalometric measurements from predicted landmarks against the annotators' (issue 20).

    python -m bench.analyses --checkpoint ISBI_MODEL [--cld-checkpoint CLD38_MODEL] [--threads 1] \\
        [--out bench/results/analyses.json]

- ISBI 2015 test1 and test2, each on its own: every measurement of models.analyses that ISBI's 19 landmarks
  allow, taken from the senior annotator's points (the reference), the junior annotator's points (the human
  anchor) and the checkpoint's predictions. Per measurement: the mean absolute error of the value against the
  senior's, in the measurement's unit (deg, mm, % or a plain ratio), and the classification accuracy (share of
  images whose clinical class equals the senior's; measurements without classes have none). The eight ISBI 2015
  challenge measurements (analysis `isbi2015`) come first, with the count of those where the model is at least
  as good as the junior on both figures (target: 6 of 8); every other analysis follows as a secondary table.
- cld38-5step's test images (with `--cld-checkpoint`, a 38-landmark model): the model against the `cld`
  annotation on every measurement (one annotator: no human anchor).
Without `--checkpoint` only the junior-vs-senior anchor is measured (seconds). Measurements are single values:
no landmark errors, no sampled ranges. Writes the JSON (per split, per measurement: n, n_<source>, mae_<source>,
acc_<source> as a fraction, unit) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.analyses import MeasuredValue, load_catalogue, measure
from models.checkpoint import Checkpoint
from models.datasets import DatasetInfo, default_data_root, load_dataset, load_protocol
from models.precision import set_torch_threads
from models.predictor import Predictor

from .ikl import RESULTS, machine

#: The analysis whose measurements the target counts, and the target: this many of them at least the junior's.
ISBI_ANALYSIS = "isbi2015"
TARGET = 6
ISBI_SPLITS = ("test1", "test2")
CLD_PROTOCOL = "cld38-5step"
#: Images predicted at a time (their arrays are dropped after each chunk).
CHUNK = 16

#: image id -> {catalogue code: (x, y) image pixels}.
Points = dict[str, dict[str, tuple[float, float]]]
#: image id -> {"analysis/code": the measured value}.
Values = dict[str, dict[str, MeasuredValue]]
Row = dict[str, Any]


def annotated_points(ds: DatasetInfo, ids: Sequence[str], annotator: str) -> Points:
    """One annotator's landmarks of each image that has them, in image pixels."""
    known = load_catalogue().landmarks
    return {
        i: {c: p for c, p in ds.labels[(i, annotator)].items() if c in known}
        for i in ids
        if (i, annotator) in ds.labels
    }


def predicted_points(predictor: Predictor, ds: DatasetInfo, ids: Sequence[str]) -> Points:
    """The predictor's landmarks of each image, in image pixels (those with a catalogue code)."""
    known = load_catalogue().landmarks
    out: Points = {}
    for start in range(0, len(ids), CHUNK):
        batch = list(ids[start : start + CHUNK])
        images = [ds.load_image(i) for i in batch]
        predictions = predictor.predict(images, spacing_mm=[ds.pixel_spacing_mm] * len(batch))
        ds.clear_cache()
        for image_id, prediction in zip(batch, predictions, strict=True):
            out[image_id] = {lm.code: (lm.x, lm.y) for lm in prediction.landmarks if lm.code in known}
    return out


def measured(points: Points, spacing_mm: float | None) -> Values:
    """Every measurement of every analysis that each image's points allow (no ranges: single values)."""
    pair = None if spacing_mm is None else (spacing_mm, spacing_mm)
    out: Values = {}
    for image_id, pts in points.items():
        result = measure(pts, pair, landmark_error=None, samples=0)
        out[image_id] = {f"{v.analysis}/{v.code}": v for v in result.values}
    return out


def agreement(reference: Values, other: Values, key: str) -> tuple[int, float | None, float | None]:
    """(n, MAE, accuracy) of `other` against `reference` for one measurement over the images both measure: the
    mean absolute difference of the values in the measurement's unit, and the share (0..1) of images whose class
    is the reference's (None where the measurement has no classes). (0, None, None) where no image has both."""
    pairs = [(ref[key], other[i][key]) for i, ref in reference.items() if key in ref and key in other.get(i, {})]
    if not pairs:
        return 0, None, None
    mae = float(np.mean([abs(a.value - b.value) for a, b in pairs]))
    classed = [(a, b) for a, b in pairs if a.class_code is not None]
    accuracy = float(np.mean([a.class_code == b.class_code for a, b in classed])) if classed else None
    return len(pairs), mae, accuracy


def table(reference: Values, sources: Mapping[str, Values | None]) -> dict[str, Row]:
    """Per measurement ("analysis/code", catalogue order) the reference's image count and each source's
    n_<name>, mae_<name> and acc_<name> against it (0 and None for a source that is absent)."""
    keys = list(dict.fromkeys(k for values in reference.values() for k in values))
    rows: dict[str, Row] = {}
    for key in keys:
        first = next(values[key] for values in reference.values() if key in values)
        row: Row = {"analysis": first.analysis, "code": first.code, "name": first.name, "unit": first.unit}
        row["n"] = sum(key in values for values in reference.values())
        for name, values in sources.items():
            n, mae, accuracy = agreement(reference, values, key) if values is not None else (0, None, None)
            row |= {f"n_{name}": n, f"mae_{name}": mae, f"acc_{name}": accuracy}
        rows[key] = row
    return rows


def at_least_junior(row: Row) -> bool | None:
    """Whether the model's MAE is at most and its accuracy at least the junior's; a measurement without classes
    is judged on its MAE alone. None where the model cannot take it (landmarks it lacks): not met."""
    mae_m, mae_j, acc_m, acc_j = (row.get(k) for k in ("mae_model", "mae_junior", "acc_model", "acc_junior"))
    if mae_m is None or mae_j is None:
        return None
    return mae_m <= mae_j and (acc_j is None or (acc_m is not None and acc_m >= acc_j))


def landmark_mre(predicted: Points, reference: Points, spacing_mm: float) -> dict[str, float]:
    """Each landmark's mean radial error (mm) of `predicted` against `reference` over the images both have."""
    errors: dict[str, list[float]] = {}
    for image_id, ref in reference.items():
        for code, (x, y) in ref.items():
            if code in predicted.get(image_id, {}):
                px, py = predicted[image_id][code]
                errors.setdefault(code, []).append(spacing_mm * float(np.hypot(px - x, py - y)))
    return {code: float(np.mean(e)) for code, e in errors.items()}


def range_coverage(
    predicted: Points, reference: Values, errors: Mapping[str, float], spacing_mm: float
) -> dict[str, float]:
    """Per measurement, the share of images whose reference value lies in the model's plausible range (nominally
    90%: its 5th to 95th percentile when each landmark moves by its error in `errors`, mm)."""
    hits: dict[str, list[bool]] = {}
    for image_id, pts in predicted.items():
        result = measure(pts, (spacing_mm, spacing_mm), landmark_error=errors)
        for v in result.values:
            key = f"{v.analysis}/{v.code}"
            ref = reference.get(image_id, {}).get(key)
            if ref is not None and v.low is not None and v.high is not None:
                hits.setdefault(key, []).append(v.low <= ref.value <= v.high)
    return {key: float(np.mean(h)) for key, h in hits.items()}


def isbi_split(
    ds: DatasetInfo, split: str, predicted: Points | None, errors: Mapping[str, float] | None, limit: int | None
) -> dict[str, Any]:
    """The senior-referenced table of one ISBI split: the junior always, the model where there is one (its
    predicted points), with its ranges' coverage where per-landmark `errors` (mm, from the other split) are given."""
    ids = ds.splits[split][:limit]
    spacing = ds.pixel_spacing_mm
    senior = measured(annotated_points(ds, ids, "senior"), spacing)
    junior = measured(annotated_points(ds, ids, "junior"), spacing)
    model = measured(predicted, spacing) if predicted is not None else None
    rows = table(senior, {"junior": junior, "model": model})
    result: dict[str, Any] = {"dataset": ds.name, "split": split, "reference": "senior", "images": len(ids)}
    if predicted is not None:
        isbi = [r for r in rows.values() if r["analysis"] == ISBI_ANALYSIS]
        for r in rows.values():
            r["model_at_least_junior"] = at_least_junior(r)
        result["target"] = {
            "measurements": len(isbi),
            "at_least_junior": sum(bool(r["model_at_least_junior"]) for r in isbi),
            "needed": TARGET,
        }
    if predicted is not None and errors:
        for key, share in range_coverage(predicted, senior, errors, spacing or 1.0).items():
            rows[key]["range_coverage"] = share
    return result | {"measurements": rows}


def cld_test(root: Path, predictor: Predictor, limit: int | None) -> dict[str, Any]:
    """The model against the protocol's annotation on cld38-5step's test images, every measurement."""
    protocol = load_protocol(root, CLD_PROTOCOL)
    ds = protocol.load_dataset(root)
    ids = protocol.test_images[:limit]
    reference = measured(annotated_points(ds, ids, protocol.annotator), ds.pixel_spacing_mm)
    model = measured(predicted_points(predictor, ds, ids), ds.pixel_spacing_mm)
    rows = table(reference, {"model": model})
    return {"dataset": ds.name, "split": "test", "reference": protocol.annotator, "images": len(ids)} | {
        "measurements": rows
    }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if unit == "ratio" else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(rows: Sequence[Row], sources: Sequence[str]) -> str:
    """A markdown table: per measurement its unit, n, and each source's MAE and accuracy (%)."""
    verdict = "model_at_least_junior" in (rows[0] if rows else {})
    covered = any("range_coverage" in r for r in rows)
    head = ["measurement", "unit", "n"] + [f"MAE {s}" for s in sources] + [f"acc % {s}" for s in sources]
    head += ["model >= junior"] if verdict else []
    head += ["in the 90% range %"] if covered else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['analysis']}/{r['code']}", r["unit"], str(r["n"])]
        cells += [_number(r[f"mae_{s}"], r["unit"]) for s in sources]
        cells += [_percent(r[f"acc_{s}"]) for s in sources]
        if verdict:
            cells.append({True: "yes", False: "no", None: "not measured"}[r["model_at_least_junior"]])
        if covered:
            cells.append(_percent(r.get("range_coverage")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(result: dict[str, Any], sources: Sequence[str]) -> str:
    """The markdown of one split: the ISBI 2015 eight, then the other analyses, then the target's count."""
    rows = list(result["measurements"].values())
    title = f"## {result['dataset']} {result['split']}: {result['images']} images, against the {result['reference']}"
    isbi = [r for r in rows if r["analysis"] == ISBI_ANALYSIS]
    other = [r for r in rows if r["analysis"] != ISBI_ANALYSIS]
    parts = [title, "", f"### {ISBI_ANALYSIS}", "", markdown(isbi, sources), "", "### other analyses", ""]
    parts.append(markdown(other, sources))
    if "target" in result:
        t = result["target"]
        met = "met" if t["at_least_junior"] >= t["needed"] else "NOT met"
        parts += ["", f"Model at least as good as the junior (MAE and accuracy) on {t['at_least_junior']} of "]
        parts[-1] += f"{t['measurements']} ISBI measurements (target: {t['needed']} of {t['measurements']}): {met}."
    return "\n".join(parts) + "\n"


def checkpoint_info(path: Path) -> dict[str, Any]:
    """The checkpoint file's path, sha256 of its bytes, step, strategy and landmark count."""
    checkpoint = Checkpoint.load(path)
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "step": checkpoint.step,
        "strategy": checkpoint.strategy,
        "landmarks": len(checkpoint.codes),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.analyses", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="a model of ISBI's landmarks (default: none)")
    p.add_argument("--cld-checkpoint", type=Path, default=None, help="a 38-landmark model for cld38-5step's test")
    p.add_argument("--data-root", type=Path, default=None, help="default: $KAMP_DATA_ROOT or ../shared/data")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each split (a quick look)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "analyses.json")
    args = p.parse_args(argv)
    for path in (args.checkpoint, args.cld_checkpoint):
        if path is not None and not path.is_file():
            p.error(f"checkpoint not found: {path}")
    threads = set_torch_threads(args.threads)
    root = args.data_root or default_data_root()
    result: dict[str, Any] = {"machine": machine() | {"threads": threads}, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    result |= {"checkpoint": None, "cld_checkpoint": None, "splits": {}}
    sources = ["junior", "model"] if args.checkpoint else ["junior"]
    isbi = load_dataset(root / "isbi2015")
    predicted: dict[str, Points] = {}
    if args.checkpoint is not None:
        result["checkpoint"] = checkpoint_info(args.checkpoint)
        predictor = Predictor(Checkpoint.load(args.checkpoint))
        predicted = {s: predicted_points(predictor, isbi, isbi.splits[s][: args.limit]) for s in ISBI_SPLITS}
    for split in ISBI_SPLITS:
        # The ranges' per-landmark errors come from the other split: what a validation set would give.
        other = next(s for s in ISBI_SPLITS if s != split)
        errors = None
        if predicted:
            reference = annotated_points(isbi, isbi.splits[other][: args.limit], "senior")
            errors = landmark_mre(predicted[other], reference, isbi.pixel_spacing_mm or 1.0)
        one = isbi_split(isbi, split, predicted.get(split), errors, args.limit)
        result["splits"][f"isbi2015/{split}"] = one
        print(report(one, sources))
    if args.cld_checkpoint is not None:
        result["cld_checkpoint"] = checkpoint_info(args.cld_checkpoint)
        one = cld_test(root, Predictor(Checkpoint.load(args.cld_checkpoint)), args.limit)
        result["splits"][f"{CLD_PROTOCOL}/test"] = one
        print(report(one, ["model"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
