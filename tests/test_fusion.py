"""Hybrid ranking by scores (retrieval.fusion)."""

from ingest.vectors import Hit
from ingest.vectors.base import DOCUMENT_ID
from retrieval.fusion import fuse


def hits(*found: tuple[str, int, float]) -> list[Hit]:
    return [Hit(id=point, score=score, payload={DOCUMENT_ID: doc}) for point, doc, score in found]


NOISE_DENSE = [(f"n{i}", 100 + i, 0.30 - i * 0.01) for i in range(10)]
NOISE_SPARSE = [(f"n{i}", 100 + i, 4.0 - i * 0.2) for i in range(10)]


def test_a_document_found_in_meaning_and_in_words_comes_first():
    # Document 1 matches the question in meaning in one passage and in its words in
    # another; document 2's one passage is second in both. Rank fusion of passages puts
    # document 2 first (1/62 + 1/62 against 1/61); its scores say document 1.
    dense = hits(("meaning", 1, 0.80), ("both", 2, 0.78), *NOISE_DENSE)
    sparse = hits(("words", 1, 14.0), ("both", 2, 13.5), *NOISE_SPARSE)
    ranked = fuse(dense, sparse, dense_weight=0.5)
    assert [h.payload[DOCUMENT_ID] for h in ranked[:3]] == [1, 1, 2]
    assert {h.id for h in ranked} == {h.id for h in dense + sparse}


def test_one_empty_list_ranks_by_the_other():
    dense = hits(("a", 1, 0.5), ("b", 2, 0.7), ("c", 3, 0.6))
    assert [h.id for h in fuse(dense, [], dense_weight=0.5)] == ["b", "c", "a"]


def test_the_weight_decides_between_the_lists():
    dense = hits(("a", 1, 0.9), ("b", 2, 0.5), *NOISE_DENSE)
    sparse = hits(("b", 2, 20.0), ("a", 1, 5.0), *NOISE_SPARSE)
    assert fuse(dense, sparse, dense_weight=1.0)[0].id == "a"
    assert fuse(dense, sparse, dense_weight=0.0)[0].id == "b"
