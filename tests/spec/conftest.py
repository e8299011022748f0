"""Tiny Qwen3.5 GGUFs built once per session from the committed fixture (tests/data/tiny_qwen35)."""

import pytest

from tests.fixtures import FixtureModels


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> FixtureModels:
    """tiny_gguf(variant, file_type="f32", mtp=True) -> path of a converted fixture model."""
    return FixtureModels(str(tmp_path_factory.mktemp("tiny_qwen35")))
