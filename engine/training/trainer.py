"""A small training loop shared by every `ihuman train` task: steps, logs, checkpoints, resume.

The trained part is written into a bundle (engine.checkpoint) every
`checkpoint_every` steps and at the end; beside it the optimizer state (as
safetensors) and `train_<task>.json` (step, seed) let a later run resume
where this one stopped. Each log row goes to `train_<task>.jsonl` and
`train_<task>.csv`.

The loop runs where the model is (the task moves its modules, the loop moves
each batch). `bf16` autocasts the loss to bfloat16 on either device while the
weights, gradients and optimizer state stay in float32 (bf16 has float32's
range, so no loss scaling). On an H200 it made the tiny LR-A2V step only 1.14x
faster (3.14 vs 2.76 steps/s at batch 32): that step is bound by kernel launches
and the host, not by arithmetic (at paper size, where matrix products dominate,
the gain should be far larger: not measured yet).
`time_limit_s` ends a run early with a checkpoint, so a lent machine's time can
be spent to the minute and the run resumed later. With
`average` (a decay), the bundle's part holds the exponential moving average of the
weights (engine/training/average.py) and `raw_<task>.safetensors` the weights the
optimizer moves, which a resumed run continues.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from engine.checkpoint import BundleError, load_state, save_bundle
from engine.config import Config
from engine.exceptions import ConfigError
from engine.training.average import WeightAverage

log = logging.getLogger(__name__)

StepFn = Callable[[dict], tuple[Tensor, dict[str, float]]]
"""batch -> (loss, stats)."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int  # total optimizer steps (a resumed run continues up to this)
    lr: float = 1e-3
    weight_decay: float = 0.0
    checkpoint_every: int = 200
    log_every: int = 10
    grad_clip: float = 1.0
    warmup: int = 100  # steps of linear learning-rate warm-up, then a cosine decay to `final_lr_ratio`
    final_lr_ratio: float = 0.1
    bf16: bool = False  # autocast the loss to bfloat16 (float32 weights and optimizer)
    time_limit_s: float | None = None  # stop with a checkpoint once a step ends past this wall time
    average: float | None = None  # decay of the weights' moving average the bundle stores (None: raw)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): a function of the step, so resume keeps it."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (self.final_lr_ratio + (1 - self.final_lr_ratio) * cosine)


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on `device` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    state = opt.state_dict()["state"]
    return {
        f"{index}.{key}": value
        for index, entry in state.items()
        for key, value in entry.items()
        if torch.is_tensor(value)
    }


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


