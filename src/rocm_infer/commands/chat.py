"""``rocm-infer chat``: a conversation with a model, streamed, its history kept.

Interactive on a terminal (line editing and input history through ``readline``) or
fed lines on stdin (one user turn per line); ``-p`` asks one question and exits.
Ctrl-C while an answer streams stops that answer and keeps the session (the partial
answer stays in the history, as the user saw it); ``/exit`` or end of input ends it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import errors
from .generate import metrics_record, verbose_lines
from .options import HintingCommand, failures, generate_config, input_text, load_config, load_options, sampling_options

EXIT_WORDS = ("/exit", "/quit", "/bye")
HELP = "/exit (or Ctrl-D) ends, /clear forgets the conversation, Ctrl-C stops an answer"
BASE_MODEL_WARNING = (
    "warning: the default model, Gemma 3 270M, is a base model (not instruction-tuned): its chat replies are junk. "
    "Pass an instruction-tuned GGUF, e.g. `rocm-infer chat gemma-3-1b-it-Q4_K_M.gguf`."
)


def _read_turn(interactive: bool) -> str | None:
    """The next user line, or None at the end of input."""
    if interactive:
        try:
            return input(">>> ")
        except EOFError:
            click.echo(err=True)
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def _answer(loaded: Any, history: list[dict[str, str]], sampling: Any, verbose: bool) -> str:
    """Stream one answer to stdout; Ctrl-C ends it early.  Returns what was shown."""
    pieces: list[str] = []
    stream = loaded.chat(history, config=sampling)
    try:
        for token in stream:
            pieces.append(token.text)
            click.echo(token.text, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        click.echo()
        click.echo("(answer stopped)", err=True)
        return "".join(pieces)
    click.echo()
    if verbose:
        for line in verbose_lines(metrics_record(stream.metrics)):
            click.echo(line, err=True)
    return "".join(pieces)


@click.command(cls=HintingCommand)
@click.argument("model_arg", metavar="[MODEL]", required=False)
@click.option("--model", "-m", default=None, help="Same as MODEL.")
@click.option("--prompt", "-p", default=None, help="Ask this one question ('-': read it from stdin), print the answer, exit.")
@click.option("--system", "-s", default=None, help="A system prompt.")
@load_options
@sampling_options(max_tokens=512, temperature=0.7)
@click.option("--verbose", is_flag=True, help="Print timings and tokens/s to stderr after each answer.")
def chat(model_arg: str | None, model: str | None, prompt: str | None, system: str | None, verbose: bool, **options: Any) -> None:
    """Chat with MODEL (a GGUF path or a name in ROCM_MODEL_DIR; default: Gemma 3 270M)."""
    from .. import load_model

    if model_arg and model and model_arg != model:
        raise click.UsageError(f"two models given: {model_arg!r} and --model {model!r}")
    chosen = model_arg or model
    sampling = generate_config(options)
    load = load_config(**options)
    question = input_text(prompt) if prompt is not None else None
    if chosen is None:
        click.echo(BASE_MODEL_WARNING, err=True)
    opening = [{"role": "system", "content": system}] if system else []
    with failures(), load_model(chosen, config=load) as loaded:
        if chosen is not None and not loaded.info.has_chat_template:
            click.echo(f"note: {loaded.info.name} has no chat template; using its family's built-in one", err=True)
        if question is not None:
            _answer(loaded, [*opening, {"role": "user", "content": question}], sampling, verbose)
            return
        interactive = sys.stdin.isatty()
        if interactive:
            import readline  # noqa: F401  (line editing and up-arrow history for input())

            click.echo(f"{loaded.info.name} ({loaded.info.backend}). {HELP}.", err=True)
        history = list(opening)
        while True:
            try:
                line = _read_turn(interactive)
            except KeyboardInterrupt:
                click.echo(f"\n({HELP})", err=True)
                continue
            if line is None or line.strip() in EXIT_WORDS:
                return
            if line.strip() == "/clear":
                history = list(opening)
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            try:
                history.append({"role": "assistant", "content": _answer(loaded, history, sampling, verbose)})
            except errors.PromptTooLongError as exc:  # the session goes on without that turn
                history.pop()
                click.echo(f"{exc} (/clear starts afresh)", err=True)
