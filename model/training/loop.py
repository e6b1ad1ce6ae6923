"""The one training loop, shared by the default model's recipe and ``onepass finetune``.

Each front door brings its batches (``(step, {kind: sub-batch})`` from a step-seeded source, so
that a resume continues the same draws), its losses, its schedule and how it checkpoints; the
loop owns what must not differ between them: the optimizer step (losses summed over the step's
sub-batches, gradient clipping, the learning rate by step), the moving average of the weights,
the jsonl log, evaluation every few hundred steps, a checkpoint every few minutes, and stopping
cleanly on SIGTERM / Ctrl-C, a time limit or a step limit (always with a last checkpoint).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

__all__ = ["Loop", "stop_on_signals"]


def stop_on_signals() -> tuple[threading.Event, Callable[[], None]]:
    """An event set by SIGTERM / SIGINT (when called from the main thread): finish the step, save,
    exit; and a function that puts the previous handlers back."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return stop, restore


@dataclass
class Loop:
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    losses: Callable[[torch.nn.Module, dict], dict[str, torch.Tensor]]  # one sub-batch -> named losses
    total: Callable[[dict[str, torch.Tensor]], torch.Tensor]  # named losses -> the loss to minimise
    lr_at: Callable[[int], float]
    save: Callable[[int, float], None]  # (step, seconds spent) -> checkpoint (and export)
    device: torch.device
    ema: torch.nn.Module | None = None  # updated after every step when given
    ema_decay: float = 0.998
    clip: float = 1.0
    evaluate: Callable[[int], dict] | None = None
    stage: Callable[[int], str] | None = None  # a label for the log (the recipe's curriculum stage)

    def step(self, batches: dict, step: int, sums: dict) -> float:
        """One optimizer step over the step's sub-batches; adds each loss to ``sums``; returns the grad norm."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        self.opt.zero_grad(set_to_none=True)
        for kind, batch in batches.items():
            batch = {k: ([t.to(self.device) for t in v] if isinstance(v, list) else v.to(self.device)) for k, v in batch.items()}
            losses = self.losses(self.model, batch)
            self.total(losses).backward()
            for k, v in losses.items():
                sums[f"{kind[0]}_{k}"] = sums.get(f"{kind[0]}_{k}", 0.0) + float(v.detach())
        params = [p for g in self.opt.param_groups for p in g["params"]]
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                d = min(self.ema_decay, (1 + step) / (10 + step))
                for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                    pe.lerp_(pm, 1 - d)
        return float(gnorm)

    def run(self, batches: Iterable[tuple[int, dict]], *, step: int, spent_s: float, log_path: Path,
            max_steps: int | None = None, minutes: float | None = None, save_every_min: float = 10.0,
            eval_every: int = 250, log_every: int = 10) -> int:
        """Train from ``step`` until the batches end or a limit or signal stops it; returns the last step."""
        log = open(log_path, "a")

        def record(rec: dict) -> None:
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()

        t0, t_saved = time.time() - spent_s, time.time()
        stop_at = time.time() + minutes * 60 if minutes else None
        stop, restore = stop_on_signals()
        sums: dict[str, float] = {}
        count = 0
        self.model.train()
        try:
            for got_step, batch in batches:
                assert got_step == step, (got_step, step)
                if stop.is_set() or (stop_at and time.time() >= stop_at) or (max_steps is not None and step >= max_steps):
                    break
                gnorm = self.step(batch, step, sums)
                step, count = step + 1, count + 1
                if step % log_every == 0 or step == 1:
                    stage = {"stage": self.stage(step - 1)} if self.stage else {}
                    record({"step": step, **stage, "min": round((time.time() - t0) / 60, 2), "lr": round(self.lr_at(step - 1), 6),
                            "gnorm": round(gnorm, 3), **{k: round(v / count, 4) for k, v in sorted(sums.items())}})
                    sums, count = {}, 0
                if self.evaluate is not None and eval_every and step % eval_every == 0:
                    record({"step": step, "eval": self.evaluate(step), "min": round((time.time() - t0) / 60, 2)})
                    self.model.train()
                if time.time() - t_saved > save_every_min * 60:
                    self.save(step, time.time() - t0)
                    t_saved = time.time()
                    print(f"checkpoint at step {step}", flush=True)
            self.save(step, time.time() - t0)
        finally:
            restore()
            log.close()
        print(f"stopped at step {step} after {(time.time() - t0) / 60:.1f} min", flush=True)
        return step
