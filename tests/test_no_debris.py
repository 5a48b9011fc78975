"""No debris (issue 14.9): `train` leaves no empty `checkpoints/`, and a training stopped before it wrote anything
leaves no output dir at all. (generate's side: tests/test_manifests.py, no empty samples file.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from seqdistill.config import TrainConfig
from seqdistill.stages import train
from tests.test_generate_openai import REPO
from tests.test_signals import finish
from tests.test_train import _kept_file


def test_a_finished_training_leaves_no_empty_checkpoints_dir(tiny_model, tmp_path):
    out = tmp_path / "student"
    train.run(TrainConfig(input=str(_kept_file(tmp_path / "kept.jsonl", 4)), model=tiny_model, output=str(out),
                          epochs=1, batch_size=4))  # fmt: skip
    assert (out / "training_report.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()


def test_a_training_stopped_mid_run_leaves_no_output_dir(tiny_model, tmp_path):
    out = tmp_path / "student"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEQDISTILL_NO_PROGRESS": "1"}
    env.pop("SEQDISTILL_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqdistill", "train", str(_kept_file(tmp_path / "kept.jsonl", 8)), "--model",
         tiny_model, "--output", str(out), "--set", "epochs=1000", "--set", "batch_size=2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints").is_dir():  # the Trainer made it: training has begun
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
