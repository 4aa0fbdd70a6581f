"""BM25-style sparse vectors, the same on both vector back ends.

Qdrant's own BM25 (Rust, from qdrant-edge-py: English stemming and stop words)
gives a document's saturated term frequencies. The inverse document frequency goes
into the query instead, counted over the searched collections only (ingest.term_stats),
so adding documents never means re-encoding old ones.
"""

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qdrant_edge import Bm25

AVERAGE_LENGTH = 150  # terms per passage, about what the chunker makes


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@functools.cache
def _bm25() -> "Bm25":
    from qdrant_edge import Bm25, Bm25Config

    return Bm25(Bm25Config(avg_len=AVERAGE_LENGTH))


def encode_document(text: str) -> SparseVector:
    vector = _bm25().embed_document(text)
    return SparseVector(list(vector.indices), list(vector.values))


def encode_query(text: str) -> SparseVector:
    vector = _bm25().embed_query(text)
    return SparseVector(list(vector.indices), list(vector.values))
