"""qzoo's verified fetch: concurrent and killed downloads, and bad cached files (qzoo/_files.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback import serving

from qzoo import _files
from qzoo.serialization import IntegrityError

FILENAME = "mobilenet_v2_qnnpack_37f702c5.pth"
PAYLOAD = os.urandom(1_500_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()

# A child process that fetches a file from the loopback server into torch.hub's cache, after a start signal.
FETCH = """
import pathlib, sys, time
from qzoo import _files
url, sha256, ready, go = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.01)
path = _files.fetch_verified(url, sha256, folder=_files.torch_hub_checkpoints(), filename={filename!r}, progress=False)
print(_files.file_sha256(path))
""".format(filename=FILENAME)


def fetch(url: str, sha256: str = SHA256):
    return _files.fetch_verified(url, sha256, folder=_files.torch_hub_checkpoints(), filename=FILENAME, progress=False)


def start_fetch(url: str, tmp_path: Path, index: int) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"ready-{index}"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    process = subprocess.Popen([sys.executable, "-c", FETCH, url, SHA256, str(ready), str(tmp_path / "go")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, ready


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_four_processes_downloading_at_once_all_end_with_the_verified_file(tmp_path):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with serving() as server:
        server.files[FILENAME] = PAYLOAD
        server.throttle(0.03)  # about 0.7 s per download, so the four overlap
        started = [start_fetch(f"{server.url}/{FILENAME}", tmp_path, i) for i in range(4)]
        wait_for(lambda: all(ready.exists() for _, ready in started), "the four processes to start")
        (tmp_path / "go").touch()
        results = [process.communicate(timeout=300) for process, _ in started]
        downloads = [r for r in server.requests if r.startswith("GET")]
    assert [process.returncode for process, _ in started] == [0] * 4, [err[-500:] for _, err in results]
    assert [out.strip() for out, _ in results] == [SHA256] * 4
    assert len(downloads) >= 2, f"the downloads did not overlap: {server.requests}"
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # no partial file left by anyone
    assert _files.file_sha256(cache / FILENAME) == SHA256


def test_a_download_killed_half_way_leaves_nothing_a_later_load_accepts(tmp_path, monkeypatch):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with serving() as server:
        server.files[FILENAME] = PAYLOAD
        server.throttle(0.5)  # about 12 s per download: killed long before the end
        process, ready = start_fetch(f"{server.url}/{FILENAME}", tmp_path, 0)
        wait_for(ready.exists, "the process to start")
        (tmp_path / "go").touch()
        wait_for(lambda: cache.is_dir() and any(p.stat().st_size > 0 for p in cache.iterdir()), "a partial file")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        left = sorted(p.name for p in cache.iterdir())
        assert FILENAME not in left and left and all(name.endswith(".partial") for name in left)

        server.throttle(0)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        path = fetch(f"{server.url}/{FILENAME}")
    assert _files.file_sha256(path) == SHA256
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # the dead process's partials are gone


@pytest.mark.parametrize(("content", "kind"), [
    (b"", "empty"),
    (PAYLOAD[:1000], "truncated"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML error page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + SHA256.encode() + b"\nsize 1500000\n",
     "Git LFS pointer"),
])
def test_a_bad_cached_file_names_both_hashes_and_how_to_download_again(tmp_path, monkeypatch, content, kind):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(content)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    actual = hashlib.sha256(content).hexdigest()
    with pytest.raises(IntegrityError, match=f"sha256 {actual}, expected {SHA256}; delete .*{FILENAME} "
                                             "and load again to re-download it"):
        fetch(f"http://127.0.0.1:9/{FILENAME}")
