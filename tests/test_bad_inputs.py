"""The bad-input corpus: files, options, messages, prompts and runtime misuse, on both
backends wherever the input reaches one.  Each case ends in a typed ``RocmInferError``
whose message names the problem, and the model that was handed the bad input then
serves a normal request.  Lean by design: one model per backend for the module (the
session's in-process ``model`` and one llama-server), two-token normal requests."""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from processes import live_children

import rocm_infer as ri

PROMPT = "The capital of France is"
BACKENDS = ["llama_cpp", "llama_server"]
# A bound that only a broken build reaches: a case that never ended would hang the run.
NEVER_S = 120.0
# Far beyond the memory of any machine this runs on (a 270M model's KV cache for this
# many cells is hundreds of GB): loading must fail, typed, and quickly.
CONTEXT_BEYOND_MEMORY = 2**26


@pytest.fixture(scope="module")
def server(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=4, context_len=1024, prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def loaded(request, backend) -> ri.TextModel:
    """The module's model on ``backend``."""
    return request.getfixturevalue("model" if backend == "llama_cpp" else "server")


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + NEVER_S
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)


def serves(model: ri.TextModel) -> None:
    """A normal request after the bad one: two tokens, whatever the model would stop at."""
    assert len(list(model.generate(PROMPT, max_tokens=2, ignore_eos=True, timeout=NEVER_S))) == 2


# ---- files ---------------------------------------------------------------------------------


def _head(gemma: Path, size: int) -> bytes:
    with gemma.open("rb") as handle:
        return handle.read(size)


def _patched(gemma: Path, offset: int, fmt: str, value: int) -> bytes:
    head = bytearray(_head(gemma, 1 << 16))
    struct.pack_into(fmt, head, offset, value)
    return bytes(head)


def _unknown_architecture(path: Path) -> None:
    writer = GGUFWriter(str(path), "nosucharch")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


