"""benchmarks/bench_training_gpu.py runs where there is no GPU: it skips the CUDA parts cleanly, and its
CPU smoke mode drives the real ``train run`` step (loop.Stepper) through every variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_training_gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_benchmark_skips_cuda_and_its_cpu_smoke_runs_the_real_step(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path / "r.json")], capture_output=True,
                           text=True, env=env, timeout=300, check=False)
    assert plain.returncode == 0, plain.stderr
    assert "not measured" in plain.stdout and not (tmp_path / "r.json").exists()
    smoke = subprocess.run([sys.executable, str(BENCH), "--cpu-smoke", "--out", str(tmp_path / "r.json")],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert smoke.returncode == 0, smoke.stderr
    rows = [json.loads(line) for line in smoke.stdout.splitlines() if line.startswith("{")]
    assert rows, smoke.stdout
    for row in rows:
        (variants,) = row.values()
        assert {"fp32_eager", "bf16_channels_last", "bf16_channels_last_input_pipeline"} <= set(variants)
        assert all(v["images_per_second"] > 0 for v in variants.values())
    assert not (tmp_path / "r.json").exists(), "a CPU run writes no GPU figures"
