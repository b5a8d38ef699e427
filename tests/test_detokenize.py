from rocm_infer.native.detokenize import Detokenizer


def test_multibyte_character_split_across_tokens_arrives_whole():
    emoji = "🙂".encode()  # 4 bytes
    cjk = "漢".encode()  # 3 bytes
    pieces = [b"a", emoji[:1], emoji[1:3], emoji[3:] + cjk[:2], cjk[2:]]
    detok = Detokenizer()
    out = [detok.feed(p) for p in pieces]
    assert out == ["a", "", "", "🙂", "漢"]
    assert detok.flush() == ""


def test_incomplete_tail_at_the_end_becomes_a_replacement_character():
    detok = Detokenizer()
    assert detok.feed("é".encode()[:1]) == ""
    assert detok.flush() == "\ufffd"
