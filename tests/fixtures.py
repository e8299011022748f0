"""The committed tiny Qwen3.5 test models (tests/data/tiny_qwen35): load their weights and write GGUFs.

Test support, not part of the installed package (it reads the repository's tests/data).

The fixture directory holds `meta.json` (format version, HF configs, prompt), `tokenizer.json`, the weights
`state-{dense,moe}.npz` (see `synthetic.save_state`) and transformers' reference data
`reference-{dense,moe}.npz`. The `aligned` variant is derived from the dense weights (`align_for_mtp`).
tools/make_test_model.py regenerates everything.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from vkmtp.convert import synthetic
from vkmtp.convert.writer import write_gguf
from vkmtp.text.chat_template import CHATML_TEMPLATE
from vkmtp.text.gguf_metadata import metadata_from_tokenizers
from vkmtp.text.tokenizer import QWEN35_PATTERN

FIXTURE_VERSION = 1
# the committed copy, beside this file
FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny_qwen35")
REGENERATE = "python tools/make_test_model.py --fixtures tests/data/tiny_qwen35"
PROMPT = "The quick brown fox jumps over the lazy dog, and then it naps in the warm sun."
SEEDS = {"dense": 1, "moe": 2, "aligned": 3}
VARIANTS = {"dense": synthetic.DENSE, "moe": synthetic.MOE, "aligned": synthetic.DENSE}
VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. A lazy dog sleeps in the sun while the fox runs away.",
    "Small models are useful for tests: they load in a moment, and every number can be checked by hand.",
    "A speculative decoder drafts a few tokens, then the target model verifies them in one batch.",
    "When a draft token matches the target's choice it is accepted; at a mismatch the rest is dropped.",
    "The recurrent state of a delta network must be rolled back to the last accepted position.",
    "Attention layers keep keys and values in a cache; rolling back means forgetting the newest rows.",
    "Numbers such as 3, 14, 159, 2653 and 58979 are split into single digits before merging.",
    "Hello, world! How are you today? I am fine, thank you. What time is it? It is half past nine.",
    "She sells sea shells by the sea shore. Peter Piper picked a peck of pickled peppers.",
    "In the beginning the garden was quiet; then the birds started singing and the bees came out.",
    "Water boils at one hundred degrees, and ice melts when the weather turns warm in the spring.",
    "Mountains, rivers, forests and deserts cover the land; oceans cover most of the planet.",
    "Reading a good book on a rainy afternoon is one of the simple pleasures of life.",
    "The engine reads the model file, places the weights on the device, and runs the forward pass.",
    "Every test should fail when the code is wrong, and pass when the code is right.",
    "Tokens, logits, hidden states, experts, routers, gates and norms: the words of a language model.",
    "def main():\n    print('hello')\n    return 0\n",
    "for i in range(10):\n    total += i * i\n",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.",
    "January, February, March, April, May, June, July, August, September, October, November, December.",
    "red orange yellow green blue indigo violet black white grey brown pink purple",
    "one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand",
    "The cat sat on the mat. The dog sat on the log. The frog sat on the bog.",
    "Questions and answers: who, what, where, when, why and how are the words we ask with.",
]


def train_byte_level_bpe(corpus: list[str], vocab_size: int) -> str:
    """A byte-level BPE of exactly `vocab_size` ids (the special tokens last) with Qwen3.5's split; returns the
    tokenizer.json text. Raises ValueError if the corpus is too small to fill the vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN35_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_regular = vocab_size - len(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(list(corpus), trainer)
    if tok.get_vocab_size() != n_regular:
        raise ValueError(f"corpus too small: BPE stopped at {tok.get_vocab_size()} of {n_regular} tokens")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok.to_str()


def make_tokenizer_json() -> str:
    """The fixtures' 512-token byte-level BPE (Qwen3.5 split, ChatML specials at ids 509..511)."""
    return train_byte_level_bpe(CORPUS * 4, VOCAB_SIZE)


def load_fixture_meta(fixture_dir: str) -> dict[str, Any]:
    """meta.json of a fixture directory, checked for the format this code reads."""
    path = os.path.join(fixture_dir, "meta.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; regenerate with: {REGENERATE}")
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format_version") != FIXTURE_VERSION:
        raise ValueError(
            f"{path}: fixture format {meta.get('format_version')}, this code reads "
            f"{FIXTURE_VERSION}; regenerate with: {REGENERATE}"
        )
    return meta


def variant_state(
    fixture_dir: str, variant: str, meta: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(HF config, HF state dict) of a fixture variant: dense, moe or aligned."""
    meta = meta or load_fixture_meta(fixture_dir)
    if variant not in VARIANTS:
        raise ValueError(f"unknown test model variant '{variant}' (choose from {', '.join(VARIANTS)})")
    base = "dense" if variant == "aligned" else variant
    hf_cfg = dict(meta["variants"][base]["hf_config"])
    state = synthetic.load_state(os.path.join(fixture_dir, f"state-{base}.npz"))
    if variant == "aligned":
        state = synthetic.align_for_mtp(state, VARIANTS[base], SEEDS["aligned"])
    return hf_cfg, state


def tokenizer_meta(fixture_dir: str) -> dict[str, Any]:
    """The fixture tokenizer's GGUF metadata, with a ChatML template (what llama.cpp's converter writes)."""
    import tokenizers

    with open(os.path.join(fixture_dir, "tokenizer.json"), encoding="utf-8") as fh:
        hf = tokenizers.Tokenizer.from_str(fh.read())
    return metadata_from_tokenizers(hf, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                    padding_token="<|endoftext|>", chat_template=CHATML_TEMPLATE)


def fixture_gguf(fixture_dir: str, variant: str, file_type: str, out_path: str, mtp: bool = True) -> str:
    """Write a fixture variant as a GGUF of `file_type`; returns out_path."""
    hf_cfg, state = variant_state(fixture_dir, variant)
    write_gguf(
        state,
        hf_cfg,
        out_path,
        file_type=file_type,
        tokenizer_meta=tokenizer_meta(fixture_dir),
        mtp=mtp,
        name=f"tiny-qwen35-{variant}",
    )
    return out_path


def reference_data(fixture_dir: str, variant: str) -> dict[str, np.ndarray]:
    """transformers' reference arrays of a variant (see tools/make_test_model.py `hf_reference`)."""
    with np.load(os.path.join(fixture_dir, f"reference-{variant}.npz")) as data:
        return {k: data[k] for k in data.files}


class FixtureModels:
    """GGUFs of the fixture variants written into `out_dir` on first request and reused afterwards."""

    def __init__(self, out_dir: str, fixture_dir: str = FIXTURE_DIR):
        self.out_dir = out_dir
        self.fixture_dir = fixture_dir
        self._made: dict[tuple[str, str, bool], str] = {}

    def __call__(self, variant: str, file_type: str = "f32", mtp: bool = True) -> str:
        key = (variant, file_type, mtp)
        if key not in self._made:
            name = f"tiny-qwen35-{variant}-{file_type}{'' if mtp else '-nomtp'}.gguf"
            self._made[key] = fixture_gguf(
                self.fixture_dir, variant, file_type, os.path.join(self.out_dir, name), mtp=mtp
            )
        return self._made[key]
