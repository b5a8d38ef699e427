import queue

from rocm_infer.native.request import Request, RequestStatus
from rocm_infer.native.scheduler import plan_step
from rocm_infer.types import GenerateConfig


def make(prompt_len: int, max_tokens: int = 8) -> Request:
    return Request(list(range(prompt_len)), GenerateConfig(max_tokens=max_tokens), queue.SimpleQueue())


def running(prompt_len: int, computed: int, generated: int = 0) -> Request:
    request = make(prompt_len)
    request.status = RequestStatus.RUNNING
    request.generated = [1] * generated
    request.n_computed = computed
    return request


def test_decoding_requests_come_first_then_prefill_chunks():
    decoding = running(4, computed=4, generated=1)  # one pending token
    prefilling = running(100, computed=10)
    plan = plan_step([prefilling, decoding], [], free_slots=0, free_cells=0, n_ctx=512, budget=32, growth=1000)
    assert [(c.request, c.start, c.count) for c in plan.chunks] == [(decoding, 4, 1), (prefilling, 10, 31)]
    assert plan.chunks[0].wants_logits and not plan.chunks[1].wants_logits


def test_long_prompt_is_chunked_and_logits_only_at_its_end():
    request = make(70)
    plan = plan_step([], [request], free_slots=4, free_cells=1000, n_ctx=1000, budget=64, growth=1000)
    assert plan.admitted == (request,)
    assert plan.chunks[0].count == 64 and not plan.chunks[0].wants_logits
    request.n_computed = 64
    request.status = RequestStatus.RUNNING
    plan = plan_step([request], [], free_slots=3, free_cells=900, n_ctx=1000, budget=64, growth=1000)
    assert plan.chunks[0].count == 6 and plan.chunks[0].wants_logits


def test_admission_with_a_large_growth_reserves_prompt_plus_max_tokens_and_keeps_order():
    first, second, third = make(10, max_tokens=50), make(10, max_tokens=500), make(1, max_tokens=1)
    plan = plan_step([], [first, second, third], free_slots=8, free_cells=100, n_ctx=1000, budget=512, growth=1000)
    # second needs 510 cells and does not fit; third fits but must not overtake it
    assert plan.admitted == (first,)


def test_max_tokens_past_the_growth_is_a_ceiling_not_a_reservation():
    long, short = make(10, max_tokens=900), make(10, max_tokens=8)
    plan = plan_step([], [long, short], free_slots=8, free_cells=100, n_ctx=1000, budget=512, growth=64)
    assert plan.admitted == (long, short)  # up to position 64 (its prompt counted in it), and 10 + 8
    assert long.cells_needed(n_ctx=1000, growth=64) == 64 and short.cells_needed(n_ctx=1000, growth=64) == 18


def test_reservation_is_capped_by_the_context_and_counts_what_was_generated():
    request = make(10, max_tokens=10_000)
    assert request.cells_needed(n_ctx=256, growth=1000) == 256
    request.generated = [1] * 100  # preempted after 100 tokens: they are prefilled again
    request.reuse_len = 6
    assert request.cells_needed(n_ctx=256, growth=64) == 110 + 1 - 6  # past its share: its tokens and one more


def test_slots_and_budget_limit_admission():
    waiting = [make(5) for _ in range(4)]
    assert len(plan_step([], waiting, free_slots=2, free_cells=1000, n_ctx=1000, budget=512, growth=1000).admitted) == 2
    assert len(plan_step([], waiting, free_slots=8, free_cells=1000, n_ctx=1000, budget=7, growth=1000).admitted) == 2


def test_request_tokens_span_prompt_and_generated():
    request = make(4)
    request.generated = [10, 11, 12]
    assert request.tokens(1, 2) == [1, 2]
    assert request.tokens(3, 3) == [3, 10, 11]
    assert request.tokens(5, 2) == [11, 12]
    assert request.pending == 7
