"""longseq.trees: span normalisation, trivial-span removal and the unlabeled F1 convention,
checked on examples worked by hand."""

import pytest

from longseq import trees


def test_normalize_merges_adjacent_blocks_and_accepts_pairs():
    assert trees.normalize((2, 5)) == ((2, 5),)
    assert trees.normalize(((4, 6), (0, 2))) == ((0, 2), (4, 6))
    assert trees.normalize(((0, 2), (2, 3))) == ((0, 3),)
    with pytest.raises(ValueError, match="overlapping"):
        trees.normalize(((0, 3), (2, 4)))
    with pytest.raises(ValueError, match="empty or reversed"):
        trees.normalize((3, 3))


def test_spans_of_nested_tree_root_first():
    spans = trees.spans_of((("the", "dog"), ("barks", ("at", "cats"))))
    assert spans[0] == ((0, 5),)
    assert set(spans) == {((0, 5),), ((0, 2),), ((2, 5),), ((3, 5),)} | {((i, i + 1),) for i in range(5)}


def test_f1_of_right_branching_by_hand():
    # gold ((w0 w1) (w2 (w3 w4))): non-trivial gold spans {[0,2), [2,5), [3,5)}
    gold = trees.spans_of(((0, 1), (2, (3, 4))))
    # right-branching over 5 words: non-trivial {[1,5), [2,5), [3,5)}: 2 of 3 correct -> P = R = F1 = 2/3
    assert trees.sentence_f1(trees.right_branching(5), gold, 5) == pytest.approx(2 / 3)
    # left-branching: {[0,2), [0,3), [0,4)}: 1 of 3 -> 1/3
    assert trees.sentence_f1(trees.left_branching(5), gold, 5) == pytest.approx(1 / 3)
    assert trees.sentence_f1(gold, gold, 5) == 1.0


def test_corpus_f1_pools_counts_and_skips_single_words():
    gold = [trees.spans_of(((0, 1), (2, (3, 4)))), trees.spans_of((0, (1, 2))), [((0, 1),)]]
    pred = [trees.right_branching(5), trees.right_branching(3), [((0, 1),)]]
    out = trees.corpus_f1(pred, gold, [5, 3, 1])
    assert out["n"] == 2
    assert out["sentence_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert out["precision"] == pytest.approx(3 / 4) and out["recall"] == pytest.approx(3 / 4)


def test_discontinuous_f1_only_counts_gapped_constituents():
    gold = [((0, 1), (3, 4)), (1, 3), (0, 5)]
    pred = [((0, 1), (3, 4)), (0, 2)]
    assert trees.sentence_f1(pred, gold, 5, only_discontinuous=True) == 1.0
    assert trees.sentence_f1(pred, gold, 5) == pytest.approx(0.5)  # P 1/2, R 1/2


def test_split_by_distance_builds_the_tree():
    # boundaries between 4 words; the biggest (index 1) splits [0,2) | [2,4)
    spans = trees.split_by_distance([0.1, 5.0, 0.3])
    assert trees.nontrivial(spans, 4) == {((0, 2),), ((2, 4),)}
