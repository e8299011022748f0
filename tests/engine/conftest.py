"""The committed tiny Qwen3.5 fixture as GGUFs (see vkmtp.convert.fixtures), built once per session."""

import pytest

from vkmtp.convert.fixtures import FixtureModels
from vkmtp.ref import ReferenceModel


@pytest.fixture(scope="session")
def aligned_model(tmp_path_factory) -> ReferenceModel:
    """Dense tiny model whose MTP drafts are often accepted."""
    return ReferenceModel.from_gguf(FixtureModels(str(tmp_path_factory.mktemp("engine")))("aligned"))