class Trainer:
    def __init__(
        self,
        task: str,
        part: str,
        model: nn.Module,
        config: Config,
        out: Path,
        settings: TrainSettings,
        extra_parts: dict[str, nn.Module] | None = None,
    ) -> None:
        self.task, self.part, self.model, self.config = task, part, model, config
        self.out, self.settings = Path(out), settings
        self.extra_parts = extra_parts or {}  # saved with the part (e.g. a task head)
        params = [p for m in (model, *self.extra_parts.values()) for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.step = 0
        self.fine_tuning = False  # started from the bundle's weights of the part (see resume)
        self.device = next(model.parameters()).device
        self.out.mkdir(parents=True, exist_ok=True)
        self._state_file = self.out / f"train_{task}.json"
        self._optimizer_file = self.out / f"optimizer_{task}.safetensors"
        self._raw_file = self.out / f"raw_{task}.safetensors"  # the optimizer's weights, when averaging
        if settings.average and self.extra_parts:  # an averaged part beside a raw head would skew both
            raise ConfigError(
                f"--average is for tasks without a task head ({task} trains {list(self.extra_parts)})"
            )
        self.average = WeightAverage(model, settings.average) if settings.average else None

    def resume(self) -> bool:
        """Load the part, optimizer and step of an earlier run in `out`, if there is one.

        Without one, a part the bundle already holds (an exported or converted checkpoint) is
        where training starts, at step 0 with a fresh optimizer: fine-tuning, never silently
        training over it from scratch (`fine_tuning` says so)."""
        if not self._state_file.is_file():
            weights = self.out / f"{self.part}.safetensors"
            if weights.is_file():
                load_state(self.model, weights, self.part)
                self.fine_tuning = True
                if self.average is not None:
                    self.average = WeightAverage(self.model, self.average.decay)
                log.info("%s: fine-tuning the bundle's %s from %s", self.task, self.part, weights)
            return False
        state = json.loads(self._state_file.read_text())
        part_file = self.out / f"{self.part}.safetensors"
        load_state(self.model, part_file, self.part)
        if self.average is not None:  # the part holds the average (or, from a run without one, a start)
            self.average = WeightAverage(self.model, self.average.decay)
        # An averaging run stored the optimizer's weights apart; they are current only while no
        # other run (another task on the same part) has rewritten the part since. A copied folder
        # gets new times: training then continues from the average, which is safe.
        if state.get("raw_for") == part_file.stat().st_mtime_ns and self._raw_file.is_file():
            load_state(self.model, self._raw_file, self.part)
        for name, module in self.extra_parts.items():
            load_state(module, self.out / f"{self.task}_{name}.safetensors", name)
        try:
            _load_optimizer(self.optimizer, load_file(str(self._optimizer_file)))
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise BundleError(f"{self._optimizer_file}: cannot resume the optimizer ({err})") from None
        self.step = int(state["step"])
        log.info("resumed %s at step %d from %s", self.task, self.step, self.out)
        return True

    def averaged(self) -> contextlib.AbstractContextManager[nn.Module]:
        """The model with the weights the bundle stores (the average, when there is one)."""
        return self.average.applied(self.model) if self.average else contextlib.nullcontext(self.model)

    def checkpoint(self) -> None:
        # merge: the bundle keeps its other parts and this folder's logs and training state.
        with self.averaged() as stored:
            meta = {self.task: {"step": self.step, "average": self.settings.average}}
            save_bundle(self.out, self.config, {self.part: stored}, meta=meta, merge=True)
        state: dict[str, object] = {"task": self.task, "step": self.step}
        if self.average is not None:
            raw = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
            save_file(raw, str(self._raw_file))
            state["raw_for"] = (self.out / f"{self.part}.safetensors").stat().st_mtime_ns
        else:
            self._raw_file.unlink(missing_ok=True)
        for name, module in self.extra_parts.items():
            tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
            save_file(tensors, str(self.out / f"{self.task}_{name}.safetensors"))
        save_file(
            {k: v.contiguous() for k, v in _optimizer_tensors(self.optimizer).items()},
            str(self._optimizer_file),
        )
        self._state_file.write_text(json.dumps(state))

    def _log(self, row: dict[str, float]) -> None:
        with (self.out / f"train_{self.task}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.out / f"train_{self.task}.csv"
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def run(
        self, batches: Iterator[dict], step_fn: StepFn, on_step: Callable[[int, dict], None] | None = None
    ) -> bool:
        """Train until settings.steps, checkpointing and logging on the way. False when the time
        limit stopped it first (the last step is checkpointed: the same command resumes)."""
        s = self.settings
        self.model.train()
        start = time.perf_counter()
        while self.step < s.steps:
            if s.time_limit_s is not None and time.perf_counter() - start >= s.time_limit_s:
                self.checkpoint()
                log.info("%s: time limit reached at step %d", self.task, self.step)
                return False
            batch = to_device(next(batches), self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=s.bf16):
                loss, stats = step_fn(batch)
            lr = s.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model, self.step)
            self.step += 1
            row = {
                "step": self.step,
                "loss": float(loss.detach()),
                "lr": lr,
                "seconds": time.perf_counter() - start,
                **stats,
            }
            if self.step % s.log_every == 0 or self.step == s.steps:
                self._log(row)
            if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                self.checkpoint()
            if on_step:
                on_step(self.step, row)
        if self.step == 0:  # zero steps store the part as built: an estimate that is its picture
            self.checkpoint()
        return True
