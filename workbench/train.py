"""One training loop for every model.

The Trainer reads a RunConfig, trains the model the config names through the model contract
(``loss``, ``log_prob``, ``sample``), writes the run folder, and emits typed events
(``workbench.events``) to any number of subscribers. It knows nothing about terminals: the
headless runner and the TUI are two subscribers. It checks a cancellation flag between steps,
so a worker thread can stop it; cancelling writes a checkpoint first.

Determinism: batches are a function of (seed, step) (see ``workbench.data``), the global RNG
state is saved in every checkpoint, and validation and sampling run on forked RNG streams, so
a run resumed from a checkpoint ends with the same weights as an uninterrupted one (on CPU).
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import defaultdict
from typing import Callable

import torch

from workbench import events as ev
from workbench.config import RunConfig
from workbench.data import TrainBatches, load_data
from workbench.devices import resolve_device
from workbench.errors import UserError
from workbench.images import save_grid
from workbench.runs import Run, build_model

Subscriber = Callable[[object], None]


def _lr_factor(train_cfg, total_steps: int) -> Callable[[int], float]:
    warmup = train_cfg.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train_cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


class Trainer:
    def __init__(self, config: RunConfig, run: Run, *, device: str | None = None, resume: bool = False,
                 cancel: threading.Event | None = None):
        self.config, self.run = config, run
        self.device = resolve_device(device or config.run.device)
        self.resume = resume
        self.cancel = cancel or threading.Event()
        self.subscribers: list[Subscriber] = []
        self.step = 0

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    def emit(self, event) -> None:
        for fn in self.subscribers:
            fn(event)

    # -- the whole run ---------------------------------------------------------------------------
    def fit(self) -> ev.Finished:
        """Train to the end (or until cancelled); raise UserError on failure, after writing the
        status and emitting Failed."""
        try:
            return self._fit()
        except UserError as e:
            self._fail(str(e))
            raise
        except torch.cuda.OutOfMemoryError:
            msg = (f"out of GPU memory at step {self.step} with batch size {self.config.data.batch_size}; "
                   f"lower it (--set data.batch_size={max(1, self.config.data.batch_size // 2)}) and resume")
            self._fail(msg)
            raise UserError(msg, exit_code=1) from None
        except RuntimeError as e:
            if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
                raise
            msg = (f"out of memory at step {self.step} with batch size {self.config.data.batch_size}; "
                   f"lower it (--set data.batch_size={max(1, self.config.data.batch_size // 2)}) and resume")
            self._fail(msg)
            raise UserError(msg, exit_code=1) from None

    def _fail(self, message: str) -> None:
        self.run.write_status("failed", self.step, message)
        self.emit(ev.Failed(self.step, message))

    def _fit(self) -> ev.Finished:
        cfg, device = self.config, self.device
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        splits = load_data(cfg.data, device)
        batches = TrainBatches(splits, cfg.data, cfg.run.seed)
        total = cfg.train.max_steps or cfg.train.epochs * batches.steps_per_epoch
        model = build_model(cfg).to(device)
        conditional = model.num_classes is not None
        Adam = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
        params = [p for p in model.parameters() if p.requires_grad]  # a frozen stage (e.g. a prior's VQ-VAE) stays out
        opt = Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                   betas=(cfg.train.beta1, cfg.train.beta2))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.train, total))
        self.best, self.bad_validations = math.inf, 0
        self.saved_step = 0
        if self.resume:
            self._restore(self.run.load_checkpoint("last", map_location=device), model, opt, sched)
            self.run.truncate_metrics(self.step)
        self.model, self.opt, self.sched, self.splits = model, opt, sched, splits
        self.run.write_status("running", self.step)
        self.emit(ev.Started(self.run.path, self.step, total, sum(p.numel() for p in params), str(device)))

        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.train.bf16
                    else contextlib.nullcontext())
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        count, seen, busy = 0, 0, 0.0
        reason = "completed"
        model.train()
        while self.step < total:
            if self.cancel.is_set():
                reason = "cancelled"
                break
            tick = time.perf_counter()
            self.step += 1
            x, y = batches.batch(self.step)
            with autocast:
                parts = model.loss(x, y if conditional else None)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
            sched.step()
            for key, value in parts.items():
                sums[key] += value.detach().float()
            count, seen = count + 1, seen + x.shape[0]
            last = self.step == total
            if self.step % cfg.train.log_every == 0 or last:
                means = self._finite_means(sums, count)  # .item() waits for the device: its work is timed too
                busy += time.perf_counter() - tick
                row = {"step": self.step, "epoch": batches.epoch_of(self.step), "split": "train", **means,
                       "lr": sched.get_last_lr()[0], "images_per_s": seen / busy}
                self.run.append_metrics(row)
                self.emit(ev.Step(self.step, total, row["epoch"], means, row["lr"], row["images_per_s"]))
                sums.clear()
                count, seen, busy = 0, 0, 0.0
            else:
                busy += time.perf_counter() - tick
            if (cfg.train.val_every and self.step % cfg.train.val_every == 0) or last:
                self._validate()
            if (cfg.sample.every and self.step % cfg.sample.every == 0) or last:
                self._sample()
            if (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0) or last:
                self._finite_means(sums, count)
                self._checkpoint("last")
            if cfg.train.early_stopping and self.bad_validations >= cfg.train.early_stopping:
                reason = "early-stopped"
                break
        if self.saved_step != self.step:
            self._finite_means(sums, count)
            self._checkpoint("last")
        if reason != "cancelled" and cfg.eval.test:
            self._test()
        self.run.write_status(reason if reason != "completed" else "finished", self.step)
        done = ev.Finished(self.step, reason)
        self.emit(done)
        return done

    # -- pieces ------------------------------------------------------------------------------------
    def _finite_means(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        means = {k: v.item() / count for k, v in sums.items()} if count else {}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            last = self.saved_step
            raise UserError(
                f"{bad[0]} became {means[bad[0]]} by step {self.step}; lower train.lr or set train.grad_clip, then "
                f"resume from the last good checkpoint: genwb run --resume {self.run.path} --set train.lr={self.config.train.lr / 10:g}"
                + (f" (checkpoint at step {last})" if last else ""), exit_code=1)
        return means

    def _rng_fork(self, seed: int):
        """Validation and sampling draw from their own RNG stream, leaving training's untouched."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []))
        torch.manual_seed(seed)
        return stack

    def evaluate_nll(self, x: torch.Tensor, y: torch.Tensor, limit: int = 0) -> dict[str, float]:
        """Mean negative log-likelihood (nats per image) and bits/dim of ``log_prob`` over x."""
        model, bs = self.model, self.config.eval.batch_size
        if limit:
            x, y = x[:limit], y[:limit]
        was_training = model.training
        model.eval()
        total = 0.0
        with torch.no_grad(), self._rng_fork(self.config.run.seed + 1):
            for i in range(0, len(x), bs):
                yb = y[i:i + bs] if model.num_classes is not None else None
                total += -model.log_prob(x[i:i + bs], yb).double().sum().item()
        model.train(was_training)
        nll = total / len(x)
        return {"nll": nll, "bpd": nll / (model.num_dims * math.log(2))}

    def _validate(self) -> None:
        limit = self.config.train.val_batches * self.config.eval.batch_size
        metrics = self.evaluate_nll(self.splits.val_x, self.splits.val_y, limit)
        improved = metrics["nll"] < self.best
        if improved:
            self.best, self.bad_validations = metrics["nll"], 0
        else:
            self.bad_validations += 1
        self.run.append_metrics({"step": self.step, "split": "val", **metrics})
        self.emit(ev.Evaluated(self.step, "val", metrics, best=improved))
        if improved:
            self._checkpoint("best")

    def _sample(self) -> None:
        model = self.model
        model.eval()
        with self._rng_fork(self.config.run.seed + 2):
            images = model.sample(self.config.sample.n).float().cpu()
        model.train()
        path = save_grid(images, self.run.sample_path(self.step))
        self.emit(ev.Samples(self.step, path, images))

    def _test(self) -> None:
        if self.run.checkpoint_path("best").exists():
            self.model.load_state_dict(self.run.load_checkpoint("best", map_location=self.device)["model"])
        metrics = self.evaluate_nll(self.splits.test_x, self.splits.test_y)
        self.run.update_eval({"test_nll": metrics["nll"], "test_bpd": metrics["bpd"],
                              "likelihood": "exact" if self.model.exact_likelihood else "lower bound",
                              "checkpoint": "best", "test_images": len(self.splits.test_x)})
        self.emit(ev.Evaluated(self.step, "test", metrics))

    def _checkpoint(self, which: str) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "step": self.step,
            "best": self.best,
            "bad_validations": self.bad_validations,
            "config": self.config.to_dict(),
        }
        path = self.run.save_checkpoint(which, state)
        if which == "last":
            self.saved_step = self.step
            self.run.write_status("running", self.step)
        self.emit(ev.Checkpointed(self.step, path))

    def _restore(self, state, model, opt, sched) -> None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_cpu"].cpu())
            if self.device.type == "cuda" and state["rng_cuda"]:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
            self.step, self.best, self.bad_validations = state["step"], state["best"], state["bad_validations"]
            self.saved_step = self.step
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"{self.run.checkpoint_path('last')}: does not match this run's model or config "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); start a new run") from None
