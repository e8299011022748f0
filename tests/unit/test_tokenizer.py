"""vkmtp.text.tokenizer on a small byte-level BPE trained here: GGUF round trip, specials, decoding, errors."""

import gguf
import pytest
import tokenizers
from gguf import TokenType
from tokenizers import AddedToken, Regex, models, normalizers, pre_tokenizers, trainers

from vkmtp.gguf import GGUFError, open_gguf
from vkmtp.text.tokenizer import QWEN35_PATTERN, StreamDecoder, Tokenizer, bytes_to_byte_level
from vkmtp.text.gguf_metadata import add_tokenizer_metadata, metadata_from_tokenizers, tokenizer_metadata

CORPUS = [
    "def hello(world):\n    return world + 1  # add one\n",
    "The quick brown fox doesn't jump. DON'T shout, we'RE fine!",
    "Numbers 12345 and 3.14159, tabs\tand\r\nCRLF lines.",
    "日本語のテキスト、中文字符。",
] * 20

PROBES = CORPUS[:4] + [
    "unseen: 🦀 漢字 Ωμέγα ünïcödé",
    "   leading spaces and trailing   ",
    "<|im_start|>user\nhi<think>hmm</think><|im_end|>\n",
    "",
]


@pytest.fixture(scope="module")
def hf_tokenizer() -> tokenizers.Tokenizer:
    """A Qwen3.5-style byte-level BPE: NFC, qwen35 split regex, ByteLevel; ChatML specials + <think>."""
    hf = tokenizers.Tokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN35_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=420, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(CORPUS, trainer)
    hf.add_tokens([AddedToken("<think>", special=False, normalized=False),
                   AddedToken("</think>", special=False, normalized=False)])
    return hf


@pytest.fixture(scope="module")
def metadata(hf_tokenizer) -> dict:
    return metadata_from_tokenizers(hf_tokenizer, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                    padding_token="<|endoftext|>", n_vocab=hf_tokenizer.get_vocab_size() + 6)


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory, metadata) -> str:
    path = str(tmp_path_factory.mktemp("tok") / "small-vocab.gguf")
    writer = gguf.GGUFWriter(path, "qwen35")
    add_tokenizer_metadata(writer, metadata)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tok(gguf_path) -> Tokenizer:
    return Tokenizer.from_gguf(open_gguf(gguf_path))


def test_export_marks_specials_and_pads_vocab(metadata, hf_tokenizer):
    types = metadata["tokenizer.ggml.token_type"]
    tokens = metadata["tokenizer.ggml.tokens"]
    assert metadata["tokenizer.ggml.pre"] == "qwen35"
    assert types[tokens.index("<|im_start|>")] == TokenType.CONTROL
    assert types[tokens.index("<think>")] == TokenType.USER_DEFINED
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == TokenType.UNUSED
    assert len(tokens) == hf_tokenizer.get_vocab_size() + 6
    assert all(len(m.split(" ")) == 2 for m in metadata["tokenizer.ggml.merges"])


def test_gguf_round_trip_encodes_like_source_tokenizer(tok, hf_tokenizer):
    assert tok.pre == "qwen35" and tok.n_vocab == hf_tokenizer.get_vocab_size() + 6
    for text in PROBES:
        assert tok.encode(text, parse_special=True) == hf_tokenizer.encode(text).ids, text


def test_special_ids_and_end_of_generation(tok, hf_tokenizer):
    vocab = hf_tokenizer.get_vocab()
    assert tok.eos_id == vocab["<|im_end|>"]
    assert tok.bos_id == tok.padding_id == vocab["<|endoftext|>"]
    assert tok.add_bos is False
    assert tok.eog_ids == {vocab["<|im_end|>"], vocab["<|endoftext|>"]}
    assert tok.is_eog(vocab["<|im_end|>"]) and not tok.is_eog(vocab["<|im_start|>"])


def test_control_tokens_match_only_with_parse_special(tok, hf_tokenizer):
    start = hf_tokenizer.token_to_id("<|im_start|>")
    think = hf_tokenizer.token_to_id("<think>")
    parsed = tok.encode("<|im_start|>user<think>", parse_special=True)
    plain = tok.encode("<|im_start|>user<think>", parse_special=False)
    assert parsed[0] == start and parsed[-1] == think
    assert start not in plain and len(plain) > len(parsed)
    assert plain[-1] == think                      # user-defined tokens are always matched
    assert tok.decode(plain) == "<|im_start|>user<think>"


