"""A real engine whose steps wait while the test says so: server timing made deterministic, not raced.

Tests of cancellation used to let the engine run freely and count how far it got before the client's
disconnect arrived, which measures the machine's speed. `HeldEngine` runs the real reference engine but, at
the start of each `step()`, waits while `hold()` is true. A test holds the engine at a known point, does
what it checks (a client hangs up), waits for the server's reaction (the job is cancelled), then lets the
engine go on: the number of steps and tokens is then fixed, on any machine.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from vkmtp.engine.api import Event, Request, Sequence
from vkmtp.engine.reference import ReferenceEngine

HOLD_LIMIT_S = 120.0  # a hold this long means the server never reacted: the step fails and the test with it


class HeldEngine(ReferenceEngine):
    def __init__(self, *args, hold: Callable[["HeldEngine"], bool] = lambda engine: False, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = hold
        self.n_steps = 0  # real steps taken
        self.sequences: list[Sequence] = []  # every submitted sequence, in order
        self.token_events: dict[int, int] = {}  # seq.id -> steps that gave it new tokens
        self.waiting = threading.Event()  # set while a step is held
        self.held_too_long = False

    def submit(self, request: Request) -> Sequence:
        seq = super().submit(request)
        self.sequences.append(seq)
        return seq

    def step(self) -> list[Event]:
        deadline = time.monotonic() + HOLD_LIMIT_S
        while self.hold(self):
            self.waiting.set()
            if time.monotonic() > deadline:
                self.held_too_long = True
                raise RuntimeError(f"the test held the engine for {HOLD_LIMIT_S:.0f} s")
            time.sleep(0.002)
        self.waiting.clear()
        events = super().step()
        self.n_steps += 1
        for ev in events:
            if ev.new_ids:
                self.token_events[ev.seq.id] = self.token_events.get(ev.seq.id, 0) + 1
        return events


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = HOLD_LIMIT_S) -> None:
    """Polls `predicate`; the timeout is a failure bound, never a speed assumption."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)
