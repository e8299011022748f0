"""POST /slots/{id}?action=save|restore|erase with --slot-save-path, on real `vkmtp serve` processes: a slot saved
by one server process and restored by a new one continues with the same tokens as the server that never
stopped; a file from another model is refused with a 400; filenames that are paths are refused; without
--slot-save-path save and restore are refused naming the flag."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.server.live_server import LiveServer, free_port, server_config, wait_until_serving
from vkmtp.demo_model import default_model_path

PROMPT = "The river ran past the old mill, and the miller said"


class Serve:
    """`vkmtp serve` in its own process (greedy, one slot)."""

    def __init__(self, tmp_path, *flags: str):
        self.port = free_port()
        self.log_path = tmp_path / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "vkmtp.cli", "serve", "--port", str(self.port),
                                      "-np", "1", "-c", "512", "--temp", "0", *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)
        wait_until_serving(self.port, self.proc, self.log_path.read_text)

    def complete(self, prompt: str) -> dict:
        r = self.http.post("/completion", json={"prompt": prompt, "n_predict": 8, "ignore_eos": True})
        assert r.status_code == 200, r.text
        return r.json()

    def action(self, action: str, filename: str | None = None) -> httpx.Response:
        return self.http.post(f"/slots/0?action={action}", json={} if filename is None else {"filename": filename})

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


@pytest.mark.parametrize("backend", ["reference", "vulkan"])
def test_save_restart_restore_continues_as_never_stopped(tmp_path, backend, tiny_model):
    if backend == "vulkan":
        from vkmtp.device import list_devices

        if not list_devices():
            pytest.skip("no Vulkan device")
    flags = ("--backend", backend, "--slot-save-path", str(tmp_path / "slots"))
    first = Serve(tmp_path, *flags)
    try:
        out = first.complete(PROMPT)
        saved = first.action("save", "talk.bin")
        assert saved.status_code == 200, saved.text
        body = saved.json()
        assert body["id_slot"] == 0 and body["filename"] == "talk.bin"
        assert body["n_saved"] > 0 and body["n_written"] == (tmp_path / "slots" / "talk.bin").stat().st_size
        assert body["timings"]["save_ms"] > 0
        for bad in ("../talk.bin", "sub/talk.bin", ".hidden", ""):
            r = first.action("save", bad)
            assert r.status_code == 400 and "filename" in r.json()["error"]["message"], (bad, r.text)
        follow = PROMPT + out["content"] + " Then"
        never_stopped = first.complete(follow)
        assert never_stopped["timings"]["cache_n"] > 0
    finally:
        first.stop()
    second = Serve(tmp_path, *flags)
    try:
        restored = second.action("restore", "talk.bin")
        assert restored.status_code == 200, restored.text
        r = restored.json()
        assert (r["id_slot"], r["filename"], r["n_restored"], r["n_read"]) == \
            (0, "talk.bin", body["n_saved"], body["n_written"])
        assert r["timings"]["restore_ms"] > 0
        again = second.complete(follow)
        assert again["timings"]["cache_n"] == never_stopped["timings"]["cache_n"]
        assert again["content"] == never_stopped["content"]
        erased = second.action("erase")   # the slot now holds the restored tokens and the continuation
        assert erased.status_code == 200 and erased.json()["id_slot"] == 0
        assert erased.json()["n_erased"] > body["n_saved"]
        assert second.complete(follow)["timings"]["cache_n"] == 0
        missing = second.action("restore", "nothing.bin")
        assert missing.status_code == 400 and "nothing.bin" in missing.json()["error"]["message"]
    finally:
        second.stop()
    if backend == "reference":   # a file from another model (and its own engine settings): refused with a 400
        other = Serve(tmp_path, "-m", tiny_model, *flags)
        try:
            r = other.action("restore", "talk.bin")
            assert r.status_code == 400, r.text
            assert "another model or other settings" in r.json()["error"]["message"]
            assert "model" in r.json()["error"]["message"]
        finally:
            other.stop()


def test_save_and_restore_need_slot_save_path():
    path = default_model_path()
    srv = LiveServer(server_config(n_slots=1, mtp=False), path).start()
    try:
        for action in ("save", "restore"):
            r = srv.http.post(f"/slots/0?action={action}", json={"filename": "x.bin"})
            assert r.status_code == 501 and "--slot-save-path" in r.json()["error"]["message"], r.text
        r = srv.http.post("/slots/0?action=erase")
        assert r.status_code == 200 and r.json() == {"id_slot": 0, "n_erased": 0}
        assert srv.http.post("/slots/0?action=load").status_code == 400
        assert srv.http.post("/slots/7?action=erase").status_code == 400
    finally:
        srv.stop()
