"""The shipped demo model (models/vkmtp-demo-qwen35-mtp-*.gguf): loads, validates, tokenizes, and drafts.

It is what a newcomer's first command runs, so it must stay a valid llama.cpp-layout `qwen35` GGUF with an MTP
block whose drafts the reference model actually accepts. CPU only, no torch; a few tokens keep this fast.
"""

from pathlib import Path

import pytest

from vkmtp.gguf import open_gguf
from vkmtp.model.config import LayerKind, ModelConfig
from vkmtp.model.weights import validate
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.spec import SpecConfig
from vkmtp.text.tokenizer import Tokenizer

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MAX_BYTES = 30 * 1024 * 1024
# Held-out code (argparse/difflib/csv/textwrap/ftplib were not in the training data); plain, ordinary Python.
PROMPT = (
    "import sys\n\n\n"
    "def main(argv=None):\n"
    "    if argv is None:\n"
    "        argv = sys.argv[1:]\n"
    "    for name in argv:\n"
    "        with open(name) as f:\n"
    "            for line in f:\n"
    "                if not line.strip():\n"
    "                    continue\n"
)


@pytest.fixture(scope="module")
def demo_path() -> Path:
    found = sorted(MODELS_DIR.glob("vkmtp-demo-qwen35-mtp-*.gguf"))
    assert len(found) == 1, f"expected exactly one shipped demo GGUF in {MODELS_DIR}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def demo_file(demo_path):
    return open_gguf(demo_path)


@pytest.fixture(scope="module")
def tokenizer(demo_file) -> Tokenizer:
    return Tokenizer.from_gguf(demo_file)


@pytest.fixture(scope="module")
def model(demo_path) -> ReferenceModel:
    return ReferenceModel.from_gguf(demo_path)


def test_size_and_llama_cpp_layout(demo_path, demo_file):
    assert demo_path.stat().st_size <= MAX_BYTES
    meta = demo_file.metadata
    assert demo_file.arch == "qwen35"
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "qwen35"
    assert meta["qwen35.nextn_predict_layers"] == 1


def test_config_and_tensor_table_validate(demo_file):
    cfg = ModelConfig.from_gguf(demo_file)
    table = validate(demo_file, cfg)
    assert cfg.has_mtp and cfg.mtp_layer == cfg.n_layer
    assert meta_block_count(demo_file) == cfg.n_layer + 1
    # the real 3:1 pattern: three Gated DeltaNet blocks, then one gated full-attention block
    assert cfg.trunk_kinds == tuple(
        LayerKind.ATTENTION if (i + 1) % 4 == 0 else LayerKind.RECURRENT for i in range(cfg.n_layer)
    )
    nextn = f"blk.{cfg.n_layer}.nextn."
    for name in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head_norm.weight"):
        assert nextn + name in demo_file.tensors
    assert f"blk.{cfg.n_layer}.attn_q.weight" in demo_file.tensors
    assert table.mtp is not None


def meta_block_count(demo_file) -> int:
    return int(demo_file.metadata["qwen35.block_count"])


def test_tokenizer_round_trips_python_and_chatml(tokenizer):
    text = 'def parse_args(argv=None):\n    """Parse ünïcode, 42 args."""\n\treturn {"a": [1, 2.5]}  # ok\n'
    ids = tokenizer.encode(text, add_special=False)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode()) / 2  # real merges, not bytes
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tokenizer.encode(special, add_special=False, parse_special=True) == [
            tokenizer.token_to_id(special)
        ]
    assert tokenizer.is_eog(tokenizer.token_to_id("<|im_end|>"))


def looks_like_python(text: str) -> bool:
    """Indented lines of identifiers, operators and brackets: printable ASCII, newlines, identifiers."""
    allowed = sum(ch.isascii() and (ch.isprintable() or ch in "\n\t") for ch in text)
    words = [
        w for w in "".join(c if c.isalnum() or c == "_" else " " for c in text).split() if w.isidentifier()
    ]
    return allowed == len(text) and len(words) >= 2


def test_greedy_mtp_generation_is_python_and_drafts_are_accepted(model, tokenizer):
    prompt = tokenizer.encode(PROMPT, add_special=False)
    n_tokens = 12
    spec = generate_mtp(model, prompt, n_tokens, spec=SpecConfig(n_max=3))
    plain = generate(model, prompt, n_tokens)
    assert spec.tokens == plain.tokens
    continuation = tokenizer.decode(spec.tokens)
    assert looks_like_python(continuation), repr(continuation)
    assert spec.stats.draft_n > 0
    assert spec.stats.draft_n_accepted > 0, f"no draft accepted in {spec.stats}"
