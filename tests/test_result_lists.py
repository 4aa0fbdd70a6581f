"""Full result lists: when one document holds the best passages, the cap per document
must not shorten a list below what was asked for while other documents remain."""

import json
from collections import Counter
from typing import Any

import pytest

from ingest.models import Chunk
from kb.models import AuditEvent
from tests.conftest import add, dead_url, logged_in

QUERY = "fire evacuation drill assembly point"
OTHERS = {
    "parking.txt": "Parking policy. The staff car park is behind building C.",
    "holiday.txt": "Holiday policy. Employees receive twenty-eight days of paid leave.",
    "canteen.txt": "Canteen rules. Lunch is served from noon; trays go back to the rack.",
    "badges.txt": "Badge policy. Wear your badge where security staff can see it.",
    "vpn.txt": "VPN guide. Connect to the VPN before opening the intranet.",
    "travel.txt": "Travel policy. Book trains through the travel desk.",
}


@pytest.fixture
def crowded(pipeline, hr, settings) -> dict[str, Any]:
    """One long fire-safety manual whose every passage beats the other documents'."""
    settings.KB_SEARCH_PER_DOCUMENT = 3
    manual = " ".join(
        f"Fire evacuation drill {n}: leave by stair {n % 7} and gather at assembly point "
        f"{n % 5} until the fire warden counts everyone."
        for n in range(600)
    )
    big = add(hr, "fire-manual.txt", manual)
    for name, text in OTHERS.items():
        add(hr, name, text)
    assert Chunk.objects.filter(document=big).count() > 30  # more than a search first reads
    return {"big": big}


def per_document(document_ids: list[int]) -> Counter[int]:
    return Counter(document_ids)


def documents_of(chunk_ids: list[int]) -> list[int]:
    document_of = dict(Chunk.objects.filter(pk__in=chunk_ids).values_list("pk", "document_id"))
    return [document_of[n] for n in chunk_ids]


def test_rest_search_for_five_returns_five(crowded, bob):
    response = logged_in(bob).post(
        "/api/v1/search",
        json.dumps({"query": QUERY, "top_k": 5}),
        content_type="application/json",
    )
    results = response.json()["results"]
    counts = per_document([r["document_id"] for r in results])
    assert len(results) == 5, counts
    assert counts[crowded["big"].pk] == 3 and max(counts.values()) <= 3
    assert results[0]["document_id"] == crowded["big"].pk
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_the_answer_gets_its_full_share_of_sources(crowded, bob, llm_at, settings):
    llm_at(dead_url())  # the sources are chosen before the model is asked
    response = logged_in(bob).post(
        "/api/v1/ask", json.dumps({"question": QUERY}), content_type="application/json"
    )
    assert response.status_code == 503
    assert len(response.json()["passages"]) == 5
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    sources = per_document(documents_of(event.chunk_ids))
    assert len(event.chunk_ids) == settings.KB_ANSWER_SOURCES == 5, sources
    assert max(sources.values()) <= 3 and len(sources) >= 3


def test_vector_store_search_for_five_returns_five(crowded, bob):
    response = logged_in(bob).post(
        "/v1/vector_stores/hr/search",
        json.dumps({"query": QUERY, "max_num_results": 5}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    results = response.json()["data"]
    counts = per_document([int(r["file_id"]) for r in results])
    assert len(results) == 5 and max(counts.values()) <= 3, counts


def test_a_collection_with_fewer_documents_gives_what_it_has(crowded, bob, hr):
    from retrieval.search import passages_search

    result = passages_search(query=QUERY, collections=[hr], top_k=50)
    counts = per_document([p.document_id for p in result.passages])
    assert len(result.passages) == 3 + len(OTHERS) and max(counts.values()) == 3
