"""Models for the engine tests: the committed tiny fixtures (F32, Q4_0) and k256 random models whose rows fill
256-value blocks, so K-quant files quantize every matrix (tools/make_test_model.py's k256 preset)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.fixtures import FixtureModels
from vkmtp.convert.writer import write_gguf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory) -> FixtureModels:
    return FixtureModels(str(tmp_path_factory.mktemp("engine_fixtures")))


@pytest.fixture(scope="session")
def k256_models(tmp_path_factory):
    """k256_models(variant, file_type) -> path; variant dense | moe | aligned."""
    sys.path.insert(0, str(ROOT / "tools"))
    from make_test_model import k256_state

    out = tmp_path_factory.mktemp("k256")
    made: dict[tuple[str, str], str] = {}
    states: dict[str, tuple] = {}

    def make(variant: str, file_type: str) -> str:
        key = (variant, file_type)
        if key not in made:
            if variant not in states:
                states[variant] = k256_state(variant, 10)
            cfg, state = states[variant]
            path = os.path.join(out, f"k256-{variant}-{file_type}.gguf")
            write_gguf(state, cfg, path, file_type=file_type)
            made[key] = path
        return made[key]

    return make
