"""IKL protocol benchmark: every strategy through every step of a protocol, evaluated after each step.

    python -m bench.ikl --protocol cld38-5step --profile cpu --strategies finetune,lwf,cpr,kamp,joint

A strategy may carry TrainConfig overrides for its steps 1 and later, measured as an arm of its own beside the
defaults: `--strategies kamp@ka_mode=pseudo_label` (bench/arms.py).

Writes bench/results/<protocol>-<profile>/: results.json, table.md and PNG plots; checkpoints/ and evals/ hold
the resumable work (a rerun skips every (strategy, seed, step) already evaluated, and a step interrupted
mid-way resumes from its training-state file). Runs with other seeds merge into the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.atomic_file import write_bytes_atomically
from models.checkpoint import Checkpoint
from models.config import CodecConfig
from models.datasets import Protocol, default_data_root, load_protocol
from models.evaluate import evaluate
from models.predictor import Predictor
from models.trainer import Progress, train_step

from .arms import Arm, parse_arm
from .compute import compute_kind, cpu_model
from .evals import eval_name, record_errors
from .jsonio import write_json
from .profiles import (
    PROFILES,
    STEP0_FREE,
    Profile,
    add_precision_argument,
    check_profile,
    checked_profile,
    step_cap,
    stored_profile,
    with_later_fields,
    with_precision,
)
from .report import write_report
from .steps import joint_budget, step_data, train_config

RESULTS = Path(__file__).resolve().parent / "results"
#: Step 0, shared by every arm of a seed: supervised training of the first landmark set.
STEP0 = Arm("step0", "finetune")


class Runner:
    def __init__(self, protocol: Protocol, profile: Profile, data_root: Path, out: Path, device: str) -> None:
        """Raises SystemExit where `out` holds results of other profile settings (precision included)."""
        #: The settings as profile.json holds them (JSON: lists, not tuples).
        self.settings = json.loads(json.dumps(checked_profile(profile, device)))
        check_profile(out, self.settings)
        self.protocol, self.profile, self.out, self.device = protocol, profile, out, device
        self.ds = protocol.load_dataset(data_root)
        test_ids = protocol.test_images[: profile.max_test_images]
        self.test = self.ds.step_data(test_ids, protocol.landmarks, protocol.annotator)
        self.names = {lm.code: lm.name for lm in self.ds.landmarks}

    def step_sizes(self, t: int) -> list[int]:
        """Training images of steps 0..t (as the profile caps them)."""
        return [len(self.protocol.steps[s].images[: step_cap(self.profile, s)]) for s in range(t + 1)]

    def ckpt_path(self, strategy: str, seed: int, t: int) -> Path:
        sub = "shared" if t == 0 else strategy
        return self.out / "checkpoints" / f"seed{seed}" / sub / f"step{t}.safetensors"

    def eval_path(self, strategy: str, seed: int, t: int) -> Path:
        return self.out / "evals" / eval_name(strategy, seed, t)

    def train(self, arm: Arm, seed: int, t: int, previous: Checkpoint | None, path: Path) -> tuple[Checkpoint, float]:
        """Train step t of an arm's chain from `previous` (resuming from its state file) and save it at `path`;
        the checkpoint and the training's seconds."""
        data = step_data(self.protocol, self.ds, arm.strategy, t, self.profile)
        inner: dict[str, tqdm] = {}

        def progress(p: Progress) -> None:
            b = inner.get(p.stage)
            if b is None:
                b = inner[p.stage] = tqdm(
                    total=p.total,
                    desc=f"  {arm.name} s{seed} t{t} {p.stage}",
                    leave=False,
                    initial=p.iteration - 1,
                    unit="it",
                )
            b.update(p.iteration - b.n)
            b.set_postfix({k: f"{v:.3g}" for k, v in p.losses.items()})

        config = train_config(self.profile, seed, t, self.device, arm.train_overrides)
        scratch = joint_budget(config, self.profile, arm.budget, t, self.step_sizes(t))
        t0 = time.perf_counter()
        checkpoint, _ = train_step(
            None if scratch else previous,
            data,
            "finetune" if t == 0 or scratch else arm.strategy,
            config,
            backbone=self.profile.backbone_config(),
            codec=CodecConfig(input_size=self.profile.input_size, sigma=self.profile.sigma),
            refine=self.profile.refine_config(),
            names=self.names,
            progress=progress,
            state_path=path.with_suffix(".state"),
        )
        seconds = time.perf_counter() - t0
        for b in inner.values():
            b.close()
        checkpoint.save(path)
        return checkpoint, seconds

    def run_one(self, arm: Arm, seed: int, t: int, previous: Checkpoint | None, bar: tqdm) -> Checkpoint:
        """Step t of arm's chain for seed: its kept checkpoint or a new one trained from `previous`, evaluated on
        the test images unless its evaluation is already recorded."""
        path = self.ckpt_path(arm.name, seed, t)
        if path.is_file():
            checkpoint, seconds = Checkpoint.load(path), None
        else:
            checkpoint, seconds = self.train(arm, seed, t, previous, path)
        epath = self.eval_path(arm.name, seed, t)
        retrained = seconds is not None
        if not epath.is_file() or (retrained and self.evaluated_another(epath, checkpoint, arm.name, seed, t)):
            record = self.evaluation(arm, seed, t, checkpoint, seconds)
            write_json(epath, record)
            mre = np.nanmean(np.concatenate(list(record_errors(record).values())))
            bar.set_postfix(last=f"{arm.name} s{seed} t{t}: {mre:.2f} {record['unit']}")
        bar.update(1)
        return checkpoint

    def evaluated_another(self, epath: Path, checkpoint: Checkpoint, strategy: str, seed: int, t: int) -> bool:
        """Whether step t, just retrained (its checkpoint was lost), must be evaluated again: its record names
        another model (training is not bit-for-bit repeatable across machines and thread counts). A step >= 1 is,
        so that its chain stays one line of models; step 0 is kept, shared by the chains grown from the old one,
        which table.md marks."""
        recorded = json.loads(epath.read_text()).get("checkpoint_sha256")
        if recorded == checkpoint.sha256:
            return False
        if t == 0:
            tqdm.write(
                f"warning: step 0 of seed {seed} was retrained ({checkpoint.sha256[:12]}) and differs from the "
                f"evaluated one ({str(recorded)[:12]}); its chains are marked in table.md"
            )
            return False
        tqdm.write(f"{strategy} seed {seed} step {t} was retrained: evaluating it again")
        return True

    def evaluation(self, arm: Arm, seed: int, t: int, checkpoint: Checkpoint, seconds: float | None) -> dict[str, Any]:
        """The evaluation record of step t's model on the test images (every landmark learned up to t): per-image
        radial errors of each landmark, and of the first stage alone for a two-stage model."""
        test = self.test.select(self.protocol.landmarks_up_to(t))
        predictor = Predictor(checkpoint, precision=self.profile.precision)
        result = evaluate(predictor, test)
        record: dict[str, Any] = {
            "strategy": arm.name,
            **({"base_strategy": arm.strategy, "overrides": arm.overrides} if arm.overrides else {}),
            "seed": seed,
            "step": t,
            "unit": result.unit,
            "train_seconds": seconds,
            **({"trained_on": compute_kind(self.device)} if seconds is not None else {}),
            "checkpoint_sha256": checkpoint.sha256,
            "parent_sha256": checkpoint.parent_sha256,
            "train_config": checkpoint.train_config,  # what trained it, should a default change between runs
            "triplets": checkpoint.report.get("triplets", []),
            "kanet_loss": checkpoint.report.get("kanet_loss"),
            "seconds_per_image": checkpoint.report.get("seconds_per_image"),
            "ids": result.ids,
            "errors": {c: _nan_list(result.errors[:, j]) for j, c in enumerate(result.codes)},
        }
        if predictor.stages == 2:  # the same model's first stage alone, for the side-by-side tables
            first = evaluate(Predictor(checkpoint, precision=self.profile.precision, local=False), test)
            record["errors_global"] = {c: _nan_list(first.errors[:, j]) for j, c in enumerate(first.codes)}
            record["local_seconds"] = checkpoint.report.get("refine_seconds")
        return record

    def run(self, arms: list[Arm], seeds: list[int], max_steps: int | None, only: list[int] | None = None) -> None:
        """Every arm's chain through its steps, per seed. `only`: these steps alone, for arms whose steps >= 1 each
        train from nothing (`joint@budget=scratch`: none needs the one before); ValueError for another arm."""
        if only is not None:
            self.run_independent(arms, seeds, only)
            return
        steps = min(self.protocol.num_steps, max_steps or self.protocol.num_steps)
        total = len(seeds) * (1 + len(arms) * (steps - 1))
        with tqdm(total=total, desc=f"{self.protocol.name} {self.profile.name}", unit="step") as bar:
            for seed in seeds:
                step0: Checkpoint | None = None
                for arm in arms:
                    start = self.resume_point(arm.name, seed, steps)
                    bar.update(start - 1)  # steps already evaluated
                    if start == 1:  # the chain starts from step 0 (with --max-steps 1, step 0 is all it has)
                        if step0 is None:
                            self.adopt_step0(seed)
                        step0 = step0 or self.run_one(STEP0, seed, 0, None, bar)
                    if start >= steps:
                        continue  # every step of this chain is evaluated: nothing to train
                    previous = step0 if start == 1 else Checkpoint.load(self.ckpt_path(arm.name, seed, start - 1))
                    for t in range(start, steps):
                        previous = self.run_one(arm, seed, t, previous, bar)
                if step0 is None:
                    bar.update(1)  # step 0 was not needed by any chain

    def run_independent(self, arms: list[Arm], seeds: list[int], only: list[int]) -> None:
        """Steps `only` (each >= 1) of from-scratch arms, each trained from nothing unless it is evaluated already:
        the long steps of the oracle can run apart, in separate sessions. ValueError for another arm or step."""
        dependent = [a.name for a in arms if a.budget != "scratch"]
        if dependent:
            raise ValueError(f"--steps needs arms whose steps train from scratch; {', '.join(dependent)} do not")
        bad = [t for t in only if not 1 <= t < self.protocol.num_steps]
        if bad:
            last = self.protocol.num_steps - 1
            raise ValueError(f"steps {bad} are not incremental steps of {self.protocol.name} (1..{last})")
        with tqdm(total=len(seeds) * len(arms) * len(only), desc=f"{self.protocol.name} {self.profile.name}") as bar:
            for seed in seeds:
                for arm in arms:
                    for t in only:
                        if self.eval_path(arm.name, seed, t).is_file():
                            bar.update(1)
                            continue
                        self.run_one(arm, seed, t, None, bar)

    def adopt_step0(self, seed: int) -> bool:
        """Copy seed's step-0 model, and its evaluation where this folder lacks it, from the folder of the profile
        whose step 0 this one's is (Profile.step0_of) when this folder has no step-0 model and that one has both;
        whether it did. A fresh checkout has the evaluation (committed) without the model (not kept): the model
        is taken again, not retrained (training is not bit-for-bit repeatable, so a retrained one would not be
        the model the evaluation describes). Refuses (SystemExit) a folder whose runs are of other step-0
        settings, or whose step-0 evaluation is not that folder's."""
        own_ckpt, own_eval = self.ckpt_path(STEP0.name, seed, 0), self.eval_path(STEP0.name, seed, 0)
        if self.profile.step0_of is None or own_ckpt.is_file():
            return False
        base = self.out.parent / f"{self.protocol.name}-{self.profile.step0_of}"
        their_ckpt, their_eval = (base / p.relative_to(self.out) for p in (own_ckpt, own_eval))
        if not (their_ckpt.is_file() and their_eval.is_file()):
            return False
        stored = with_later_fields(stored_profile(base) or {})
        differ = sorted(k for k, v in self.settings.items() if k not in STEP0_FREE and stored.get(k) != v)
        if differ:
            raise SystemExit(f"{base} holds step 0 of other settings ({', '.join(differ)}): cannot take it")
        if own_eval.is_file() and own_eval.read_bytes() != their_eval.read_bytes():
            raise SystemExit(f"{own_eval} is not the evaluation of {their_ckpt}: move it away to take that model")
        for src, dst in ((their_ckpt, own_ckpt), (their_eval, own_eval)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(dst, src.read_bytes())  # a run starting beside this one reads all or nothing
        tqdm.write(f"step 0 of seed {seed}: taken from {base}")
        return True

    def resume_point(self, strategy: str, seed: int, steps: int) -> int:
        """The first step of the chain still to run: after the last step that is evaluated and, unless the
        chain is complete, whose checkpoint is kept to continue from (checkpoints are not committed, so a
        fresh checkout restarts an incomplete chain from the latest checkpoint it has)."""
        done = 1
        while done < steps and self.eval_path(strategy, seed, done).is_file():
            done += 1
        if done >= steps:
            return steps
        while done > 1 and not self.ckpt_path(strategy, seed, done - 1).is_file():
            done -= 1
        return done


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in a]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.ikl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--protocol", required=True)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument(
        "--strategies",
        default="finetune,lwf,cpr,kamp,joint",
        help="comma-separated strategies, each optionally with overrides: kamp@ka_mode=pseudo_label",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument(
        "--steps",
        help="comma-separated steps to run alone (arms trained from scratch only, e.g. joint@budget=scratch)",
    )
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS, help="results root (default bench/results)")
    p.add_argument("--device", default="auto")
    add_precision_argument(p)
    p.add_argument("--report-only", action="store_true", help="only rebuild results.json, table and plots")
    args = p.parse_args(argv)
    try:
        arms = [parse_arm(s) for s in args.strategies.split(",") if s]
        seeds = [int(s) for s in args.seeds.split(",")]
        only = [int(t) for t in args.steps.split(",")] if args.steps else None
        data_root = args.data_root or default_data_root()
        protocol = load_protocol(data_root, args.protocol)
    except ValueError as exc:
        p.error(str(exc))
    profile = with_precision(PROFILES[args.profile], args.precision)
    out = args.out / f"{protocol.name}-{profile.name}"
    if args.report_only:  # the folder's own settings, whatever precision this machine would pick
        stored = stored_profile(out)
        settings = with_later_fields(stored) if stored else checked_profile(profile, args.device)
    else:
        t0 = time.perf_counter()
        try:
            Runner(protocol, profile, data_root, out, args.device).run(arms, seeds, args.max_steps, only)
        except ValueError as exc:
            p.error(str(exc))
        settings = checked_profile(profile, args.device)
        _append_wall(
            out,
            {
                "strategies": [a.name for a in arms],
                "seeds": seeds,
                "seconds": time.perf_counter() - t0,
                "machine": machine(),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
    results = write_report(out, protocol, settings)
    print(f"wrote {out}/results.json, table.md and plots ({len(results['strategies'])} strategies)")
    return 0


def _append_wall(out: Path, entry: dict[str, Any]) -> None:
    path = out / "runs.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append(entry)
    write_json(path, runs)


if __name__ == "__main__":
    sys.exit(main())
