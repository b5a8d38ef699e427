"""Option validation happens before any work, with typed errors."""

import math

import pytest

import rocm_infer as ri
from rocm_infer.build import build_config


@pytest.mark.parametrize(
    "options",
    [
        {"max_tokens": -1},
        {"max_tokens": 0},
        {"temperature": math.nan},
        {"temperature": -0.1},
        {"top_p": 1.5},
        {"top_p": -0.1},
        {"min_p": 2.0},
        {"top_k": -3},
        {"repeat_penalty": 0},
        {"seed": -1},
        {"timeout": 0},
        {"timeout": 1e10},  # past what a thread can wait for: it was a bare OverflowError at the first token
        {"temperature": 10**400},  # an int no float can hold: it was a bare OverflowError
        {"timeout": 10**400},
        {"stop": ("",)},
        {"max_token": 5},  # a typo is an error, not a silent default
    ],
)
def test_invalid_generate_options_raise_value_errors(options):
    with pytest.raises(ri.InvalidConfigError) as info:
        ri.GenerateConfig(**options) if "max_token" not in options else ri.merge_options(ri.GenerateConfig, None, options)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "options",
    [{"context_len": -1}, {"gpu_layers": -2}, {"parallel_slots": 1000}, {"flash_attn": "maybe"}, {"batch_size": 0}],
)
def test_invalid_load_options_raise(options):
    with pytest.raises(ri.InvalidConfigError):
        ri.LoadConfig(**options)


def test_unknown_backend_is_a_typed_error():
    with pytest.raises(ri.InvalidConfigError, match="unknown backend 'nope'"):
        ri.load_model(backend="nope")


def test_unknown_role_is_rejected():
    with pytest.raises(ri.InvalidConfigError, match="unknown chat role"):
        ri.Message("wizard", "hi")


def test_config_object_and_keywords_merge():
    base = ri.GenerateConfig(max_tokens=5, temperature=0.5)
    merged = ri.merge_options(ri.GenerateConfig, base, {"temperature": 0.0})
    assert (merged.max_tokens, merged.temperature) == (5, 0.0)
    assert ri.GenerateConfig(stop="x").stop == ("x",)


def test_registry_lists_the_in_process_backends_in_default_order():
    names = ri.list_backends()
    assert names.index("rocm") < names.index("llama_cpp")
    assert ri.get_backend("llama_cpp").available()
    rocm = ri.get_backend("rocm")
    if build_config().get("gpu_backend") != "hip":  # a CPU, CUDA or Vulkan build: rocm says why
        assert "not HIP" in rocm.unavailable_reason()
    assert ri.default_backend().name == ("rocm" if rocm.available() else "llama_cpp")


def test_a_stop_string_with_a_lone_surrogate_is_refused_before_any_work():
    with pytest.raises(ri.InvalidConfigError, match="stop strings"):
        ri.GenerateConfig(stop=("fine", "bad \ud800"))
