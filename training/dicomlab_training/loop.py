"""The training loop: masked BCE, AMP, DDP, checkpoints every N steps and on SIGTERM, resume.

- Loss: ``BCEWithLogits`` with ``pos_weight`` from the training split's label counts, multiplied by
  the label mask (uncertain/missing = 0) and divided by (samples × labels) of the *global* batch, so
  the gradient is the same whether a batch runs in one process, in micro-batches, or over DDP ranks.
- CUDA: bf16 autocast (fp16 + GradScaler where bf16 is unsupported), channels_last, cudnn.benchmark,
  optional torch.compile, pinned memory and non-blocking copies. CPU: fp32 unless ``amp=bf16``.
- Distributed: torchrun's env:// (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``), NCCL on GPU,
  gloo on CPU; rank 0 alone writes checkpoints, models and reports.
- SIGTERM (spot interruption, pod eviction, ``kubectl delete``, torchrun forwarding its own SIGTERM) sets
  a flag (:class:`PreemptionFlag`, installed for the whole run by the runner). After the current step the
  ranks agree on it (an all_reduce MAX of the flag every step), so all of them stop at the same step;
  rank 0 writes a checkpoint of that step and :class:`Interrupted` is raised: ``train run`` exits with
  ``config.PREEMPTED_EXIT_CODE`` (143 = 128 + SIGTERM, what a shell reports for a process ended by SIGTERM).
  DataLoader workers ignore SIGTERM (``data.ignore_sigterm``), so a signal sent to the whole process
  group (the kubelet, torchrun) reaches the decision of the main process only.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn import functional as F  # noqa: N812

from dicomlab_training import augment
from dicomlab_training.checkpoint import Checkpointer, TrainState
from dicomlab_training.config import PREEMPTED_EXIT_CODE, TrainConfig
from dicomlab_training.data import (
    CachedBatches,
    EvalSampler,
    PreparedData,
    StepSampler,
    global_batch_size,
    loader,
)
from dicomlab_training.evaluate import evaluate_predictions
from dicomlab_training.model import Classifier

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """The run stopped on SIGTERM after writing a checkpoint."""

    exit_code = PREEMPTED_EXIT_CODE


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str, timeout_seconds: float = 1800) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1).

    ``timeout_seconds`` bounds every collective and barrier (NCCL's default is 10 minutes, and a barrier
    while another rank still decodes images would otherwise hit it); set it through
    ``TrainConfig.dist_timeout_seconds``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method="env://",
                                      timeout=datetime.timedelta(seconds=timeout_seconds))
    return DistInfo(rank=torch_dist.get_rank(), world=torch_dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def select_device(config: TrainConfig, dist: DistInfo) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but CUDA is not available")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if config.amp == "off":
        return None
    if device.type == "cuda":
        if config.amp == "fp16" or (config.amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if config.amp == "bf16" else None


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor,
               denominator: float) -> torch.Tensor:
    """Sum of the masked, pos-weighted BCE divided by ``denominator`` (global samples × labels)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight, reduction="none")
    return (loss * mask).sum() / denominator


