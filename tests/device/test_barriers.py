"""Kompute records no barrier between dependent dispatches; vkmtp's Recorder must, and only where needed."""

import numpy as np
import pytest

from vkmtp import env
from vkmtp.device import ShaderKey
from vkmtp.device.context import Recorder

SCALE_ADD = ShaderKey.make("scale_add.comp")
BLOCK = 64


def record_scale_add(rec, buf, src, dst, n, scale, add):
    rec.dispatch(SCALE_ADD, [buf, buf], (-(-n // BLOCK), 1, 1),
                 push=[src.word_offset, dst.word_offset, n, float(scale), float(add)], spec=[BLOCK],
                 reads=[src], writes=[dst])


def test_chain_of_200_dependent_dispatches_is_exact(device, monkeypatch):
    """x_{k+1} = x_k * 1 + 1 ping-ponging between two halves of one buffer, 200 times in one submission.
    With VKMTP_TEST_NO_BARRIERS the dispatches are recorded without barriers (only the host's final one)."""
    no_barriers = env.test_without_barriers()
    if no_barriers:
        monkeypatch.setattr(Recorder, "_order", lambda self, reads, writes: None)
    n = 1 << 18  # large enough that a missing barrier lets a real GPU overlap dispatches
    buf = device.buffer(2 * n * 4, "device", "chain")
    a, b = buf.view(0, n * 4), buf.view(n * 4, n * 4)
    x0 = np.arange(n, dtype=np.float32) % 1000
    device.upload(a, x0)
    rec = device.recorder()
    views = [a, b]
    steps = 200
    for k in range(steps):
        record_scale_add(rec, buf, views[k % 2], views[(k + 1) % 2], n, 1.0, 1.0)
    rec.finish()
    assert rec.n_dispatches == steps
    assert rec.n_barriers == (1 if no_barriers else steps)  # 199 between dispatches + the final one for the host
    if hasattr(device._kp, "OpShaderBarrier"):   # between dispatches: no host stage; only the final one has it
        assert rec.n_host_barriers == 1
    rec.run()
    got = device.read(views[steps % 2])
    np.testing.assert_array_equal(got, x0 + steps)
    buf.destroy()


def test_replay_reuses_the_recording(device):
    n = 1000
    buf = device.buffer(2 * n * 4, "device", "replay")
    a, b = buf.view(0, n * 4), buf.view(n * 4, n * 4)
    device.upload(a, np.zeros(n, np.float32))
    rec = device.recorder()
    record_scale_add(rec, buf, a, b, n, 1.0, 2.0)
    record_scale_add(rec, buf, b, a, n, 1.0, 3.0)
    rec.finish()
    submits = device.submits
    for _ in range(5):
        rec.run()
    assert device.submits - submits == 5
    np.testing.assert_array_equal(device.read(a), np.full(n, 25.0, np.float32))
    buf.destroy()


def test_independent_dispatches_need_no_barrier(device):
    n = 256
    buf = device.buffer(4 * n * 4, "device", "indep")
    v = [buf.view(i * n * 4, n * 4) for i in range(4)]
    device.upload(buf.view(), np.ones(4 * n, np.float32))
    rec = device.recorder()
    record_scale_add(rec, buf, v[0], v[1], n, 2.0, 0.0)
    record_scale_add(rec, buf, v[2], v[3], n, 3.0, 0.0)  # touches nothing the first one wrote
    assert rec.n_barriers == 0
    record_scale_add(rec, buf, v[1], v[2], n, 1.0, 1.0)  # reads v[1] (written) and writes v[2] (read)
    assert rec.n_barriers == 1
    rec.finish()
    rec.run()
    out = device.read(buf.view())
    np.testing.assert_array_equal(out[n:2 * n], 2.0)
    np.testing.assert_array_equal(out[2 * n:3 * n], 3.0)
    np.testing.assert_array_equal(out[3 * n:], 3.0)
    buf.destroy()


def test_group_count_beyond_device_limit_is_refused(device):
    buf = device.buffer(64, "device", "tiny")
    rec = device.recorder()
    with pytest.raises(ValueError, match="group count"):
        rec.dispatch(SCALE_ADD, [buf, buf], (device.info.max_workgroup_count[0] + 1, 1, 1),
                     push=[0, 0, 1, 1.0, 0.0], spec=[BLOCK])
    buf.destroy()