FileCase = tuple[Callable[[Path, Path, Path], None], type, str]
FILES: dict[str, FileCase] = {
    # name: (write the file at path, given the Gemma GGUF and the vendor models; error; message names)
    "missing": (lambda p, g, v: None, ri.ModelNotFoundError, "not found"),
    "a directory": (lambda p, g, v: p.mkdir(), ri.InvalidModelError, "directory"),
    "empty": (lambda p, g, v: p.write_bytes(b""), ri.InvalidModelError, "empty"),
    "random bytes": (lambda p, g, v: p.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
                     ri.InvalidModelError, "not a GGUF"),
    "wrong magic (GGML)": (lambda p, g, v: p.write_bytes(b"GGML" + _head(g, 4096)[4:]), ri.InvalidModelError, "not a GGUF"),
    "text named .gguf": (lambda p, g, v: p.write_text("these are not weights\n"), ri.InvalidModelError, "not a GGUF"),
    "cut inside the 24-byte header": (lambda p, g, v: p.write_bytes(_head(g, 10)), ri.InvalidModelError, "24-byte"),
    "cut in the metadata (4 KB)": (lambda p, g, v: p.write_bytes(_head(g, 4096)), ri.InvalidModelError, "truncated"),
    "cut in the vocabulary (1 MB)": (lambda p, g, v: p.write_bytes(_head(g, 1 << 20)), ri.InvalidModelError, "truncated"),
    "cut in the tensor data (100 MB)": (lambda p, g, v: p.write_bytes(_head(g, 100 << 20)), ri.InvalidModelError, "truncated|incomplete"),
    "version 99": (lambda p, g, v: p.write_bytes(_patched(g, 4, "<I", 99)), ri.InvalidModelError, "version 99"),
    "version 1": (lambda p, g, v: p.write_bytes(_patched(g, 4, "<I", 1)), ri.InvalidModelError, "version 1"),
    "big-endian version": (lambda p, g, v: p.write_bytes(_patched(g, 4, ">I", 3)), ri.InvalidModelError, "big-endian"),
    "absurd tensor count": (lambda p, g, v: p.write_bytes(_patched(g, 8, "<Q", 2**62)), ri.InvalidModelError, "claims 4611686018427387904 tensors"),
    "absurd key count": (lambda p, g, v: p.write_bytes(_patched(g, 16, "<Q", 2**62)), ri.InvalidModelError, "4611686018427387904 metadata keys"),
    "unsupported architecture": (lambda p, g, v: _unknown_architecture(p), ri.UnsupportedArchitectureError, "nosucharch"),
    "vocabulary only (Llama 3 BPE)": (lambda p, g, v: p.write_bytes((v / "ggml-vocab-llama-bpe.gguf").read_bytes()),
                                      ri.InvalidModelError, "vocabulary only"),
    "vocabulary only (Qwen 2)": (lambda p, g, v: p.write_bytes((v / "ggml-vocab-qwen2.gguf").read_bytes()),
                                 ri.InvalidModelError, "vocabulary only"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, gemma_path, vendor_models) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-files")
    paths = {}
    for i, (name, (write, _, _)) in enumerate(FILES.items()):
        paths[name] = folder / f"case{i}.gguf"
        write(paths[name], gemma_path, vendor_models)
    return paths


@pytest.mark.parametrize("name", FILES)
def test_a_bad_model_file_is_a_typed_error_naming_the_problem(name, backend, bad_files, loaded):
    _, error, says = FILES[name]
    with pytest.raises(error, match=says):
        ri.load_model(bad_files[name], backend=backend, context_len=256, parallel_slots=1)
    serves(loaded)


def test_a_context_far_beyond_memory_is_out_of_memory_then_loads_again(backend, gemma_path):
    before = live_children()
    with pytest.raises(ri.OutOfMemoryError, match="memory"):
        ri.load_model(gemma_path, backend=backend, context_len=CONTEXT_BEYOND_MEMORY, parallel_slots=1)
    assert live_children() <= before  # a llama-server that failed is gone, not left running
    with ri.load_model(gemma_path, backend=backend, context_len=256, parallel_slots=1) as again:
        serves(again)


def test_a_context_smaller_than_the_slots_serves_every_slot(backend, gemma_path):
    """15 cells for 16 slots: llama.cpp would size its batch below the slot count (and
    abort the process at the first full step); the context is rounded up instead."""
    with ri.load_model(gemma_path, backend=backend, context_len=15, parallel_slots=16, prefix_cache=False) as small:
        results = small.batch_generate([f"{PROMPT} {i}" for i in range(16)], max_tokens=2)
        assert small.info.context_len >= 16
    assert all(r.err is None and r.tokens for r in results)


# ---- options -------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
GENERATE_OPTIONS = [
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 2**31), ("max_tokens", "5"), ("max_tokens", 1.5), ("max_tokens", True),
    ("temperature", NAN), ("temperature", INF), ("temperature", -0.1), ("temperature", "hot"),
    ("top_k", -1), ("top_k", 2**31), ("top_k", 2.0),
    ("top_p", 1.5), ("top_p", -0.1), ("top_p", NAN),
    ("min_p", 1.1), ("min_p", NAN),
    ("repeat_penalty", 0), ("repeat_penalty", -1.0), ("repeat_penalty", INF),
    ("repeat_last_n", -1), ("repeat_last_n", 2**31),
    ("frequency_penalty", NAN), ("frequency_penalty", "1"), ("presence_penalty", INF), ("presence_penalty", None),
    ("logit_bias", {-1: 1.0}), ("logit_bias", {1: INF}), ("logit_bias", [5]),
    ("stop", 123), ("stop", ("",)), ("stop", (None,)), ("stop", ("fine", "bad \ud800")),
    ("stop_tokens", 5), ("stop_tokens", (-1,)), ("stop_tokens", ("a",)), ("stop_tokens", np.array(5)),
    ("seed", -1), ("seed", 2**32), ("seed", 1.5), ("seed", True),
    ("logprobs", "yes"), ("return_logits", 1), ("ignore_eos", "no"),
    ("timeout", 0), ("timeout", -1.0), ("timeout", NAN), ("timeout", INF), ("timeout", "1"),
]


