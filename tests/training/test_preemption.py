"""SIGTERM to a whole process group (what the kubelet and torchrun do) always ends in a checkpoint.

A real ``python -m dicomlab_training run`` with DataLoader workers, and a real 2-rank torchrun (gloo on
CPU) through ``python -m dicomlab_training.torchrun``, are started in their own session; the whole group
gets SIGTERM mid-epoch. The run must write a checkpoint at the step it was on (every rank stopping at
the same step), exit with the preempted code 143, and a resumed run must end with exactly the weights
of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_training import checkpoint_step, cli_args, env, small_overrides, weights
from training_synth import SynthSet

from dicomlab_training import load_train_config, run
from dicomlab_training.config import PREEMPTED_EXIT_CODE

STOPPED = re.compile(r"stopped by SIGTERM at step (\d+)")


def bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def inside_epoch_2(settings: dict[str, Any], first_epoch_steps: int) -> dict[str, Any]:
    """``settings`` slowed down (0.4 s a step) and checkpointing one step into epoch 2, which is what
    :func:`sigterm_group_inside_epoch_2` waits for (the SIGTERM checkpoint comes later: it is told apart)."""
    return {**settings, "step_delay": 0.4, "checkpoint_every_steps": first_epoch_steps + 1}


def sigterm_group_inside_epoch_2(args: list[str], checkpoint: Path, first_epoch_steps: int) -> tuple[int, str]:
    """Start ``args`` (with :func:`inside_epoch_2`'s settings) in a new session and SIGTERM its process group
    once a step of epoch 2 is checkpointed: its DataLoader workers are running then, and the run has steps
    left (no sleep decides where the signal lands)."""
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(checkpoint) <= first_epoch_steps and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _wait_group_gone(proc.pid)
    return proc.returncode, err.decode(errors="replace")


def _wait_group_gone(pgid: int) -> None:
    """Every process of the group (DataLoader workers, torchrun ranks) has exited."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("processes of the signalled run were left behind")


def test_sigterm_to_the_process_group_with_dataloader_workers(small_set: SynthSet, tmp_path: Path) -> None:
    settings = small_overrides(small_set, tmp_path / "reference", tmp_path / "cache", num_workers=2,
                               checkpoint_every_steps=1000)
    reference = run(load_train_config(overrides=settings, environ={}))
    steps = reference.history[-1]["steps"]

    first = reference.history[0]["steps"]
    termed = inside_epoch_2({**settings, "out": str(tmp_path / "termed")}, first)
    ckpt = tmp_path / "termed" / "checkpoints" / "last.pt"
    code, err = sigterm_group_inside_epoch_2(cli_args(termed), ckpt, first)
    assert code == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "killed by signal" not in err, "a DataLoader worker died of the SIGTERM"
    at_term = checkpoint_step(ckpt)
    (reported,) = {int(s) for s in STOPPED.findall(err)}
    assert at_term == reported, "the checkpoint is of the step the run stopped at"
    assert first + 1 < at_term < steps, "stopped inside epoch 2, after the signal, not at a boundary"

    resumed = run(load_train_config(overrides={**termed, "step_delay": 0}, environ={}))
    assert bitwise_equal(weights(resumed.last_model), weights(reference.last_model))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]


def torchrun_args(settings: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "dicomlab_training.torchrun", "--standalone", "--nproc-per-node=2",
            "-m", "dicomlab_training", *cli_args(settings)[3:]]


def test_sigterm_to_torchrun_stops_every_rank_at_one_step(small_set: SynthSet, tmp_path: Path) -> None:
    settings = small_overrides(small_set, tmp_path / "reference", tmp_path / "cache", batch_size=8, num_workers=1,
                               checkpoint_every_steps=1000)
    done = subprocess.run(torchrun_args(settings), env=env(), capture_output=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    expected = weights(f"file://{tmp_path / 'reference'}/models/last.pt")
    first = json.loads((tmp_path / "reference" / "report.json").read_text())["history"][0]["steps"]

    termed = inside_epoch_2({**settings, "out": str(tmp_path / "termed")}, first)
    ckpt = tmp_path / "termed" / "checkpoints" / "last.pt"
    code, err = sigterm_group_inside_epoch_2(torchrun_args(termed), ckpt, first)
    assert code == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "killed by signal" not in err
    stops = [int(s) for s in STOPPED.findall(err)]
    assert len(stops) == 2 and len(set(stops)) == 1, f"both ranks stop at the same step: {stops}"
    assert checkpoint_step(ckpt) == stops[0]

    resumed = subprocess.run(torchrun_args({**termed, "step_delay": 0}), env=env(), capture_output=True,
                             timeout=400, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert bitwise_equal(weights(f"file://{tmp_path / 'termed'}/models/last.pt"), expected)