def test_add_special_adds_bos_only_when_gguf_asks(metadata):
    with_bos = Tokenizer.from_metadata({**metadata, "tokenizer.ggml.add_bos_token": True})
    ids = with_bos.encode("hello", add_special=True)
    assert ids[0] == with_bos.bos_id and ids[1:] == with_bos.encode("hello", add_special=False)
    plain = Tokenizer.from_metadata(metadata)
    assert plain.encode("hello", add_special=True) == plain.encode("hello", add_special=False)


def test_decode_round_trips_and_renders_specials_on_request(tok):
    for text in PROBES:
        assert tok.decode(tok.encode(text, parse_special=True)) == text
    ids = tok.encode("<|im_start|>hi<|im_end|>", parse_special=True)
    assert tok.decode(ids, render_special=False) == "hi"
    assert tok.token_to_piece(ids[0]) == "<|im_start|>"
    assert tok.token_to_piece(ids[0], render_special=False) == ""
    assert tok.token_to_piece(tok.n_vocab - 1) == ""             # unused padding renders as nothing
    assert tok.token_text(tok.n_vocab - 1) == f"[PAD{tok.n_vocab - 1}]"


def test_token_bytes_of_normal_token_are_raw_bytes(tok):
    space_id = tok.token_to_id(bytes_to_byte_level(b" "))
    assert tok.token_bytes(space_id) == b" "
    with pytest.raises(ValueError, match="out of range"):
        tok.token_bytes(tok.n_vocab)
    with pytest.raises(ValueError, match="expects a str"):
        tok.encode(b"bytes")


def test_stream_decoder_never_splits_a_character(tok):
    text = "crab 🦀 and 漢字 end"
    ids = tok.encode(text)
    stream = StreamDecoder(tok)
    chunks = []
    held_back = False
    for token_id in ids:
        chunk = stream.push(token_id)
        held_back |= bool(stream.pending_bytes)
        assert "\ufffd" not in chunk
        chunks.append(chunk)
    chunks.append(stream.flush())
    assert held_back, "the test text should split a character across tokens"
    assert "".join(chunks) == text


def test_stream_decoder_flush_replaces_unfinished_character(tok):
    crab = tok.encode("🦀")
    assert len(crab) > 1
    stream = StreamDecoder(tok)
    assert stream.push(crab[0]) == ""
    assert stream.flush() == "\ufffd"
    assert stream.pending_bytes == b""
    assert "".join(stream.push(i) for i in crab) + stream.flush() == "🦀"   # reusable after flush


def test_stream_decoder_skips_control_tokens_by_default(tok):
    ids = tok.encode("<|im_start|>ok<think>", parse_special=True)
    stream = StreamDecoder(tok)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "ok<think>"


@pytest.mark.parametrize("change, message", [
    ({"tokenizer.ggml.model": "llama"}, "only byte-level BPE"),
    ({"tokenizer.ggml.pre": "falcon"}, "tokenizer.ggml.pre = 'falcon' is not supported"),
    ({"tokenizer.ggml.token_type": [1, 1]}, "token_type has 2 entries"),
    ({"tokenizer.ggml.merges": ["nospace"]}, r"merges\[0\] = 'nospace'"),
    ({"tokenizer.ggml.merges": ["zzz qqq"]}, "do not fit the vocabulary"),
    ({"tokenizer.ggml.eos_token_id": 10**6}, "eos_token_id = 1000000 is not a token id"),
    ({"tokenizer.ggml.tokens": None}, "tokenizer.ggml.tokens is missing"),
])
def test_bad_metadata_is_rejected_with_key_named(metadata, change, message):
    with pytest.raises(GGUFError, match=message) as info:
        Tokenizer.from_metadata({**metadata, **change}, source="bad.gguf")
    assert str(info.value).startswith("bad.gguf: ")


def test_export_rejects_tokenizers_that_are_not_byte_level():
    word_level = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="only plain byte-level BPE"):
        metadata_from_tokenizers(word_level)
    bpe = tokenizers.Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="not byte-level"):
        metadata_from_tokenizers(bpe, eos_token=None)


def test_export_rejects_unknown_split_regex():
    bpe = tokenizers.Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\w+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    with pytest.raises(ValueError, match="matches no pre-tokenizer"):
        metadata_from_tokenizers(bpe, eos_token=None)


def test_tokenizer_metadata_checks_ids_and_lengths():
    with pytest.raises(ValueError, match="eos id 5 is outside"):
        tokenizer_metadata(["a", "b"], [1, 1], [], pre="qwen35", eos_id=5)
    with pytest.raises(ValueError, match="1 token types for 2 tokens"):
        tokenizer_metadata(["a", "b"], [1], [], pre="qwen35")
    with pytest.raises(ValueError, match="not supported"):
        tokenizer_metadata(["a"], [1], [], pre="llama3")
