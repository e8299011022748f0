"""Corpus and tokenizer for the demo model: the Python standard library's own source on this machine.

Why the stdlib: it is on every machine that runs the trainer, it is real Python, and its licence allows
shipping a model trained on it. A few modules and their tests are held out so perplexity and MTP acceptance
are measured on code the model never saw.
"""

from __future__ import annotations

import json
import random
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vkmtp.text.tokenizer import QWEN35_PATTERN  # Qwen3.5's split (llama.cpp pre-tokenizer `qwen35`)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
HELDOUT_FILES = (
    "argparse.py",
    "difflib.py",
    "csv.py",
    "textwrap.py",
    "ftplib.py",
    "test/test_argparse.py",
    "test/test_difflib.py",
    "test/test_csv.py",
    "test/test_textwrap.py",
    "test/test_ftplib.py",
)
# Low-entropy tables (charmap codecs, pydoc topic dumps) would teach the model to copy, not to write Python.
EXCLUDED_DIRS = ("site-packages", "dist-packages", "__pycache__", "encodings", "pydoc_data")


@dataclass
class Corpus:
    tokenizer: Tokenizer
    special_ids: dict[str, int]
    train: np.ndarray  # [n_train_tokens] uint16, files joined by <|endoftext|>
    heldout: np.ndarray  # [n_heldout_tokens] uint16
    heldout_texts: dict[str, str]
    n_train_files: int
    heldout_files: list[str] = field(default_factory=list)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def read_heldout() -> dict[str, str]:
    """The held-out files' text (relative path -> text); evaluation needs nothing else."""
    root = stdlib_root()
    missing = [rel for rel in HELDOUT_FILES if not (root / rel).is_file()]
    if missing:
        raise SystemExit(f"held-out stdlib files not found under {root}: {missing}")
    return {rel: (root / rel).read_text(encoding="utf-8") for rel in HELDOUT_FILES}


def stdlib_files() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(train [(relative path, text)], held-out {relative path: text}), sorted, undecodable files skipped."""
    root = stdlib_root()
    train, heldout = [], {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in EXCLUDED_DIRS for part in rel.split("/")[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if rel in HELDOUT_FILES:
            heldout[rel] = text
        elif text.strip():
            train.append((rel, text))
    missing = sorted(set(HELDOUT_FILES) - set(heldout))
    if missing:
        raise SystemExit(f"held-out stdlib files not found under {root}: {missing}")
    return train, heldout


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with Qwen3.5's pre-tokenizer; ChatML specials take the last three ids, as in Qwen."""
    tokenizer = Tokenizer(models.BPE(ignore_merges=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN35_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if tokenizer.get_vocab_size() != vocab_size:
        raise SystemExit(
            f"tokenizer reached {tokenizer.get_vocab_size()} tokens, wanted {vocab_size}: "
            "the corpus is too small for this --vocab"
        )
    return tokenizer


def encode_documents(tokenizer: Tokenizer, texts: list[str], separator: int) -> np.ndarray:
    """All documents' ids, each followed by the separator, as one uint16 array."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(separator)
    return np.asarray(ids, dtype=np.uint16)


def build_corpus(vocab_size: int, cache_dir: Path) -> Corpus:
    """Tokenizer + token arrays, cached in cache_dir: training and encoding take minutes on 2 cores."""
    train_docs, heldout = stdlib_files()
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"vocab": vocab_size, "train": [p for p, _ in train_docs], "heldout": sorted(heldout)}
    manifest_path, tok_path = cache_dir / "manifest.json", cache_dir / "tokenizer.json"
    train_path, held_path = cache_dir / "train.npy", cache_dir / "heldout.npy"
    if manifest_path.exists() and json.loads(manifest_path.read_text()) == manifest and train_path.exists():
        tokenizer = Tokenizer.from_file(str(tok_path))
        train, held = np.load(train_path), np.load(held_path)
    else:
        tokenizer = train_tokenizer([t for _, t in train_docs], vocab_size)
        separator = tokenizer.token_to_id("<|endoftext|>")
        train = encode_documents(tokenizer, [t for _, t in train_docs], separator)
        held = encode_documents(tokenizer, [heldout[p] for p in sorted(heldout)], separator)
        tokenizer.save(str(tok_path))
        np.save(train_path, train)
        np.save(held_path, held)
        manifest_path.write_text(json.dumps(manifest))
    special_ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    return Corpus(tokenizer, special_ids, train, held, heldout, len(train_docs), sorted(heldout))


def heldout_prompts(
    heldout_texts: dict[str, str],
    encode: Callable[[str], list[int]],
    n_prompts: int,
    n_tokens: int,
    seed: int = 1234,
) -> list[list[int]]:
    """n_prompts prompts of n_tokens, each starting at a non-blank line start of a held-out file."""
    rng = random.Random(seed)
    names = sorted(heldout_texts)
    prompts = []
    while len(prompts) < n_prompts:
        lines = heldout_texts[names[len(prompts) % len(names)]].splitlines(keepends=True)
        start_line = rng.randrange(0, max(1, len(lines) - 200))
        if not lines[start_line].strip():
            continue
        ids = encode("".join(lines[start_line : start_line + 200]))
        if len(ids) >= n_tokens:
            prompts.append(ids[:n_tokens])
    return prompts
