"""Bag-of-words text encoder: features, unknown words, caching, save/load round trip."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mdm_adapter.text_bow import BagOfWordsEncoder, tokenize

WORDS = ["a", "the", "person", "walks", "forward", "happily", "waves", "left", "right", "hand"]


def make_encoder(known_words=None) -> BagOfWordsEncoder:
    gen = torch.Generator().manual_seed(0)
    return BagOfWordsEncoder(WORDS, torch.randn(len(WORDS), 8, generator=gen).half(), known_words=known_words)


def test_tokenize_splits_hyphens_and_punctuation():
    assert tokenize("A person walk-turns LEFT, then 2 steps.") == ["a", "person", "walk", "turns", "left",
                                                                   "then", "2", "steps"]


def test_feature_shape_norm_and_stopwords():
    enc = make_encoder()
    f = enc.encode(["a person walks forward happily", "walks forward happily"])
    assert f.shape == (2, enc.feature_dim) == (2, 16) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.equal(f[0], f[1])  # "a", "person" are stop words
    left, right = enc.encode(["waves the left hand", "waves the right hand"])
    assert not torch.allclose(left, right)


def test_unknown_words_never_crash():
    enc = make_encoder()
    with pytest.warns(UserWarning, match="unknown words"):
        f = enc.encode(["a person walks zigzaggingly"])
    assert torch.equal(f, enc.encode(["walks"]))
    with pytest.warns(UserWarning, match="null"):
        z = enc.encode(["qwerty uiop", ""])
    assert torch.equal(z, torch.zeros(2, enc.feature_dim))


def test_warns_outside_training_vocabulary():
    enc = make_encoder(known_words={"walks", "forward"})
    with pytest.warns(UserWarning, match="training captions"):
        enc.encode(["waves the right hand"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(["walks forward"])


def test_cache_returns_copies():
    enc = make_encoder()
    a = enc.encode(["walks forward", "walks forward"])
    assert len(enc._cache) == 1 and torch.equal(a[0], a[1])
    a.zero_()  # the caller owns the result
    assert enc.encode(["walks forward"]).abs().sum() > 0
    with pytest.raises(TypeError):
        enc.encode("walks")


def test_save_load_round_trip_is_exact_and_reproducible(tmp_path):
    enc = make_encoder(known_words={"walks"})
    enc.save(tmp_path / "a.safetensors")
    enc.save(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    back = BagOfWordsEncoder.from_file(tmp_path / "a.safetensors")
    prompts = ["a person walks forward happily", "waves the left hand"]
    assert back.vocabulary == WORDS and back.known_words == {"walks"}
    with pytest.warns(UserWarning, match="training captions"):
        loaded = back.encode(prompts)
    with pytest.warns(UserWarning, match="training captions"):
        original = enc.encode(prompts)
    assert torch.equal(loaded, original)


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        BagOfWordsEncoder.from_file(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a bag-of-words"):
        BagOfWordsEncoder.from_file(tmp_path / "other.safetensors")


def test_indicator_words_separate_left_from_right_and_round_trip(tmp_path):
    plain = make_encoder()
    enc = plain.with_indicators(["waves", "left", "right", "hand", "walks", "the"])
    assert enc.indicator_words == ["hand", "left", "right", "walk", "wav"]  # stemmed, stop words dropped
    assert enc.feature_dim == plain.feature_dim + 5
    with pytest.warns(UserWarning, match="unknown words"):  # "waving" has no vector, but an indicator
        f = enc.encode(["waves the left hand", "waves the right hand", "waving the left hand"])
    cos = torch.nn.functional.cosine_similarity(f[0], f[1], dim=0)
    cos_plain = torch.nn.functional.cosine_similarity(*plain.encode(["waves the left hand", "waves the right hand"]), dim=0)
    assert cos < cos_plain  # the indicator parts of the two prompts have cosine 2/3
    # the indicator part: counts of hand, left, wav -> l2-normalised, scaled by 1/sqrt(3)
    expected = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]) / 3 ** 0.5 / 3 ** 0.5
    torch.testing.assert_close(f[0, plain.feature_dim:], expected)
    torch.testing.assert_close(f[2, plain.feature_dim:], expected)  # "waving" stems like "waves"
    enc.save(tmp_path / "enc.safetensors")
    again = BagOfWordsEncoder.from_file(tmp_path / "enc.safetensors")
    assert again.indicator_words == enc.indicator_words
    torch.testing.assert_close(again.encode(["waves the left hand"]), f[:1])


def _rewrite(path, meta=None, vectors=None, drop=()):
    """Re-save an encoder file with edited metadata / vectors (test helper)."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        old_meta, old_vectors = dict(f.metadata()), f.get_tensor("vectors")
    new_meta = {k: v for k, v in {**old_meta, **(meta or {})}.items() if k not in drop}
    save_file({"vectors": old_vectors if vectors is None else vectors}, str(path), metadata=new_meta)


BROKEN = {
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), "cannot read .* as safetensors"),
    "empty": (lambda p: p.write_bytes(b""), "cannot read .* as safetensors"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-7]), "cannot read .* as safetensors"),
    "vocabulary not JSON": (lambda p: _rewrite(p, meta={"vocabulary": "[walks"}), "'vocabulary' is not JSON"),
    "vocabulary not words": (lambda p: _rewrite(p, meta={"vocabulary": "[1, 2]"}), "must be a JSON list of words"),
    "vocabulary too short": (lambda p: _rewrite(p, meta={"vocabulary": '["walks"]'}), "vectors must be \\[V, E\\]"),
    "stopwords missing": (lambda p: _rewrite(p, drop=("stopwords",)), "lacks 'stopwords'"),
    "vectors NaN": (lambda p: _rewrite(p, vectors=torch.full((len(WORDS), 4), float("nan"), dtype=torch.float16)),
                    "must be a finite float"),
    "vectors integer": (lambda p: _rewrite(p, vectors=torch.zeros(len(WORDS), 4, dtype=torch.int32)),
                        "must be a finite float"),
}


@pytest.mark.parametrize("damage", list(BROKEN))
def test_damaged_file_is_one_value_error_naming_it(tmp_path, damage):
    path = tmp_path / "text_encoder.safetensors"
    make_encoder(known_words={"walks"}).save(path)
    edit, match = BROKEN[damage]
    edit(path)
    with pytest.raises(ValueError, match=match) as info:
        BagOfWordsEncoder.from_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
