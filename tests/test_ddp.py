"""Multi-process training: `torchrun --nproc_per_node 2 -m seqdistill train` runs real DDP on CPU (gloo).

Each rank trains on its share of the data, the loss after each step equals a single-process run with the same
global batch, only rank 0 prints and writes, and DDP does not search for unused parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_sample, write_jsonl

# Measured: the two runs' losses agree to ~1e-7 (float32 sums in another order); 1e-4 leaves room.
LOSS_RTOL = 1e-4


def _kept(tmp_path):
    rows = [
        make_sample(f"p{i}", text=f"{i} + {i + 1} = {2 * i + 1}. The answer is \\boxed{{{2 * i + 1}}}.",
                    prompt=[{"role": "user", "content": f"What is {i} + {i + 1}?"}])
        for i in range(16)
    ]  # fmt: skip
    return write_jsonl(tmp_path / "kept.jsonl", rows)


def _train(args: list[str], cwd, launcher: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQDISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, "-m", "seqdistill", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on CPU is tested on Linux")
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_model, tmp_path):
    kept = _kept(tmp_path)
    common = ["--model", tiny_model, "--set", "epochs=2", "--set", "logging_steps=1", "--set", "learning_rate=1e-2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = _train([str(kept), "--output", "ddp", "--set", "batch_size=4", *common], tmp_path, torchrun)
    single = _train([str(kept), "--output", "single", "--set", "batch_size=8", *common], tmp_path, [sys.executable])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_report = json.loads((tmp_path / "ddp" / "training_report.json").read_text())
    single_report = json.loads((tmp_path / "single" / "training_report.json").read_text())
    # 16 examples, 2 ranks x 4 per step: 2 steps per epoch. Were each rank to see all the data, it would take 4.
    assert ddp_report["steps"] == single_report["steps"] == 4
    ddp_loss = [h["loss"] for h in ddp_report["loss_history"]]
    single_loss = [h["loss"] for h in single_report["loss_history"]]
    assert len(ddp_loss) == 4
    assert ddp_loss[-1] < ddp_loss[0] - 0.1, "the weights moved"
    assert ddp_loss == pytest.approx(single_loss, rel=LOSS_RTOL)

    assert ddp.stdout.count("│ steps ") == 1, "only rank 0 prints the summary"
    assert "find_unused_parameters=True" not in ddp.stderr
