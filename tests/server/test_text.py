"""server.text: prompts to ids, streamed text cut at stop strings; chat rendering with template kwargs."""

from __future__ import annotations

import pytest

from vkmtp.server.text import TextStream, prompt_ids, render_chat
from vkmtp.text.chat_template import ChatTemplate
from vkmtp.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> Tokenizer:
    from vkmtp.gguf import open_gguf

    return Tokenizer.from_gguf(open_gguf(tiny_model))


def feed(stream: TextStream, tokenizer: Tokenizer, text: str) -> list[str]:
    """Push the ids of `text` one by one; return the deltas `take` hands out, then the final one."""
    deltas = []
    for token in tokenizer.encode(text, add_special=False):
        if stream.push(token):
            break
        deltas.append(stream.take())
    stream.finish()
    deltas.append(stream.take(final=True))
    return deltas


def test_no_stop_strings_gives_the_text(tokenizer):
    text = "Hello, world! héllo"
    stream = TextStream(tokenizer, [])
    assert "".join(feed(stream, tokenizer, text)) == text and stream.stop_word is None


def test_stop_string_ends_the_text_and_is_not_shown(tokenizer):
    stream = TextStream(tokenizer, ["world", "zzz"])
    deltas = feed(stream, tokenizer, "Hello, world! How are you?")
    assert "".join(deltas) == "Hello, " and stream.stop_word == "world"
    assert all("w" not in d for d in deltas)  # the start of the stop string was held back


def test_partial_stop_string_is_released_when_it_does_not_complete(tokenizer):
    stream = TextStream(tokenizer, ["world peace"])
    deltas = feed(stream, tokenizer, "Hello, world! How are you?")
    assert "".join(deltas) == "Hello, world! How are you?" and stream.stop_word is None


def test_earliest_stop_string_wins(tokenizer):
    stream = TextStream(tokenizer, ["you", "How"])
    assert "".join(feed(stream, tokenizer, "Hello, world! How are you?")) == "Hello, world! "
    assert stream.stop_word == "How"


def test_prompt_forms(tokenizer):
    ids = tokenizer.encode("The quick fox", add_special=True, parse_special=True)
    assert prompt_ids("The quick fox", tokenizer, allow_mixed=False) == ids
    assert prompt_ids(["The quick fox"], tokenizer, allow_mixed=False) == ids
    assert prompt_ids(ids, tokenizer, allow_mixed=False) == ids
    assert prompt_ids([ids], tokenizer, allow_mixed=False) == ids
    assert prompt_ids(["The quick", *ids[-1:]], tokenizer, allow_mixed=True)[-1] == ids[-1]
    for bad, words in [
        ([], "non-empty"),
        ({"a": 1}, "string"),
        ([1, True], r"prompt\[1\]"),
        (["a", "b"], "one prompt"),
        ([10**9], "not a token id"),
    ]:
        with pytest.raises(ValueError, match=words):
            prompt_ids(bad, tokenizer, allow_mixed=False)


def test_chat_template_kwargs_reach_the_template(tokenizer):
    template = ChatTemplate(
        "{{ greeting }} {% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if enable_thinking %} think{% endif %}"
    )
    messages = [{"role": "user", "content": "there"}]
    assert render_chat(template, messages, None, {"greeting": "hi"}) == "hi there think"
    assert render_chat(template, messages, None, {"greeting": "yo", "enable_thinking": False}) == "yo there"
    with pytest.raises(ValueError, match="chat_template_kwargs.add_generation_prompt"):
        render_chat(template, messages, None, {"add_generation_prompt": False})
