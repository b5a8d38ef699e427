"""Single-request behaviour of the in-process backend on the real Gemma model."""

import subprocess

import pytest

import rocm_infer as ri
from rocm_infer.native.model import NativeModel

PROMPT = "The capital of France is"


def test_info_describes_the_model(model):
    info = model.info
    assert (info.architecture, info.vocab_size, info.n_layers, info.hidden_size) == ("gemma3", 262144, 18, 640)
    assert (info.quantization, info.quant_bits, info.quant_group) == ("Q4_K_M", 4, 256)
    if NativeModel._free_vram(ri.LoadConfig()) is None:  # no GPU memory figure: the cap applies
        assert info.context_len == 4096 and "capped at 4096" in info.context_reason
    else:  # a HIP build on a Radeon: what free VRAM holds, up to the trained context
        assert 256 <= info.context_len <= info.context_train and "VRAM" in info.context_reason
    assert model.model_type == "gemma3"


def test_greedy_stream_has_real_ids_text_and_metrics(model):
    stream = model.generate(PROMPT, max_tokens=16, ignore_eos=True)
    tokens = list(stream)
    assert len(tokens) == 16 and stream.finish_reason == "length"
    assert "".join(t.text for t in tokens) == model.detokenize([t.id for t in tokens])
    metrics = stream.metrics
    assert metrics.generated_tokens == 16
    assert metrics.prompt_tokens == len(model.tokenize(PROMPT))
    assert 0 < metrics.time_to_first_token_s <= metrics.total_s
    assert metrics.decode_tokens_per_s > 0
    assert metrics.active_memory_bytes >= model.info.size_bytes * 0.9
    assert model.metrics() == metrics and model.err() is None


def test_same_seed_same_text_and_logprobs(model):
    options = dict(max_tokens=24, temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=1234)
    first = model.generate("Once upon a time", **options).text()
    second = model.generate("Once upon a time", **options).text()
    assert first == second and first
    tokens = list(model.generate("Once upon a time", max_tokens=4, logprobs=True))
    assert all(t.logprob is not None and t.logprob <= 0 for t in tokens)


def test_stop_string_spanning_tokens_is_honoured_and_not_emitted(model):
    full = model.generate(PROMPT, max_tokens=24).text()
    # a stop string that straddles a token boundary: the tail of one token and the head of the next
    ids = [t.id for t in model.generate(PROMPT, max_tokens=24)]
    pieces = [model.detokenize([i]) for i in ids]
    boundary = next(i for i in range(1, len(pieces)) if len(pieces[i - 1]) >= 2 and len(pieces[i]) >= 2)
    stop = pieces[boundary - 1][-2:] + pieces[boundary][:2]
    stream = model.generate(PROMPT, max_tokens=24, stop=[stop])
    text = stream.text()
    assert stream.finish_reason == "stop"
    assert stop not in text
    assert text == full[: full.index(stop)]


def test_stop_token_ids_end_the_stream(model):
    ids = [t.id for t in model.generate(PROMPT, max_tokens=8)]
    cut = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    stream = model.generate(PROMPT, max_tokens=8, stop_tokens=[ids[cut]])
    assert [t.id for t in stream] == ids[:cut] and stream.finish_reason == "stop"


def test_text_held_back_is_released_when_a_stop_token_ends_the_stream(model):
    """The second token's text is held (it starts a stop string that never completes);
    a stop token id then ends generation, and the held text must still arrive."""
    prompt = "Once upon a time"
    free = list(model.generate(prompt, max_tokens=4))
    holder = free[1].text
    stream = model.generate(prompt, max_tokens=8, stop=(holder + "\x00never",), stop_tokens=(free[2].id,))
    tokens = list(stream)
    assert "".join(t.text for t in tokens) == free[0].text + holder
    assert stream.finish_reason == "stop"


def test_multibyte_characters_arrive_whole(model):
    stream = model.generate("Translate to Japanese and add emoji: I love cats. 私は猫が大好きです 🐱🐱 もっと", max_tokens=40)
    texts = [t.text for t in stream]
    assert all("\ufffd" not in t for t in texts)
    joined = "".join(texts)
    assert joined.encode("utf-8").decode("utf-8") == joined


def test_chat_with_gemma_produces_tokens(model):
    stream = model.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], max_tokens=16)
    tokens = list(stream)
    assert tokens, "the chat turn must not end before producing anything"
    assert stream.finish_reason in ("stop", "length")


def test_chat_rejects_bad_messages(model):
    with pytest.raises(ri.InvalidConfigError):
        model.chat([], max_tokens=4)
    with pytest.raises(ri.InvalidConfigError):
        model.chat([{"role": "wizard", "content": "hi"}])
    with pytest.raises(ri.InvalidConfigError):
        model.chat("just a string")


def test_prompt_longer_than_the_context_is_a_typed_error_and_the_model_keeps_serving(model):
    with pytest.raises(ri.PromptTooLongError):
        model.generate("word " * 5000, max_tokens=4)
    with pytest.raises(ri.InvalidConfigError):
        model.generate(PROMPT, max_tokens=-1)
    with pytest.raises(ri.InvalidConfigError):
        model.generate(PROMPT, temperature=float("nan"))
    assert len(list(model.generate(PROMPT, max_tokens=4, ignore_eos=True))) == 4


def test_generation_stops_at_the_context_end(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", context_len=256, parallel_slots=1) as small:
        n_ctx = small.info.context_len
        prompt = "one two three four five six seven eight nine ten " * 2
        n_prompt = len(small.tokenize(prompt))
        stream = small.generate(prompt, max_tokens=10_000, ignore_eos=True)
        tokens = list(stream)
        assert stream.finish_reason == "length"
        assert n_prompt + len(tokens) == n_ctx


def test_timeout_ends_the_request_with_a_typed_error(model):
    """It cannot finish first at any speed: it runs to the end of a 4096-token context."""
    stream = model.generate(PROMPT, max_tokens=4000, ignore_eos=True, timeout=1.0)
    with pytest.raises(ri.RequestTimeoutError):
        for _ in stream:
            pass
    assert stream.finish_reason == "error" and isinstance(model.err(), ri.RequestTimeoutError)
    assert len(list(model.generate(PROMPT, max_tokens=2, ignore_eos=True))) == 2


def test_generate_after_close_is_a_typed_error(gemma_path):
    loaded = ri.load_model(gemma_path, backend="llama_cpp", context_len=256, parallel_slots=2)
    live = loaded.generate(PROMPT, max_tokens=4000)
    next(live)
    loaded.close()
    with pytest.raises(ri.ModelClosedError):
        for _ in live:
            pass
    with pytest.raises(ri.ModelClosedError):
        loaded.generate(PROMPT)
    loaded.close()  # a second close does nothing


def test_cli_generate_prints_text_with_the_default_model():
    proc = subprocess.run(["rocm-infer", "generate", "The capital of France is", "-n", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) > 0

