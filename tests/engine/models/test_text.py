import torch

from engine.models.text import ByteTextEncoder, TextTokens, tokenize
from engine.presets import get_preset

CFG = get_preset("tiny").text


def test_tokenize_bytes_bos_and_cut() -> None:
    tokens = tokenize(["hé", None, "x" * 500], CFG)
    assert tokens.ids[0, :4].tolist() == [CFG.bos_id, 104, 0xC3, 0xA9]
    assert tokens.lens.tolist() == [4, 1, CFG.max_bytes + 1]
    assert tokens.ids.shape == (3, CFG.max_bytes + 1)


def test_padding_does_not_change_the_encoding() -> None:
    enc = ByteTextEncoder(CFG)
    alone = enc(tokenize(["hello"], CFG))
    padded = enc(tokenize(["hello", "a much longer prompt"], CFG))
    torch.testing.assert_close(padded[0, :6], alone[0])
    assert torch.equal(padded[0, 6:], torch.zeros_like(padded[0, 6:]))


def test_cat_and_drop() -> None:
    a, b = tokenize(["hi"], CFG), tokenize(["hello"], CFG)
    both = TextTokens.cat([a, b])
    assert both.ids.shape == (2, 6) and both.lens.tolist() == [3, 6]
    dropped = both.drop(torch.tensor([True, False]))
    empty = tokenize([""], CFG)
    assert dropped.lens.tolist() == [3, 1]
    assert torch.equal(dropped.ids[1, :1], empty.ids[0])
    assert dropped.ids[1, 1:].eq(0).all()