@pytest.mark.parametrize(("field", "value"), GENERATE_OPTIONS, ids=[f"{f}={v!r}" for f, v in GENERATE_OPTIONS])
def test_a_bad_generate_option_is_refused_before_any_work(field, value, loaded):
    for call in (lambda: loaded.generate(PROMPT, **{field: value}), lambda: loaded.classify([PROMPT], **{field: value})):
        with pytest.raises(ri.InvalidConfigError, match=field):
            call()
    serves(loaded)


@pytest.mark.parametrize("options", [{"max_token": 5}, {"config": {"max_tokens": 5}}], ids=["a misspelt option", "a dict as config"])
def test_an_unknown_option_or_a_config_of_the_wrong_type_is_refused(options, loaded):
    with pytest.raises(ri.InvalidConfigError, match="max_token|config="):
        loaded.generate(PROMPT, **options)
    serves(loaded)


LOAD_OPTIONS = [
    ("context_len", -1), ("context_len", 2**31), ("context_len", "4096"), ("context_len", 1.5),
    ("gpu_layers", -2), ("gpu_layers", 2**31), ("gpu_layers", "all"),
    ("parallel_slots", -1), ("parallel_slots", 257), ("parallel_slots", 1.5),
    ("flash_attn", "maybe"), ("flash_attn", True),
    ("n_threads", -1), ("n_threads", 2**31),
    ("batch_size", 0), ("batch_size", 2**31),
    ("device_sampling", "gpu"), ("prefix_cache", 1), ("overlap_decode", "sometimes"), ("decode_runs", "yes"),
    ("backend", ""), ("backend", 5), ("ctx_len", 4096),
]


@pytest.mark.parametrize(("field", "value"), LOAD_OPTIONS, ids=[f"{f}={v!r}" for f, v in LOAD_OPTIONS])
def test_a_bad_load_option_is_refused_before_anything_loads(field, value, backend, gemma_path, loaded):
    options = {"backend": backend, field: value}
    with pytest.raises(ri.InvalidConfigError, match=field):
        ri.load_model(gemma_path, **options)
    serves(loaded)


def test_an_unknown_backend_names_the_registered_ones(gemma_path):
    with pytest.raises(ri.InvalidConfigError, match="unknown backend 'nope'.*llama_cpp"):
        ri.load_model(gemma_path, backend="nope")


# ---- messages and prompts -------------------------------------------------------------------

MESSAGES = {
    "an unknown role": ([{"role": "wizard", "content": "hi"}], "unknown chat role"),
    "a role that is not a string": ([{"role": 5, "content": "hi"}], "unknown chat role"),
    "an empty list": ([], "at least one message"),
    "one string instead of a list": ("hi", "list of messages"),
    "content that is a number": ([{"role": "user", "content": 5}], "content must be a string"),
    "content that is None": ([{"role": "user", "content": None}], "content must be a string"),
    "content that is a list": ([{"role": "user", "content": ["hi"]}], "content must be a string"),
    "no content": ([{"role": "user"}], "needs 'role' and 'content'"),
    "a message that is a number": ([5], "a chat message must be"),
    "a lone surrogate in the content": ([{"role": "user", "content": "Hi \ud800"}], "surrogate"),
}


@pytest.mark.parametrize("name", MESSAGES)
def test_bad_chat_messages_are_refused(name, loaded):
    messages, says = MESSAGES[name]
    with pytest.raises(ri.InvalidConfigError, match=says):
        list(loaded.chat(messages, max_tokens=2, timeout=NEVER_S))
    serves(loaded)


PROMPTS = {
    "a lone surrogate": ("Hi \udfff there", ri.InvalidConfigError, "surrogate"),
    "a token id past the vocabulary": ([2, 10_000_000], ri.InvalidConfigError, "vocabulary size"),
    "a negative token id": ([2, -1], ri.InvalidConfigError, "integers >= 0"),
    "a bool as a token id": ([2, True], ri.InvalidConfigError, "integers >= 0"),
    "a float as a token id": ([2, 1.5], ri.InvalidConfigError, "integers >= 0"),
    "bytes": (b"hello", ri.InvalidConfigError, "string or a list of token ids"),
    "None": (None, ri.InvalidConfigError, "string or a list of token ids"),
    "no token ids": ([], ri.InvalidConfigError, "empty"),
    "1 MB of text": ("word " * 200_000, ri.PromptTooLongError, "context"),
}