class PreemptionFlag:
    """Records SIGTERM while installed (main thread only); the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> PreemptionFlag:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test thread): no handler
            self._previous = None
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _agree(flag: bool, dist: DistInfo, device: torch.device) -> bool:
    if not dist.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def build_optimizer(model: nn.Module, config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW (fused, one kernel for all parameters, when they are on CUDA) and the warm-up + cosine schedule."""
    on_cuda = all(p.is_cuda for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=True if on_cuda else None)
    warmup = max(0, config.warmup_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + float(np.cos(np.pi * progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@torch.no_grad()
def predict(model: nn.Module, dataset: CachedBatches, indices: npt.NDArray[np.int64], config: TrainConfig,
            dist: DistInfo, device: torch.device, dtype: torch.dtype | None) -> tuple[npt.NDArray[np.int64],
                                                                                       npt.NDArray[np.float32]]:
    """Logits for ``indices``, sharded over ranks without duplicates and gathered in index order."""
    model.eval()
    sampler = EvalSampler(indices, config.eval_batch_size, world=dist.world, rank=dist.rank)
    seen: list[npt.NDArray[np.int64]] = []
    out: list[npt.NDArray[np.float32]] = []
    for images, _t, _m, idx in loader(dataset, sampler, workers=0, pin=device.type == "cuda"):
        x = _to_input(images, device, config)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        out.append(logits.float().cpu().numpy())
        seen.append(idx.numpy())
    mine_idx = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    mine = np.concatenate(out) if out else np.zeros((0, len(dataset.targets[0])), np.float32)
    if dist.enabled:
        gathered: list[Any] = [None] * dist.world
        torch_dist.all_gather_object(gathered, (mine_idx, mine))
        mine_idx = np.concatenate([g[0] for g in gathered])
        mine = np.concatenate([g[1] for g in gathered])
    order = np.argsort(mine_idx, kind="stable")
    mine_idx, mine = mine_idx[order], mine[order]
    if len(np.unique(mine_idx)) != len(mine_idx) or len(mine_idx) != len(indices):
        raise RuntimeError("evaluation shards overlap or miss samples")
    return mine_idx, mine


def _to_input(images: torch.Tensor, device: torch.device, config: TrainConfig) -> torch.Tensor:
    x = images.to(device, non_blocking=True)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if device.type == "cuda" and config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def score(data: PreparedData, idx: npt.NDArray[np.int64], logits: npt.NDArray[np.float32],
          pos_weight: npt.NDArray[np.float32], threshold: float) -> dict[str, Any]:
    """Evaluation metrics plus the masked loss (same formula as training) for gathered logits."""
    targets, mask = data.table.targets[idx], data.table.mask[idx]
    z = logits.astype(np.float64)
    log_p, log_not_p = -np.logaddexp(0, -z), -np.logaddexp(0, z)
    bce = -(pos_weight * targets * log_p + (1 - targets) * log_not_p)
    metrics = evaluate_predictions(1 / (1 + np.exp(-z)), targets, mask, data.table.labels, threshold)
    metrics["loss"] = float((bce * mask).sum() / max(1, mask.size))
    return metrics


def selection_key(record: dict[str, Any], select_metric: str) -> tuple[float, float]:
    """How an epoch ranks for ``models/best.pt`` (higher is better; compared as a tuple, ties go to earlier).

    ``val_macro_auroc``: (AUROC, -validation loss), so when AUROC saturates (1.0 at every epoch) or is
    equal, the epoch with the lower validation loss wins instead of the first one; with an undefined
    AUROC the loss decides alone. ``val_loss``: (-validation loss, AUROC). Without a validation split:
    (-training loss, -inf).
    """
    if "val_loss" not in record:
        return -float(record["train_loss"]), float("-inf")
    loss = -float(record["val_loss"])
    auroc = record.get("val_macro_auroc")
    if select_metric == "val_loss":
        return loss, float("-inf") if auroc is None else float(auroc)
    if auroc is None:
        return float("-inf"), loss
    return float(auroc), loss


@dataclass
class Stepper:
    """One optimizer step of ``train run``: on-device augmentation, micro-batches with gradient accumulation
    (DDP gradient sync on the last), masked pos-weighted BCE over the global batch, gradient clipping,
    optimizer, grad scaler and scheduler. The loop and benchmarks/bench_training_gpu.py both call it."""

    config: TrainConfig
    runner: nn.Module
    """What runs the forward pass: the model, compiled and/or wrapped in DDP."""
    model: nn.Module
    """The plain model (its parameters are clipped)."""
    optimizer: Any
    scheduler: Any
    scaler: Any
    pos_weight: torch.Tensor
    device: torch.device
    dtype: torch.dtype | None
    dist: DistInfo
    global_batch: int
    labels: int

    def step(self, images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             positions: npt.NDArray[np.int64], epoch: int, step: int) -> float:
        """Train on this rank's share of global batch ``step`` of ``epoch``; returns its (scaled) loss."""
        config, micro = self.config, self.config.micro_batches
        params = augment.random_params(self.global_batch, config.augment,
                                       augment.batch_generator(config.seed, epoch, step))
        params = params[torch.from_numpy(positions)]
        x = _to_input(images, self.device, config)
        y, m = targets.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        denominator = float(self.global_batch * self.labels) / self.dist.world
        b = x.shape[0] // micro
        step_loss = 0.0
        for j in range(micro):
            part = slice(j * b, (j + 1) * b)
            xj = augment.apply(x[part], params[part]) if config.augment.enabled else x[part]
            sync = j == micro - 1 or not self.dist.enabled
            context = self.runner.no_sync() if not sync else _Null()  # type: ignore[operator]
            with context:
                with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    logits = self.runner(xj)
                loss = masked_bce(logits, y[part], m[part], self.pos_weight, denominator)
                self.scaler.scale(loss).backward()
            step_loss += float(loss.detach())
        if config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss


def prepare_model(model: Classifier, config: TrainConfig, device: torch.device) -> None:
    """CUDA settings of the loop: cudnn.benchmark, TF32, channels_last; then move the model to ``device``."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if config.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.to(device)


def wrap_model(model: nn.Module, config: TrainConfig, dist: DistInfo, device: torch.device) -> nn.Module:
    """The module that runs the forward pass: torch.compile (CUDA, when configured), then DDP."""
    runner: nn.Module = model
    if config.model.compile and device.type == "cuda":
        runner = torch.compile(runner)  # type: ignore[assignment]
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
    return runner


class EpochCallback(Protocol):
    """Called on rank 0 after each finished epoch with its record (the dict appended to ``TrainState.history``)."""

    def __call__(self, record: dict[str, Any], /) -> None: ...


class BestCallback(Protocol):
    """Called on rank 0 when an epoch becomes the best so far (``selection_key``), with the model and state."""

    def __call__(self, model: nn.Module, state: TrainState, /) -> None: ...


@dataclass(frozen=True)
class TrainCallbacks:
    """What :func:`train` calls back, on rank 0 only; each is optional."""

    on_epoch: EpochCallback | None = None
    save_best: BestCallback | None = None


@dataclass
class TrainSession:
    """Everything :func:`setup` builds for one run of the loop: the data path, the step and the state."""

    config: TrainConfig
    data: PreparedData
    model: Classifier
    dist: DistInfo
    device: torch.device
    checkpointer: Checkpointer
    dataset: CachedBatches
    sampler: StepSampler
    stepper: Stepper
    train_loader: Any
    state: TrainState

    def write_checkpoint(self) -> None:
        """Rank 0 saves model, optimizer, scheduler, scaler and state (the other ranks do nothing)."""
        if self.dist.is_main:
            stepper = self.stepper
            self.checkpointer.save(model=self.model, optimizer=stepper.optimizer, scheduler=stepper.scheduler,
                                   scaler=stepper.scaler, state=self.state, config_digest=self.config.digest())


def setup(config: TrainConfig, data: PreparedData, model: Classifier, dist: DistInfo, device: torch.device,
          checkpointer: Checkpointer) -> TrainSession:
    """Sampler, optimizer, schedule, scaler and the model on ``device``; the state of the last checkpoint
    when ``config.resume`` (refused when it was written with other settings); the runner (compile, DDP)."""
    dataset = CachedBatches(data)
    global_batch = global_batch_size(config, len(data.split.train), dist.world)
    sampler = StepSampler(data.split.train, global_batch, world=dist.world, rank=dist.rank,
                          micro_batches=config.micro_batches, seed=config.seed)
    total_steps = sampler.steps_per_epoch * config.epochs
    dtype = amp_dtype(config, device)
    prepare_model(model, config, device)
    optimizer, scheduler = build_optimizer(model, config, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    state = TrainState()
    payload = checkpointer.load() if config.resume else None
    if payload is not None:
        if payload["config_digest"] != config.digest():
            raise RuntimeError(f"the checkpoint in {checkpointer.url} was written with other settings; "
                               "use another output location or resume=false")
        state = Checkpointer.restore(payload, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        logger.info("resumed", extra={"epoch": state.epoch, "step": state.global_step})
    runner = wrap_model(model, config, dist, device)
    stepper = Stepper(config=config, runner=runner, model=model, optimizer=optimizer, scheduler=scheduler,
                      scaler=scaler, pos_weight=torch.from_numpy(data.pos_weight).to(device), device=device,
                      dtype=dtype, dist=dist, global_batch=global_batch, labels=len(data.table.labels))
    train_loader = loader(dataset, sampler, workers=config.num_workers, pin=device.type == "cuda")
    return TrainSession(config=config, data=data, model=model, dist=dist, device=device, checkpointer=checkpointer,
                        dataset=dataset, sampler=sampler, stepper=stepper, train_loader=train_loader, state=state)


def run_steps(session: TrainSession, sigterm: PreemptionFlag) -> int:
    """The steps of the epoch in progress (from ``state.step_in_epoch`` on); returns the images this rank saw.

    Every step the ranks agree on SIGTERM; on it rank 0 checkpoints that step and :class:`Interrupted` is
    raised. A checkpoint is also written every ``checkpoint_every_steps``; ``max_steps`` ends the epoch early.
    """
    config, dist, device, state, sampler = (session.config, session.dist, session.device, session.state,
                                            session.sampler)
    images_seen = 0
    for images, targets, mask, _idx in session.train_loader:
        step_loss = session.stepper.step(images, targets, mask, sampler.positions(), state.epoch,
                                         state.step_in_epoch)
        state.step_in_epoch += 1
        state.global_step += 1
        images_seen += images.shape[0]
        state.epoch_loss_sum += step_loss  # this rank's share, scaled: the mean over ranks is the global loss
        state.epoch_loss_steps += 1
        if config.step_delay:
            time.sleep(config.step_delay)
        stop = _agree(sigterm.raised, dist, device)
        limit = bool(config.max_steps and state.global_step >= config.max_steps)
        if stop or (config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0):
            session.write_checkpoint()
        if stop:
            if dist.enabled:
                torch_dist.barrier()
            raise Interrupted(f"stopped by SIGTERM at step {state.global_step}")
        if limit:
            break
    return images_seen


def end_epoch(session: TrainSession, seconds: float, images_seen: int, callbacks: TrainCallbacks) -> None:
    """Close a finished epoch: its record (mean loss over ranks, throughput, validation metrics), the best
    model so far, the callbacks, then the state moves to the next epoch and is checkpointed."""
    config, data, model, dist, device, state = (session.config, session.data, session.model, session.dist,
                                                session.device, session.state)
    train_loss = _mean_over_ranks(state.epoch_loss_sum / max(1, state.epoch_loss_steps), dist, device)
    record: dict[str, Any] = {"epoch": state.epoch, "train_loss": train_loss, "steps": state.global_step,
                              "seconds": round(seconds, 3),
                              "images_per_second": round(images_seen * dist.world / max(seconds, 1e-9), 2)}
    if len(data.split.val):
        sync_buffers(model, dist)
        idx, logits = predict(model, session.dataset, data.split.val, config, dist, device, session.stepper.dtype)
        val = score(data, idx, logits, data.pos_weight, config.threshold)
        record.update(val_loss=val["loss"], val_macro_auroc=val["macro_auroc"],
                      val_micro_auroc=val["micro_auroc"],
                      val_per_label_auroc={k: v["auroc"] for k, v in val["per_label"].items()})
    state.history.append(record)
    metric, tiebreak = selection_key(record, config.select_metric)
    if (metric, tiebreak) > (state.best_metric, state.best_tiebreak):
        state.best_metric, state.best_tiebreak, state.best_epoch = metric, tiebreak, state.epoch
        if dist.is_main and callbacks.save_best is not None:
            callbacks.save_best(model, state)
    logger.info("epoch done", extra={k: v for k, v in record.items() if not isinstance(v, dict)})
    if dist.is_main and callbacks.on_epoch is not None:
        callbacks.on_epoch(record)
    state.epoch += 1
    state.step_in_epoch = 0
    state.epoch_loss_sum, state.epoch_loss_steps = 0.0, 0
    session.write_checkpoint()


def train(config: TrainConfig, data: PreparedData, model: Classifier, dist: DistInfo, device: torch.device,
          checkpointer: Checkpointer, callbacks: TrainCallbacks | None = None,
          preemption: PreemptionFlag | None = None) -> TrainState:
    """Train ``model`` in place from the last checkpoint (if any) to ``config.epochs``; returns the state.

    :func:`setup`, then per epoch :func:`run_steps` and :func:`end_epoch`. ``preemption`` is the run's
    SIGTERM flag (the runner installs it before data preparation so an early signal is not lost); without
    one, the loop installs its own for its duration.
    """
    callbacks = callbacks or TrainCallbacks()
    session = setup(config, data, model, dist, device, checkpointer)
    state = session.state
    with PreemptionFlag() if preemption is None else contextlib.nullcontext(preemption) as sigterm:
        if _agree(sigterm.raised, dist, device):  # signalled before the first step (data preparation)
            if state.global_step:
                session.write_checkpoint()
            raise Interrupted(f"stopped by SIGTERM before step {state.global_step + 1}")
        while state.epoch < config.epochs:
            if config.max_steps and state.global_step >= config.max_steps:
                break
            session.sampler.set_epoch(state.epoch, state.step_in_epoch)
            session.stepper.runner.train()
            started = time.perf_counter()
            images_seen = run_steps(session, sigterm)
            if state.step_in_epoch < session.sampler.steps_per_epoch:
                session.write_checkpoint()
                break  # max_steps reached inside the epoch
            end_epoch(session, time.perf_counter() - started, images_seen, callbacks)
    return state


def sync_buffers(model: nn.Module, dist: DistInfo) -> None:
    """Give every rank rank 0's batch-norm statistics (each rank updated its own in the last step)."""
    if dist.enabled:
        for buffer in model.buffers():
            torch_dist.broadcast(buffer, src=0)


def _mean_over_ranks(value: float, dist: DistInfo, device: torch.device) -> float:
    if not dist.enabled:
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    torch_dist.all_reduce(tensor)
    return float(tensor.item()) / dist.world


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
