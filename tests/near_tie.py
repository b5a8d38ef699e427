"""The stated tolerance for comparing greedy outputs computed in different batches."""

# Tolerance for batched vs alone greedy output.  llama.cpp's CPU matmul takes a
# different kernel for a single row (gemv) than for a block of rows (repacked
# gemm, 4 rows at a time, the remainder by gemv: ggml/src/ggml-cpu/repack.cpp,
# forward_mul_mat_one_chunk, "more than three rows ... use gemm; otherwise, use
# gemv"), so a token's logits depend
# on where its row lands in the batch: measured differences reach 0.47 logits
# with flash attention off (1.3 with it on).  Batched output must therefore
# equal the alone output up to the first position where the alone run's two
# candidates are within NEAR_TIE logits; a row mix-up or a cache leak between
# sequences would show as a divergence with a large gap.
NEAR_TIE = 0.75


def assert_same_until_near_tie(model, prompt, alone, batched, tie=NEAR_TIE):
    """``batched`` equals ``alone``, or first differs where the alone run had a near-tie."""
    if batched == alone:
        return
    i = next((k for k, (a, b) in enumerate(zip(alone, batched)) if a != b), min(len(alone), len(batched)))
    assert i < min(len(alone), len(batched)), "one output is a strict prefix of the other"
    ids = prompt if isinstance(prompt, list) else model.tokenize(prompt)
    logits = model.classify([ids + alone[:i]], return_logits=True)[0].logits
    gap = float(logits[alone[i]] - logits[batched[i]])
    assert abs(gap) < tie, f"diverged at {i} with a logit gap of {gap:.3f}: not a near-tie"