@pytest.mark.parametrize("name", PROMPTS)
def test_bad_prompts_are_typed_errors(name, loaded):
    prompt, error, says = PROMPTS[name]
    with pytest.raises(error, match=says):
        list(loaded.generate(prompt, max_tokens=2, timeout=NEVER_S))
    [item] = loaded.batch_generate([prompt], max_tokens=2, timeout=NEVER_S)
    assert item.finish_reason == "error" and isinstance(item.err, error)
    serves(loaded)


def test_token_ids_of_any_integer_type_are_a_prompt(loaded):
    """numpy's arrays and integers (a tokenizer's output often passes through one) are taken
    as a list of ints is, on every backend; a numpy bool or float is not an id."""
    ids = [2, 651, 6037, 576, 6081, 603]
    for prompt in (np.array(ids), [np.int32(t) for t in ids]):
        stream = loaded.generate(prompt, max_tokens=3, timeout=NEVER_S)
        list(stream)
        assert stream.finish_reason in ("stop", "length") and stream.metrics.prompt_tokens == len(ids)
    for bad in (np.array(ids, dtype=np.float32), [*ids[:-1], np.bool_(True)], np.array([ids, ids]), np.array(5)):
        with pytest.raises(ri.InvalidConfigError, match="token ids must be"):
            list(loaded.generate(bad, max_tokens=2, timeout=NEVER_S))
    serves(loaded)


TOKENIZE = {"None": None, "bytes": b"hello", "a number": 5, "a lone surrogate": "Hi \ud800"}
DETOKENIZE = {"None": None, "a string": "hello", "a number": 5, "a string as an id": ["a"], "a float as an id": [1.5],
              "a bool as an id": [True], "a negative id": [-1], "an id past the vocabulary": [2, 10_000_000]}


def test_tokenize_and_detokenize_refuse_what_is_not_text_or_token_ids(model):
    """The in-process model's own extras: each bad input is an InvalidConfigError (it was an
    AttributeError, UnicodeEncodeError or TypeError, or for an id out of range, silently '')."""
    for text in TOKENIZE.values():
        with pytest.raises(ri.InvalidConfigError, match="tokenize takes a string|surrogate"):
            model.tokenize(text)
    for tokens in DETOKENIZE.values():
        with pytest.raises(ri.InvalidConfigError, match="detokenize takes|token ids must be integers"):
            model.detokenize(tokens)
    ids = model.tokenize(PROMPT)
    assert model.detokenize(np.array(ids)) == model.detokenize(ids)
    serves(model)


def test_agenerate_outside_a_coroutine_is_a_typed_error(loaded):
    with pytest.raises(ri.InvalidConfigError, match="coroutine"):
        loaded.agenerate(PROMPT, max_tokens=2)
    serves(loaded)


def test_classify_takes_a_list_not_one_string(loaded):
    with pytest.raises(ri.InvalidConfigError, match="list of prompts"):
        loaded.classify(PROMPT)
    serves(loaded)


# ---- runtime --------------------------------------------------------------------------------


def test_a_prompt_past_the_context_is_a_typed_error(loaded):
    ids = [2] + [235] * loaded.info.context_len
    with pytest.raises(ri.PromptTooLongError, match="context"):
        list(loaded.generate(ids, max_tokens=2, timeout=NEVER_S))
    serves(loaded)


def test_a_timeout_ends_the_request_with_a_typed_error(loaded):
    """The request cannot finish before its timeout on any machine: it may run to the end of
    the context (thousands of tokens), and a second is a small part of that anywhere."""
    stream = loaded.generate(PROMPT, max_tokens=loaded.info.context_len - 16, ignore_eos=True, timeout=1.0)
    with pytest.raises(ri.RequestTimeoutError, match="timeout of 1.0 s"):
        list(stream)
    assert stream.finish_reason == "error" and isinstance(loaded.err(), ri.RequestTimeoutError)
    serves(loaded)


