"""``ChunkReader`` on hand-made llama-server chunks (the shapes ``process_token`` and
``send_final_response`` produce in tools/server/server-context.cpp), no server needed."""

from __future__ import annotations

from rocm_infer.server.chunks import UNKNOWN_ID, ChunkReader
from rocm_infer.types import GenerateConfig, Token

EOG = 106
PIECES = {10: " quick", 11: " brown", 12: " fox", 13: " jumps"}  # what ``detokenize`` would say


def chunk(token: int, text: str, predicted: int) -> dict:
    return {"tokens": [token], "content": text, "stop": False, "tokens_predicted": predicted}


def final(stop_type: str, predicted: int) -> dict:
    return {"tokens": [], "content": "", "stop": True, "stop_type": stop_type, "tokens_predicted": predicted}


def read(chunks: list[dict], byte_ids=lambda _char, _count: None, **options) -> tuple[list[Token], ChunkReader]:
    reader = ChunkReader(GenerateConfig(**options), frozenset({EOG}), byte_ids, lambda ids: "".join(PIECES[i] for i in ids))
    out: list[Token] = []
    for data in chunks:
        out += reader.feed(data)
    return out, reader


def test_the_end_of_generation_token_is_not_emitted():
    tokens, reader = read([chunk(10, "a", 1), chunk(11, "b", 2), chunk(EOG, "", 3), final("eos", 3)])
    assert tokens == [Token(10, "a"), Token(11, "b")]
    assert (reader.reason, reader.generated) == ("stop", 2)


def test_text_released_with_the_end_of_generation_token_comes_with_it():
    # a possible stop string held " fox" back; the end-of-generation chunk releases it
    tokens, reader = read([chunk(10, " quick", 1), chunk(12, "", 2), chunk(EOG, " fox", 3), final("eos", 3)], stop=("fox jumps",))
    assert tokens == [Token(10, " quick"), Token(12, ""), Token(EOG, " fox")]
    assert reader.generated == 3


def test_a_stop_token_carries_only_the_text_held_back_before_it():
    # " brown" was held for " brown xyz"; the server sends " brown fox" with the stop token
    chunks = [chunk(10, " quick", 1), chunk(11, "", 2), chunk(12, " brown fox", 3)]
    tokens, reader = read(chunks, stop=(" brown xyz",), stop_tokens=(12,))
    assert tokens == [Token(10, " quick"), Token(11, ""), Token(12, " brown")]
    assert (reader.reason, reader.generated) == ("stop", 3)


def test_text_held_back_for_a_stop_string_is_released_at_max_tokens():
    # " brown fox" could begin the stop string: llama-server holds it and, at the limit, drops it
    chunks = [chunk(10, " quick", 1), chunk(11, "", 2), chunk(12, "", 3), final("limit", 3)]
    tokens, reader = read(chunks, stop=(" brown fox jumps",))
    assert tokens == [Token(10, " quick"), Token(11, ""), Token(12, " brown fox")]
    assert (reader.reason, reader.generated) == ("length", 3)


def test_a_completed_stop_string_releases_nothing():
    chunks = [chunk(10, " quick", 1), chunk(11, "", 2), final("word", 2)]
    tokens, _ = read(chunks, stop=(" brown",))
    assert tokens == [Token(10, " quick"), Token(11, "")]


def test_with_ignore_eos_the_end_of_generation_token_is_an_ordinary_token():
    tokens, _ = read([chunk(EOG, "", 1), chunk(10, "a", 2), final("limit", 2)], ignore_eos=True)
    assert tokens == [Token(EOG, ""), Token(10, "a")]


def test_tokens_without_a_chunk_are_counted_and_their_byte_ids_recovered():
    spelled = {"𓀁": [478, 385, 366, 367]}
    tokens, reader = read([chunk(367, "𓀁", 4), final("limit", 4)], byte_ids=lambda char, count: spelled[char][:count] if count == 4 else None)
    assert tokens == [Token(478, ""), Token(385, ""), Token(366, ""), Token(367, "𓀁")]
    assert reader.generated == 4


def test_ids_that_cannot_be_recovered_are_unknown_but_counted():
    tokens, _ = read([chunk(5, "中", 2), final("limit", 2)])
    assert tokens == [Token(UNKNOWN_ID, ""), Token(5, "中")]


def test_a_limit_inside_a_character_counts_the_unsent_tokens():
    tokens, reader = read([chunk(10, "a", 1), final("limit", 3)])
    assert tokens == [Token(10, "a"), Token(UNKNOWN_ID, ""), Token(UNKNOWN_ID, "\ufffd")]
    assert (reader.reason, reader.generated) == ("length", 3)


def test_an_end_inside_a_character_counts_the_unsent_tokens_and_the_end_token():
    # two bytes of a character, then the end-of-generation token: none of them is sent
    tokens, reader = read([chunk(10, "a", 1), final("eos", 4)])
    assert tokens == [Token(10, "a"), Token(UNKNOWN_ID, ""), Token(UNKNOWN_ID, ""), Token(UNKNOWN_ID, "\ufffd")]
    assert (reader.reason, reader.generated) == ("stop", 4)


def test_a_stop_token_id_ends_the_stream_without_being_emitted():
    tokens, reader = read([chunk(10, "a", 1), chunk(11, "", 2), chunk(12, "b", 3)], stop_tokens=(12,))
    assert tokens == [Token(10, "a"), Token(11, "")]
    assert reader.reason == "stop"


def test_progress_chunks_release_nothing():
    tokens, reader = read([{"tokens": [], "content": "", "stop": False, "tokens_predicted": 0}])
    assert tokens == [] and reader.reason is None


def with_probs(data: dict, logprob: float, top: list[tuple[int, float]]) -> dict:
    """``n_probs``' shape (``probs_vector_to_json``): the sampled token's logprob and its step's best."""
    best = [{"id": t, "token": PIECES.get(t, ""), "bytes": [], "logprob": lp} for t, lp in top]
    return {**data, "completion_probabilities": [{"id": data["tokens"][0], "token": "", "bytes": [], "logprob": logprob,
                                                  "top_logprobs": best}]}


def test_log_probabilities_and_the_steps_best_come_with_their_tokens():
    chunks = [with_probs(chunk(10, " quick", 1), -0.1, [(10, -0.1), (11, -2.5)]),
              with_probs(chunk(12, "", 2), -0.7, [(13, -0.2), (12, -0.7)]), with_probs(chunk(EOG, " fox", 3), -0.01, [(EOG, -0.01)]),
              final("eos", 3)]
    tokens, _ = read(chunks, stop=("fox jumps",), logprobs=True, top_logprobs=2)
    assert tokens == [Token(10, " quick", -0.1, ((10, -0.1), (11, -2.5))), Token(12, "", -0.7, ((13, -0.2), (12, -0.7))),
                      Token(EOG, " fox", -0.01, ((EOG, -0.01),))]  # the end token carries the held-back text, and its own
    plain, _ = read(chunks, stop=("fox jumps",), logprobs=True)
    assert [t.top_logprobs for t in plain] == [None, None, None] and [t.logprob for t in plain] == [-0.1, -0.7, -0.01]
