"""Tests for eval.text_processing: tokens, POS one-hots, word vectors, taggers."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval.text_processing import (
    NUM_POS,
    POS_IDS,
    RuleBasedTagger,
    SpacyTagger,
    WordVectors,
    encode_token_list,
    encode_tokens,
    looks_tagged,
    pad_tokens,
    pos_id,
    split_token,
    to_tokens,
)

CHECK_TOKENS = "a/DET man/NOUN kick/VERB something/PRON or/CCONJ someone/PRON with/ADP his/DET left/ADJ leg/NOUN"
CHECK_POS_IDS = [14, 2, 1, 12, 6, 14, 6, 3, 2, 9, 10, 14] + [14] * 10


def _vectors(words, dim=4, seed=0) -> WordVectors:
    words = ["sos", "eos", "unk", *words]
    rng = np.random.default_rng(seed)
    return WordVectors.from_words(words, rng.normal(size=(len(words), dim)).astype(np.float32))


def test_formats_check_case():
    tokens = CHECK_TOKENS.split()
    vectors = _vectors([split_token(t)[0] for t in tokens])
    embs, onehot, length = encode_token_list(tokens, vectors)
    assert length == 12
    assert embs.shape == (22, 4) and onehot.shape == (22, NUM_POS)
    assert onehot.sum(1).tolist() == [1.0] * 22
    assert onehot.argmax(1).tolist() == CHECK_POS_IDS
    np.testing.assert_array_equal(embs[0], vectors.vectors[vectors.index["sos"]])
    np.testing.assert_array_equal(embs[3], vectors.vectors[vectors.index["kick"]])
    np.testing.assert_array_equal(embs[11], vectors.vectors[vectors.index["eos"]])
    np.testing.assert_array_equal(embs[12:], np.repeat(vectors.vectors[[vectors.index["unk"]]], 10, 0))


def test_unknown_word_uses_unk_and_other():
    vectors = _vectors(["walk"])
    embs, onehot, length = encode_token_list(["walk/VERB", "zyzzyva/NOUN"], vectors)
    assert length == 4
    assert onehot[1].argmax() == POS_IDS["Act_VIP"]            # VIP overrides VERB
    assert onehot[2].argmax() == POS_IDS["OTHER"]
    np.testing.assert_array_equal(embs[2], vectors.vectors[vectors.index["unk"]])


def test_truncation_and_padding():
    tokens = [f"w{i}/NOUN" for i in range(30)]
    padded, length = pad_tokens(tokens)
    assert length == 22 and len(padded) == 22
    assert padded[0] == "sos/OTHER" and padded[-1] == "eos/OTHER" and padded[20] == "w19/NOUN"
    padded, length = pad_tokens(tokens[:3])
    assert length == 5 and padded[5:] == ["unk/OTHER"] * 17


def test_pos_rules():
    assert pos_id("left", "ADJ") == POS_IDS["Loc_VIP"]
    assert pos_id("feet", "NOUN") == POS_IDS["Body_VIP"]
    assert pos_id("chair", "NOUN") == POS_IDS["Obj_VIP"]
    assert pos_id("slowly", "ADV") == POS_IDS["Desc_VIP"]
    assert pos_id("person", "NOUN") == POS_IDS["NOUN"]
    assert pos_id("and", "CCONJ") == POS_IDS["OTHER"]
    assert split_token("up/ADP") == ("up", "ADP") and split_token("plain") == ("plain", "OTHER")


def test_encode_tokens_batch_order_and_types():
    vectors = _vectors(["walk", "run"])
    batch = encode_tokens([["walk/VERB"], ["run/VERB", "walk/VERB"]], vectors)
    assert batch.word_embs.shape == (2, 22, 4) and batch.word_embs.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 4]


def test_official_files_and_npz_roundtrip(tmp_path):
    words = ["sos", "eos", "unk", "walk", "man"]
    data = np.arange(len(words) * 3, dtype=np.float64).reshape(len(words), 3)
    np.save(tmp_path / "our_vab_data.npy", data)
    with open(tmp_path / "our_vab_words.pkl", "wb") as f:
        pickle.dump(words, f)
    with open(tmp_path / "our_vab_idx.pkl", "wb") as f:
        pickle.dump({w: i for i, w in enumerate(words)}, f)
    vec = WordVectors.from_official(tmp_path)
    assert vec.vectors.dtype == np.float32 and vec.index["unk"] == 2 and vec.words == words
    vec.save_npz(tmp_path / "wv.npz")
    back = WordVectors.load_npz(tmp_path / "wv.npz")
    assert back.words == words
    np.testing.assert_array_equal(back.vectors, vec.vectors)


def test_official_pickle_with_objects_is_refused(tmp_path):
    np.save(tmp_path / "our_vab_data.npy", np.zeros((3, 2)))
    with open(tmp_path / "our_vab_words.pkl", "wb") as f:
        pickle.dump(SimpleNamespace(a=1), f)
    with open(tmp_path / "our_vab_idx.pkl", "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 2}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        WordVectors.from_official(tmp_path)


def test_missing_official_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="our_vab_data.npy"):
        WordVectors.from_official(tmp_path)


def _fake_nlp(analysis):
    def nlp(text):
        assert "-" not in text
        return [SimpleNamespace(text=t, pos_=p, lemma_=lem) for t, p, lem in analysis]
    return nlp


def test_spacy_rule_with_fake_pipeline():
    analysis = [("a", "DET", "a"), ("man", "NOUN", "man"), ("kicks", "VERB", "kick"), ("with", "ADP", "with"),
                ("his", "DET", "his"), ("left", "VERB", "leave"), ("legs", "NOUN", "leg"), (".", "PUNCT", "."),
                ("3", "NUM", "3")]
    tagger = SpacyTagger(nlp=_fake_nlp(analysis))
    assert tagger("a man kicks with his left-legs.") == [
        "a/DET", "man/NOUN", "kick/VERB", "with/ADP", "his/DET", "left/VERB", "leg/NOUN"]


def test_spacy_missing_gives_clear_error():
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install spacy"):
            SpacyTagger()("a person walks")
    else:
        with pytest.raises(OSError, match="not installed"):
            SpacyTagger(model="no_such_model_xyz")("a person walks")


def test_rule_based_tagger():
    tagger = RuleBasedTagger()
    assert tagger("A person walks forward happily.") == [
        "a/DET", "person/NOUN", "walk/VERB", "forward/ADV", "happily/ADV"]
    assert tagger("someone is waving the left hand") == [
        "someone/PRON", "is/AUX", "wave/VERB", "the/DET", "left/ADJ", "hand/NOUN"]
    assert tagger("he raises both hands, then sits down") == [
        "he/PRON", "raise/VERB", "both/DET", "hand/NOUN", "then/ADV", "sit/VERB", "down/ADV"]
    assert tagger("a man kicks something or someone with his left leg") == CHECK_TOKENS.split()


def test_to_tokens_accepts_all_forms():
    tagger = RuleBasedTagger()
    assert looks_tagged("a/DET man/NOUN") and not looks_tagged("a man")
    assert to_tokens("a/DET man/NOUN", tagger) == ["a/DET", "man/NOUN"]
    assert to_tokens(["x/NOUN"], tagger) == ["x/NOUN"]
    assert to_tokens("a man", tagger) == ["a/DET", "man/NOUN"]
