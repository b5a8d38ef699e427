"""Chat prompts: Gemma 3 through the real model, Qwen 3 and Llama 3 against hand-written
strings and against what llama-server's own Jinja engine renders from the same template
(the server backend renders a GGUF's template with the same function as in-process)."""

import datetime

import httpx
import pytest

from rocm_infer.chat_templates import template_for
from rocm_infer.errors import InvalidModelError
from rocm_infer.native.chat import render_chat
from rocm_infer.native.handles import LlamaModel
from rocm_infer.server.process import ServerProcess, find_server_binary
from rocm_infer.types import Message

CONVERSATION = [Message("system", "You are terse."), Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Bye")]


def test_gemma3_prompt_from_the_real_model(model):
    prompt = model._render_chat(CONVERSATION)
    assert prompt == (
        "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    ids = model.tokenize(prompt)
    assert ids[0] == 2 and ids.count(105) == 4  # <bos>, then four <start_of_turn> as single tokens


def test_qwen3_template(vendor_models):
    template = (vendor_models / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text()
    assert render_chat(template, CONVERSATION) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_template(vendor_models):
    """The template itself writes a system preamble with the knowledge and today's dates
    (llama.cpp's C renderer for the family leaves it out)."""
    template = (vendor_models / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text()
    today = datetime.date.today().strftime("%d %b %Y")
    assert render_chat(template, CONVERSATION) == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        f"Today Date: {today}\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_qwen2_vocab_gguf_template_is_read_from_the_file(vendor_models):
    with LlamaModel(vendor_models / "ggml-vocab-qwen2.gguf", vocab_only=True) as vocab_model:
        template = template_for(vocab_model.chat_template(), "qwen2")
    assert "<|im_start|>" in template
    assert render_chat(template, [Message("user", "Hi")]).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_unknown_template_falls_back_to_sandboxed_jinja():
    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}"
    assert render_chat(template, [Message("user", "Hi")]) == "[user]Hi[bot]"
    hostile = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(InvalidModelError, match="failed to render"):
        render_chat(hostile, [Message("user", "Hi")])


def test_architecture_default_only_when_the_gguf_has_none():
    assert template_for(None, "gemma3") == "gemma"
    assert template_for("{{ x }}", "gemma3") == "{{ x }}"
    assert template_for(None, "unknown-arch") is None


@pytest.mark.parametrize("name", ["meta-llama-Llama-3.1-8B-Instruct.jinja", "Qwen-Qwen3-0.6B.jinja"])
def test_a_gguf_template_renders_as_llama_server_renders_it(name, vendor_models, gemma_path):
    """One renderer for both backends, and it agrees with llama-server's Jinja engine (its
    default for a GGUF that carries a template) on the Llama 3.1 and Qwen 3 templates."""
    template = vendor_models / "templates" / name
    binary, _ = find_server_binary()
    args = ["-m", str(gemma_path), "-c", "256", "-np", "1", "--no-webui", "--chat-template-file", str(template)]
    messages = [{"role": m.role, "content": m.content} for m in CONVERSATION]
    with ServerProcess(binary, args) as server:
        reply = httpx.post(server.base_url + "/apply-template", json={"messages": messages},
                           headers={"Authorization": f"Bearer {server.api_key}"})
    assert render_chat(template.read_text(), CONVERSATION) == reply.json()["prompt"]