def test_cancel_from_another_thread_ends_the_reader_with_a_typed_error(loaded):
    stream = loaded.generate(PROMPT, max_tokens=loaded.info.context_len - 16, ignore_eos=True, timeout=NEVER_S)
    next(stream)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            for _ in stream:
                pass
            outcome.append("ended without an error")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    _until(lambda: stream._reading.locked() or not reader.is_alive())  # the reader waits for a token
    stream.cancel()  # from this thread, while the reader waits for its next token
    reader.join(NEVER_S)
    assert not reader.is_alive()
    assert isinstance(outcome[0], ri.RequestCancelledError) and "cancelled" in str(outcome[0])
    assert stream.finish_reason == "cancelled"
    serves(loaded)


def test_an_async_stream_closed_by_another_task_ends_its_reader_with_a_typed_error(loaded):
    import asyncio

    async def main() -> BaseException | None:
        stream = loaded.agenerate(PROMPT, max_tokens=loaded.info.context_len - 16, ignore_eos=True, timeout=NEVER_S)
        await stream.__anext__()

        async def read() -> BaseException | None:
            try:
                async for _ in stream:
                    pass
            except ri.RocmInferError as exc:
                return exc
            return None

        reader = asyncio.ensure_future(read())
        deadline = time.monotonic() + NEVER_S
        while stream._reader is None and not reader.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # until the reader waits for its next token
        await stream.aclose()
        return await asyncio.wait_for(reader, NEVER_S)

    assert isinstance(asyncio.run(main()), ri.RequestCancelledError)
    serves(loaded)


CLOSE_UNDER_TOKENIZE = """
import sys, threading, time
import rocm_infer as ri
model = ri.load_model(sys.argv[1], context_len=256, parallel_slots=1)
text, ended = "word " * 400_000, []
def tokenize_until_closed():
    for calls in range(10**6):  # tokenize() and generate()'s own tokenizing, in turn
        try:
            model.tokenize(text) if calls % 2 else model.generate(text, max_tokens=1)
        except ri.PromptTooLongError:
            pass
        except ri.RocmInferError as exc:
            ended.append(type(exc).__name__)
            return
reader = threading.Thread(target=tokenize_until_closed)
reader.start()
time.sleep(0.3)  # the reader spends nearly all its time inside llama_tokenize
model.close()
reader.join()
print(ended)
"""


def test_close_while_another_thread_tokenizes_waits_for_it(gemma_path):
    """close() freed the vocabulary under a running llama_tokenize and the process aborted
    or segfaulted: a child process, so that a regression fails this test, not the run."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", CLOSE_UNDER_TOKENIZE, str(gemma_path)], capture_output=True, text=True, timeout=NEVER_S)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "['ModelClosedError']"


def test_close_while_16_streams_run_ends_each_with_a_typed_error(backend, gemma_path):
    before = live_children()
    model = ri.load_model(gemma_path, backend=backend, parallel_slots=16, context_len=1024, prefix_cache=False)
    streams = [model.generate(f"{PROMPT} {i}", max_tokens=50, ignore_eos=True, timeout=NEVER_S) for i in range(16)]
    next(streams[0])
    model.close()
    for stream in streams:
        with pytest.raises(ri.ModelClosedError, match="closed"):
            list(stream)
    model.close()  # a second close does nothing
    after_close = [
        lambda: model.generate(PROMPT, max_tokens=2),
        lambda: model.chat([{"role": "user", "content": "hi"}], max_tokens=2),
        lambda: model.classify([PROMPT]),
    ]
    if backend == "llama_cpp":  # the in-process model's own extras read freed memory once closed
        after_close += [lambda: model.tokenize(PROMPT), lambda: model.detokenize([2, 235]), model.cache_occupancy, model.engine_stats]
    for call in after_close:
        with pytest.raises(ri.ModelClosedError, match="closed"):
            call()
    [item] = model.batch_generate([PROMPT], max_tokens=2)
    assert isinstance(item.err, ri.ModelClosedError)
    assert live_children() <= before  # no llama-server left behind
    with ri.load_model(gemma_path, backend=backend, parallel_slots=1, context_len=256) as again:
        serves(again)
