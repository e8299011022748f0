"""The op tests' shared workspace: device buffers with guard words, freed after each module."""

import pytest
from quant_testing import Workspace


@pytest.fixture(scope="module")
def ws(device):
    workspace = Workspace(device)
    yield workspace
    workspace.destroy()
