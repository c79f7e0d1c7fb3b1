"""One training loop for every model.

The Trainer reads a RunConfig, trains the model the config names through the model contract
(``loss``, ``log_prob``, ``sample``), writes the run folder, and emits typed events
(``workbench.events``) to any number of subscribers. It knows nothing about terminals: the
headless runner and the TUI are two subscribers. It checks a cancellation flag between steps,
so a worker thread or a signal handler can stop it; cancelling writes a checkpoint first, and
the run's state becomes ``stop_state`` ("cancelled", "interrupted" for a signal, "paused").

Failures are one-line ``UserError``s (exit code 1) after status "failed" is written: a loss or
weights that stop being finite (no checkpoint is ever written from such weights, so the advice
names one that is good), running out of memory (naming the setting of the phase that ran out),
and a write that fails (a full disk: the previous checkpoint stays intact).

Determinism: batches are a function of (seed, step) (see ``workbench.data``), the global RNG
state is saved in every checkpoint, and validation and sampling run on forked RNG streams, so
a run resumed from a checkpoint ends with the same weights as an uninterrupted one (on CPU).

Data parallel: under torchrun (``genwb run --nproc N``; see ``workbench.distributed``) each rank
trains on its share of the same global batch through DistributedDataParallel, the ranks agree
on when to stop, validation and test are sharded, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import errno
import math
import shlex
import threading
import time
from collections import defaultdict
from typing import Callable

import torch

from models.cudagraph import device_lock
from workbench import distributed
from workbench import accel
from workbench import events as ev
from workbench.config import RunConfig
from workbench.data import TrainBatches, load_data
from workbench.devices import forked_rng, resolve_device
from workbench.errors import UserError, one_line, os_error_text
from workbench.images import save_grid
from workbench.runs import Run, build_model, load_weights

Subscriber = Callable[[object], None]
# How torch's samplers refuse NaN or infinite probabilities (weights that diverged).
_NON_FINITE_PROBABILITIES = ("p_in >= 0 && p_in <= 1", "probability tensor contains either", "to satisfy the constraint")


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
    """``resume=True`` continues from ``checkpoint`` ("last" or "best"); a run that wrote no
    checkpoint yet starts again from step 0 with its saved config."""

    def __init__(self, config: RunConfig, run: Run, *, device: str | None = None, resume: bool = False,
                 cancel: threading.Event | None = None, checkpoint: str = "last", label: str = "genwb run",
                 resume_advice: str | None = None):
        if checkpoint not in ("last", "best"):
            raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
        if resume and checkpoint == "best" and not run.checkpoint_path("best").exists():
            raise UserError(f"{run.checkpoint_path('best')}: no such checkpoint (the run has not validated yet); "
                            f"resume from the last one: genwb run --resume {shlex.quote(str(run.path))}")
        self.config, self.run = config, run
        self.device = resolve_device(device or config.run.device)
        self.resume, self.checkpoint = resume, checkpoint
        self.cancel = cancel or threading.Event()
        self.stop_state = "cancelled"  # the state written when the cancel flag stops the run
        self.label = label  # who trains, in the run's writer lease ("genwb run", "job j3")
        self.resume_advice = resume_advice  # how to carry on after a failure, where not genwb run --resume
        self.subscribers: list[Subscriber] = []
        self.step = self.saved_step = 0
        self.phase = "training"  # what runs now, for out-of-memory advice
        # A rank of a data-parallel run (torchrun): rank 0 alone writes the run folder.
        self.world = distributed.from_env() if distributed.active() else None
        self.main = self.world is None or self.world.main
        if not self.main:
            self.run = distributed.FollowerRun(run)
        self._vote = None  # distributed.StopVote of a data-parallel run
        self._self_updated: list[torch.Tensor] = []  # tensors a model writes outside autograd (rank 0's win)
        self._rank_rng_restored = False

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    def emit(self, event) -> None:
        for fn in self.subscribers:
            fn(event)

    # -- the whole run ---------------------------------------------------------------------------
    def fit(self) -> ev.Finished:
        """Train to the end (or until cancelled); raise UserError on failure, after writing the
        status and emitting Failed. The run's writer lease is held throughout (by rank 0 alone in
        a data-parallel run); ``lease.Busy`` if another process or thread writes the run."""
        from workbench.runs import writing

        with writing(self.run.path, "trained", self.label) if self.main else contextlib.nullcontext():
            return self._fit_reporting()

    def _fit_reporting(self) -> ev.Finished:
        try:
            return self._fit()
        except UserError as e:
            self._fail(str(e))
            raise
        except torch.cuda.OutOfMemoryError:
            msg = self._oom_advice("out of GPU memory")
            self._fail(msg)
            raise UserError(msg, exit_code=1) from None
        except (RuntimeError, ValueError, MemoryError) as e:
            text = str(e)
            if self.world and distributed.lost_peer(e):
                msg = (f"rank {self.world.rank} lost the other ranks at step {self.step} ({self.phase}): another rank died or "
                       f"hung (see its output above); resume from step {self.saved_step}: {self._resume_command()}")
                self._fail(msg)
                raise UserError(msg, exit_code=1) from None
            if self.phase == "sampling" and any(sign in text for sign in _NON_FINITE_PROBABILITIES):
                error = self._diverged("sampling met probabilities that are not finite")
                self._fail(str(error))
                raise error from None
            if not isinstance(e, MemoryError) and "can't allocate memory" not in text and "out of memory" not in text:
                self._fail(f"{type(e).__name__}: {one_line(text, 200)}")
                raise
            msg = self._oom_advice("out of memory")
            self._fail(msg)
            raise UserError(msg, exit_code=1) from None
        except OSError as e:
            error = self._os_failure(e, f" ({e.filename})" if e.filename else "")
            self._fail(str(error))
            raise error from None
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the last checkpoint is where a resume starts
            self._write_status("interrupted", self.saved_step, f"aborted at step {self.step}; resume from step {self.saved_step}")
            raise
        except Exception as e:  # a bug: the caller shows it, the run folder says it failed
            self._fail(f"{type(e).__name__}: {one_line(e, 200)}")
            raise

    def _resume_command(self, extra: str = "") -> str:
        if self.resume_advice is not None:
            return self.resume_advice + extra
        nproc = f" --nproc {self.world.size}" if self.world else ""
        return f"genwb run --resume {shlex.quote(str(self.run.path))}{nproc}{extra}"

    def _os_failure(self, e: OSError, where: str) -> UserError:
        fix = "free space" if e.errno == errno.ENOSPC else "fix that"
        return UserError(f"{os_error_text(e)}{where} at step {self.step}; {fix} and resume: {self._resume_command()}", exit_code=1)

    def _oom_advice(self, what: str) -> str:
        if self.phase == "training":
            bs, key = self.config.data.batch_size, "data.batch_size"
        else:  # validation, test and sampling all work in batches of eval.batch_size
            bs, key = self.config.eval.batch_size, "eval.batch_size"
        return (f"{what} at step {self.step} ({self.phase}) with {key} = {bs}; lower it and resume: "
                f"{self._resume_command(f' --set {key}={max(1, bs // 2)}')}")

    def _write_status(self, state: str, step: int, error: str | None = None) -> None:
        try:
            self.run.write_status(state, step, error)
        except OSError:  # a full disk: the message still reaches the user through the exception
            pass

    def _fail(self, message: str) -> None:
        self._write_status("failed", self.step, message)
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
        num_params = sum(p.numel() for p in params)
        opt = Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                   betas=(cfg.train.beta1, cfg.train.beta2))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.train, total))
        self.best, self.bad_validations = math.inf, 0
        self.saved_step = 0
        if self.resume:
            which = self.run.resume_checkpoint(self.checkpoint)
            if which:
                with device_lock(device):  # it sets the device's random generator
                    self._restore(which, self.run.load_checkpoint(which, map_location=device), model, opt, sched)
            self.run.truncate_metrics(self.step)  # no checkpoint: start again from step 0
        self.model, self.opt, self.sched, self.splits = model, opt, sched, splits
        loss_fn, rows = self._data_parallel(model, batches) if self.world else (model.loss, slice(None))
        # bf16 autocast, torch.compile of the loss or a CUDA graph of the step (workbench.accel);
        # all off, the step is the eager fp32 one
        graphed = accel.use_cuda_graph(cfg.train.cuda_graph, device.type, model.loss_capturable(), num_params,
                                       compile=cfg.train.compile, data_parallel=self.world is not None)
        bf16 = accel.use_bf16(cfg.train.bf16, device.type, num_params)
        step_fn = accel.training_step(loss_fn, compile=cfg.train.compile, cuda_graph=graphed, params=params, bf16=bf16,
                                      warn=lambda message: self.emit(ev.Warned(self.step, message)))
        step_mode = ", ".join(m for m in ("CUDA graph" if graphed else "",
                                          "" if cfg.train.compile == "off" else f"compile {cfg.train.compile}",
                                          "bf16" if bf16 else "") if m) or "eager"
        self.run.write_status("running", self.step)
        self.phase = "training"
        if cfg.log.tensorboard and self.main:  # TensorBoard events from this event stream
            from workbench.tensorboard import EventWriter

            self.subscribe(EventWriter(self.run.path, warn=lambda message: self.emit(ev.Warned(self.step, message))))
        self.emit(ev.Started(self.run.path, self.step, total, num_params, str(device), step_mode))
        # another thread's CUDA graph capture on this device refuses random draws: wait for it
        rng_lock = device_lock(device)
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        count, seen, busy = 0, 0, 0.0
        reason = "completed"
        model.train()
        while self.step < total:
            if self._stop_agreed():
                reason = "cancelled"
                break
            self.phase = "training"
            tick = time.perf_counter()
            self.step += 1
            x, y = batches.batch(self.step)
            x, y = x[rows], y[rows]  # this rank's share of the global batch
            if not step_fn.owns_grads:  # a CUDA graph's step writes its gradients itself
                opt.zero_grad(set_to_none=True)
            with rng_lock:  # the forward (under autocast) and backward: a loss may draw random numbers
                parts = step_fn(x, y if conditional else None)
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
            sched.step()
            for tensor in self._self_updated:  # see _data_parallel
                distributed.broadcast_(tensor.data)
            for key, value in parts.items():
                sums[key] += value.detach().float()
            count, seen = count + 1, seen + x.shape[0] * (self.world.size if self.world else 1)
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
        if self._stop_agreed(final=True) and reason == "completed":
            reason = "cancelled"  # stopped while loading: nothing to test
        if reason != "cancelled" and cfg.eval.test:
            self._test()
        state = {"completed": "finished", "cancelled": self.stop_state}.get(reason, reason)
        self.run.write_status(state, self.step)
        done = ev.Finished(self.step, reason)
        self.emit(done)
        return done

    # -- data parallel (a torchrun rank; see workbench.distributed) ---------------------------------
    def _data_parallel(self, model, batches):
        """The loss through DistributedDataParallel (so its gradient hooks average the
        gradients over the ranks) and the rows of each global batch that this rank trains on.

        Buffers (MADE's mask counter, the VAE's warm-up counter, the VQ-VAE's EMA statistics
        and usage window) are broadcast from rank 0 before every forward (DDP's
        ``broadcast_buffers``), so they stay identical on every rank; statistics a forward
        gathers (the VQ-VAE's EMA) are therefore rank 0's share of the batch. A codebook that
        k-means, dead-code restarts or the EMA write outside autograd is broadcast from rank 0
        after every step."""
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        from models.vqvae import VectorQuantizer
        from workbench.data import _mix

        world = self.world
        distributed.check_batch(batches.batch_size, world.size)
        share = batches.batch_size // world.size
        if world.rank and not self._rank_rng_restored:  # each rank draws its own noise (VAE, dropout)
            torch.manual_seed(_mix(self.config.run.seed, world.rank, self.step))
        # only codebooks that change outside autograd: not a frozen one (a prior's VQ-VAE, in eval
        # mode), nor one trained by its gradient alone, which DDP averages like any parameter
        self._self_updated = [p for m in model.modules()
                              if isinstance(m, VectorQuantizer) and m.training and (m.ema or m.restart_dead or m.kmeans_init)
                              for p in m.parameters(recurse=False)]
        sync = {"forward_sync_buffers": True} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
            else {"broadcast_buffers": True}  # its older name
        net = DistributedDataParallel(_Loss(model), device_ids=[self.device] if self.device.type == "cuda" else None, **sync)
        self._vote = distributed.StopVote()
        return net, slice(world.rank * share, (world.rank + 1) * share)

    def _stop_agreed(self, final: bool = False) -> bool:
        """Whether to stop now: the cancel flag, agreed by every rank of a data-parallel run."""
        if self._vote is None:
            return self.cancel.is_set()
        if not final:
            return self._vote(self.cancel.is_set())
        self._vote.close()
        return distributed.any_rank(self.cancel.is_set())

    # -- pieces ------------------------------------------------------------------------------------
    def _finite_means(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        if self.world and count:  # the means over every rank's share: the global batch's
            keys = sorted(sums)
            total = distributed.all_reduce_sum(torch.stack([sums[k] for k in keys])) / self.world.size
            sums = dict(zip(keys, total))
        means = {k: v.item() / count for k, v in sums.items()} if count else {}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise self._diverged(f"{bad[0]} became {means[bad[0]]}")
        return means

    def _diverged(self, what: str) -> UserError:
        """The advice after a NaN: a smaller learning rate (or clipping), from the last checkpoint,
        which holds finite weights since none is written from weights that are not."""
        lr = min(self.config.train.lr / 10, 1e-3)  # 1e-3 is safe for Adam, whatever the lr that diverged
        fix = f" --set train.lr={lr:.3g}" if float(f"{lr:.3g}") > 0 else ""
        if self.config.train.grad_clip == 0:
            fix += " --set train.grad_clip=1"
        if self.saved_step:
            start = f"the checkpoint at step {self.saved_step}"
        elif self.run.checkpoint_path("best").exists():  # where a resume without last.pt starts
            start = "checkpoints/best.pt"
        else:
            start = "step 0, as no checkpoint was written yet"
        return UserError(f"{what} by step {self.step}; lower train.lr or set train.grad_clip, then resume from "
                         f"{start}: {self._resume_command(fix)}", exit_code=1)

    def _weights_finite(self) -> bool:
        flags = [torch.isfinite(p.detach()).all() for p in self.model.parameters() if p.is_floating_point()]
        return bool(torch.stack(flags).all().item()) if flags else True

    def evaluate_nll(self, x: torch.Tensor, y: torch.Tensor, limit: int = 0) -> dict[str, float]:
        """Mean negative log-likelihood (nats per image) and bits/dim of ``log_prob`` over x."""
        model, bs = self.model, self.config.eval.batch_size
        if limit:
            x, y = x[:limit], y[:limit]
        count = len(x)
        if self.world:  # each rank scores its slice; the sums are added up below
            share = -(-count // self.world.size)
            x, y = x[self.world.rank * share:(self.world.rank + 1) * share], y[self.world.rank * share:(self.world.rank + 1) * share]
        was_training = model.training
        model.eval()
        total = 0.0
        with torch.no_grad(), forked_rng(self.config.run.seed + 1, self.device):
            for i in range(0, len(x), bs):
                yb = y[i:i + bs] if model.num_classes is not None else None
                total += -model.log_prob(x[i:i + bs], yb).double().sum().item()
        model.train(was_training)
        if self.world:
            total = distributed.all_reduce_sum(torch.tensor([total], dtype=torch.float64)).item()
        nll = total / count
        return {"nll": nll, "bpd": nll / (model.num_dims * math.log(2))}

    def _validate(self) -> None:
        self.phase = "validation"
        limit = self.config.train.val_batches * self.config.eval.batch_size
        metrics = self.evaluate_nll(self.splits.val_x, self.splits.val_y, limit)
        if not math.isfinite(metrics["nll"]):
            raise self._diverged(f"validation nll became {metrics['nll']}")
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
        if not self.main:  # rank 0 alone draws the pictures; the others wait at the next collective
            return
        self.phase = "sampling"
        model, n, bs = self.model, self.config.sample.n, self.config.eval.batch_size
        model.eval()
        with torch.no_grad(), forked_rng(self.config.run.seed + 2, self.device):  # in batches: any sample.n fits in memory
            images = torch.cat([model.sample(min(bs, n - i)).float().cpu() for i in range(0, n, bs)])
            recon = self._reconstructions()
        model.train()
        if recon is not None:  # emitted first, so that the step's last event is its samples
            recon_path = save_grid(recon, self.run.path / "samples" / f"recon-step-{self.step}.png", nrow=len(recon) // 2)
            self.emit(ev.Samples(self.step, recon_path, recon, kind="recon"))
        path = save_grid(images, self.run.sample_path(self.step))
        self.emit(ev.Samples(self.step, path, images))

    def _reconstructions(self, pairs: int = 8):
        """Latent models: the first validation images above their reconstructions (2 rows), or None."""
        from workbench.sampling import OPERATIONS, reconstruct

        if self.model.registered_name not in OPERATIONS["recon"]:
            return None
        x, y = self.splits.val_x[:pairs], self.splits.val_y[:pairs]
        return reconstruct(self.model, x, y if self.model.num_classes is not None else None)

    def _test(self) -> None:
        self.phase = "test"
        if self.world:
            distributed.barrier()  # rank 0 has finished writing best.pt
        if self.run.checkpoint_path("best").exists():
            load_weights(self.model, self.run.load_checkpoint("best", map_location=self.device), self.run.checkpoint_path("best"))
        metrics = self.evaluate_nll(self.splits.test_x, self.splits.test_y)
        from workbench.evaluate import likelihood_notes

        self.run.update_eval({"test_nll": metrics["nll"], "test_bpd": metrics["bpd"], **likelihood_notes(self.model),
                              "checkpoint": "best", "test_images": len(self.splits.test_x)})
        self.emit(ev.Evaluated(self.step, "test", metrics))

    def _checkpoint(self, which: str) -> None:
        if not self._weights_finite():
            raise self._diverged("the weights stopped being finite")
        with device_lock(self.device):
            rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [])
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng_cpu": rng[0],
            "rng_cuda": rng[1],
            "step": self.step,
            "best": self.best,
            "bad_validations": self.bad_validations,
            "config": self.config.to_dict(),
        }
        if self.world:  # every rank's RNG, so that each draws its own noise after a resume too
            mine = {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8)}
            state["rng_ranks"] = distributed.gather_objects(mine)
        try:
            path = self.run.save_checkpoint(which, state)
        except OSError as e:
            raise self._os_failure(e, " writing checkpoint") from None
        if which == "last":
            self.saved_step = self.step
            self.run.write_status("running", self.step)
        self.emit(ev.Checkpointed(self.step, path))

    def _restore(self, which: str, state, model, opt, sched) -> None:
        load_weights(model, state, self.run.checkpoint_path(which))
        try:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            self._apply_optimizer_config(opt, sched)
            torch.set_rng_state(state["rng_cpu"].cpu())
            if self.device.type == "cuda" and state["rng_cuda"]:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
            ranks = state.get("rng_ranks") or []
            if self.world and len(ranks) == self.world.size:  # else (another world size) _data_parallel reseeds
                torch.set_rng_state(ranks[self.world.rank]["cpu"].cpu())
                if self.device.type == "cuda" and ranks[self.world.rank]["cuda"].numel():
                    torch.cuda.set_rng_state(ranks[self.world.rank]["cuda"].cpu(), self.device)
                self._rank_rng_restored = True
            self.step, self.best, self.bad_validations = state["step"], state["best"], state["bad_validations"]
            self.saved_step = self.step
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise UserError(f"{self.run.checkpoint_path(which)}: does not match this run's model or config "
                            f"({type(e).__name__}: {one_line(e, 120)}); start a new run") from None

    def _apply_optimizer_config(self, opt, sched) -> None:
        """The config's lr, betas and weight decay win over the checkpoint's, so a resume with
        ``--set train.lr=...`` (the advice after a NaN) takes effect; unchanged, this is exact."""
        t = self.config.train
        sched.base_lrs = [t.lr] * len(opt.param_groups)
        for group in opt.param_groups:
            group["initial_lr"], group["betas"], group["weight_decay"] = t.lr, (t.beta1, t.beta2), t.weight_decay
            group["lr"] = t.lr * sched.lr_lambdas[0](sched.last_epoch)


class _Loss(torch.nn.Module):
    """``model.loss`` as a module's forward, for DistributedDataParallel to wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y=None):
        return self.model.loss(x, y)
