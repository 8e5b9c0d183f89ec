"""The QAT engine under torchrun: two gloo processes on the loopback interface."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from helpers import make_image_folder

import qzoo

SCRIPT = """
import json, sys
from qzoo import train, workflow
train.init_distributed()
loaded = workflow.load_model("resnet18", num_classes=3, progress=False)
recipe = train.Recipe(epochs=2, lr=0.01, batch_size=6, freeze_observers_after=1, freeze_bn_after=1)
report = workflow.qat(loaded, sys.argv[1], sys.argv[2], recipe=recipe, image_size=32, progress=False)
print("REPORT " + json.dumps(report))
"""


def test_qat_under_torchrun_keeps_ranks_identical_and_only_rank_0_writes(tmp_path):
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    script = tmp_path / "qat.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", str(script), str(data), str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = sorted((json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines()
                      if line.startswith("REPORT ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1] and reports[0]["world_size"] == 2
    assert reports[0]["int8_sha256"] == reports[1]["int8_sha256"]  # DDP kept the replicas identical
    assert [h["epoch"] for h in reports[0]["history"]] == [1, 2] and "eval_int8" in reports[0]["history"][0]
    assert "out" in reports[0] and "out" not in reports[1]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["README.md", "config.json", "model.safetensors", "training/checkpoint/model.safetensors",
                       "training/checkpoint/optimizer.pt", "training/checkpoint/state.json"]
    int8 = qzoo.from_pretrained(out)
    assert qzoo.is_int8(int8) and qzoo.serialization.state_digest(int8) == reports[0]["int8_sha256"]
