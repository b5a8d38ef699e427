from rocm_infer.native.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def test_no_stops_passes_text_through():
    assert feed_all(StopMatcher(()), ["a", "b"]) == (["a", "b", ""], False)


def test_stop_spanning_pieces_is_held_back_and_never_emitted():
    out, stopped = feed_all(StopMatcher(("END",)), ["hello E", "N", "D tail"])
    assert stopped
    assert out == ["hello ", "", ""]
    assert "".join(out) == "hello "


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop():
    out, stopped = feed_all(StopMatcher(("END",)), ["say E", "N", "d more"])
    assert not stopped
    assert "".join(out) == "say ENd more"
    assert out[0] == "say " and out[1] == ""


def test_earliest_of_several_stops_wins():
    out, stopped = feed_all(StopMatcher(("\n\n", "b")), ["a", "\n\nb"])
    assert stopped and "".join(out) == "a"


def test_flush_releases_an_unfinished_prefix_at_the_end():
    out, stopped = feed_all(StopMatcher(("###",)), ["x#", "#"])
    assert not stopped and "".join(out) == "x##"
