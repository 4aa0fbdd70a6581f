"""Search and answers over real ingested documents, with the real small local model."""

import io
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from ingest.services import document_delete
from kb.audit import SYSTEM
from kb.models import AuditEvent, Collection, ModelProfile
from retrieval import services
from retrieval.search import passages_search
from tests.conftest import PARKING, add, collect, dead_url, logged_in, principal


def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def test_search_finds_the_passage_and_audits_it(docs, bob):
    response = post(logged_in(bob), "/api/v1/search", {"query": "how many days of paid holiday"})
    assert response.status_code == 200
    body = response.json()
    top = body["results"][0]
    assert top["document_id"] == docs["holiday"].pk and top["collection"] == "hr"
    assert "twenty-eight days" in top["text"]
    assert top["url"].endswith(f"/passages/{top['chunk_id']}")
    event = AuditEvent.objects.filter(action="search").last()
    assert event is not None and event.detail["query_id"] == body["query_id"]
    assert event.chunk_ids == [r["chunk_id"] for r in body["results"]]
    assert event.query == "how many days of paid holiday" and event.actor_name == "bob"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_each_mode_ranks_the_right_document_first(docs, hr, mode):
    result = passages_search(query="where is the staff car park", collections=[hr], mode=mode)
    assert result.passages[0].document_id == docs["parking"].pk


def test_every_mode_gives_refusals_the_nearest_passages_cosine(docs, hr):
    query = "where is the staff car park"
    nearest = passages_search(query=query, collections=[hr], mode="dense").passages[0].score
    for mode in ("hybrid", "dense", "sparse"):
        found = passages_search(query=query, collections=[hr], mode=mode, with_similarity=True)
        assert found.best_similarity == pytest.approx(nearest) and 0 < nearest < 1


def test_filters_narrow_the_search(docs, hr, alice):
    client = logged_in(alice)
    only = post(
        client,
        "/api/v1/search",
        {"query": "policy", "filters": {"document_ids": [docs["parking"].pk]}},
    ).json()["results"]
    assert {r["document_id"] for r in only} == {docs["parking"].pk}
    none = post(
        client,
        "/api/v1/search",
        {"query": "policy", "filters": {"content_types": ["application/pdf"]}},
    ).json()["results"]
    assert none == []
    future = post(
        client,
        "/api/v1/search",
        {"query": "policy", "filters": {"updated_after": "2999-01-01T00:00:00Z"}},
    ).json()["results"]
    assert future == []


def test_one_document_cannot_crowd_out_the_rest(pipeline, hr, settings):
    long = " ".join(f"Rule {n}: the expense policy covers item {n} of travel." for n in range(300))
    big = add(hr, "expenses.txt", long)
    small = add(hr, "travel.txt", "Travel policy: book trains through the travel desk.")
    settings.KB_SEARCH_PER_DOCUMENT = 2
    result = passages_search(query="travel expense policy", collections=[hr], top_k=10)
    from_big = [p for p in result.passages if p.document_id == big.pk]
    assert len(from_big) == 2
    assert small.pk in {p.document_id for p in result.passages}


def test_a_version_not_yet_live_gives_way_to_the_next_passage(pipeline, hr):
    # For the instant a new version is live in the store and not yet in the database, its
    # passages are found, then skipped: the search still gives as many as asked for.
    from ingest.models import Document

    parking = add(hr, "parking.txt", PARKING)
    add(hr, "holiday.txt", "Holiday policy: twenty-eight days of paid leave a year.")
    add(hr, "canteen.txt", "Canteen: lunch is served from noon to two.")
    query = "where is the staff car park"
    assert passages_search(query=query, collections=[hr], top_k=2).passages[0].document_id == (
        parking.pk
    )
    Document.objects.filter(pk=parking.pk).update(live_version=None)
    found = passages_search(query=query, collections=[hr], top_k=2).passages
    assert len(found) == 2 and parking.pk not in {p.document_id for p in found}


def test_reranker_code_path_reorders_by_cross_encoder_scores(docs, hr, settings):
    from ingest import embedder
    from retrieval import search

    # No reranker ships offline; any local BERT folder exercises the same code path.
    settings.KB_RERANKER_PATH = str(embedder.model_path())
    search._reranker.cache_clear()
    try:
        result = passages_search(query="car park opening time", collections=[hr])
        scores = search._reranker().predict(
            [("car park opening time", p.text) for p in result.passages]
        )
    finally:
        search._reranker.cache_clear()
    assert [p.score for p in result.passages] == sorted((float(s) for s in scores), reverse=True)


def test_asking_for_an_unreadable_collection_is_404_and_audited(docs, charlie):
    client = logged_in(charlie)
    forbidden = post(client, "/api/v1/search", {"query": "holiday", "collections": ["hr"]})
    missing = post(client, "/api/v1/search", {"query": "holiday", "collections": ["nope"]})
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json() == missing.json()
    assert (
        post(client, "/api/v1/ask", {"question": "holiday?", "collections": ["hr"]}).status_code
        == 404
    )
    denied = AuditEvent.objects.filter(outcome="denied", action__in=["search", "ask"])
    assert denied.count() == 3


def test_ask_gets_a_cited_answer_from_the_local_model(docs, bob, local_llm, llm_at):
    llm_at(local_llm)
    response = post(
        logged_in(bob),
        "/api/v1/ask",
        {"question": "When does the staff car park open?", "collections": ["hr"]},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["refused"] is False and body["model"] == "smollm2-135m"
    assert body["answer"].strip()
    assert body["citations"], body["answer"]
    cited = body["citations"][0]
    assert cited["document_id"] == docs["parking"].pk
    assert cited["quote"] in PARKING and cited["url"].endswith(f"/passages/{cited['chunk_id']}")
    event = AuditEvent.objects.filter(action="ask").last()
    assert event is not None and event.outcome == "ok"
    assert event.answer == body["answer"] and event.model == "smollm2-135m"
    assert event.cited_chunk_ids == [c["chunk_id"] for c in body["citations"]]
    assert event.detail["query_id"] == body["query_id"]


def test_streamed_answer_sends_tokens_then_citations_then_done(docs, bob, local_llm, llm_at):
    llm_at(local_llm)
    response = post(
        logged_in(bob),
        "/api/v1/ask",
        {"question": "When does the staff car park open?", "stream": True},
    )
    assert response["Content-Type"] == "text/event-stream"
    raw = async_to_sync(collect)(response.streaming_content).decode()
    events = [block.split("\n")[0].removeprefix("event: ") for block in raw.strip().split("\n\n")]
    assert events[0] == "token" and events[-2:] == ["citations", "done"]
    assert set(events[:-2]) == {"token"} and len(events) > 3
    done = json.loads(raw.strip().split("\n\n")[-1].split("data: ", 1)[1])
    assert AuditEvent.objects.filter(action="ask").latest("seq").answer == done["answer"]


def test_a_cut_off_stream_is_still_audited(docs, bob, local_llm, llm_at):
    llm_at(local_llm)
    answer = services.question_answer(
        principal=principal(bob), question="When does the car park open?"
    )
    events = answer.events()
    assert next(events)[0] == "token"
    events.close()  # the client went away
    event = AuditEvent.objects.filter(action="ask").last()
    assert event is not None and event.outcome == "error"
    assert event.detail["error"] == "the answer was cut off" and event.answer


def test_refusal_does_not_call_the_model(docs, hr, bob, llm_at):
    llm_at(dead_url())  # would fail if it were called
    hr.refusal_message = "Not in the HR documents."
    hr.save()
    body = post(
        logged_in(bob),
        "/api/v1/ask",
        {"question": "What is the boiling point of tungsten in kelvin?"},
    ).json()
    assert body["refused"] is True and body["answer"] == "Not in the HR documents."
    assert body["citations"] == [] and body["passages"]
    assert AuditEvent.objects.filter(action="ask").latest("seq").outcome == "refused"


def test_model_down_gives_503_while_search_still_works(docs, bob, llm_at):
    llm_at(dead_url())
    client = logged_in(bob)
    response = post(client, "/api/v1/ask", {"question": "How many days of paid holiday?"})
    assert response.status_code == 503
    assert "unavailable" in response.json()["message"]
    assert response.json()["passages"][0]["document_id"] == docs["holiday"].pk
    assert post(client, "/api/v1/search", {"query": "holiday"}).status_code == 200
    failed = AuditEvent.objects.filter(action="ask").last()
    assert (
        failed is not None
        and failed.outcome == "error"
        and "no model endpoint" in failed.detail["error"]
    )


def test_requests_fail_over_to_a_healthy_endpoint(docs, bob, local_llm, llm_at):
    from retrieval import llm

    down = dead_url()
    llm_at(down, local_llm)
    for _ in range(2):  # round-robin starts at each endpoint once
        body = post(logged_in(bob), "/api/v1/ask", {"question": "How many days of paid holiday?"})
        assert body.status_code == 200
    pool = llm.pool_for(None)
    assert {e.url: e.down_until > 0 for e in pool.endpoints} == {down: True, local_llm: False}


def test_sensitive_collection_never_uses_a_non_local_profile(docs, hr, bob, local_llm, llm_at):
    llm_at(local_llm)
    remote = ModelProfile.objects.create(
        name="vendor", base_urls=dead_url(), model="big", is_local=False
    )
    hr.model_profile = remote
    hr.sensitive = True
    hr.save()
    body = post(
        logged_in(bob), "/api/v1/ask", {"question": "How many days of paid holiday?"}
    ).json()
    assert body["model"] == "smollm2-135m"
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="local model profile"):
        hr.full_clean()


def test_collection_profile_answers_for_that_collection(docs, hr, bob, local_llm, llm_at):
    llm_at(dead_url())
    hr.model_profile = ModelProfile.objects.create(
        name="gpu", base_urls=local_llm, model="smollm2-135m"
    )
    hr.save()
    response = post(logged_in(bob), "/api/v1/ask", {"question": "How many days of paid holiday?"})
    assert response.status_code == 200


def test_too_long_question_is_refused_clearly(docs, bob, settings):
    settings.KB_MAX_QUESTION_CHARS = 50
    response = post(logged_in(bob), "/api/v1/ask", {"question": "why " * 30})
    assert response.status_code == 422 and "longer than 50" in response.json()["message"]


def test_passage_page_highlights_and_escapes(pipeline, hr, bob, charlie):
    body = "<p>Click &lt;script&gt;alert(1)&lt;/script&gt; here for the canteen menu.</p>"
    document = add(hr, "evil.html", f"<html><body>{body}</body></html>")
    chunk = document.chunks.first()
    page = logged_in(bob).get(f"/passages/{chunk.pk}")
    assert page.status_code == 200
    shown = page.content.decode()
    assert '<mark class="passage" id="passage"' in shown
    assert "<script>alert" not in shown and "&lt;script&gt;" in shown
    assert logged_in(charlie).get(f"/passages/{chunk.pk}").status_code == 404
    assert logged_in(charlie).get(f"/documents/{document.pk}/download").status_code == 404
    download = logged_in(bob).get(f"/documents/{document.pk}/download")
    assert download.status_code == 200 and b"canteen" in b"".join(download.getvalue().splitlines())


def test_collections_are_kept_apart(pipeline, hr, eng, alice):
    other = Collection.objects.get(slug="eng")
    add(other, "eng.txt", "The deploy freeze starts on Friday at noon.")
    result = passages_search(query="deploy freeze", collections=[hr])
    assert all(p.collection == "hr" for p in result.passages)


def test_concurrent_queries_share_embedding_batches_and_each_gets_its_own_vector(monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ingest import embedder

    topics = ["parking", "holiday", "salary", "badges", "canteen", "vpn", "expenses", "travel"]
    queries = [f"What is the policy on {topic}?" for topic in topics]
    expected = embedder.embed(queries)
    batches: list[int] = []
    real = embedder.embed

    def slow(texts: list[str]):
        batches.append(len(texts))
        time.sleep(0.05)  # the others arrive while this one runs
        return real(texts)

    monkeypatch.setattr(embedder, "embed", slow)
    with ThreadPoolExecutor(len(queries)) as pool:
        vectors = list(pool.map(embedder.embed_query, queries))
    for vector, wanted in zip(vectors, expected, strict=True):
        assert np.allclose(vector, wanted, atol=1e-5)
    assert sum(batches) == len(queries) and len(batches) < len(queries)

    def broken(texts: list[str]):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embedder, "embed", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        embedder.embed_query("anything")
    monkeypatch.setattr(embedder, "embed", real)
    assert np.allclose(embedder.embed_query(queries[0]), expected[0], atol=1e-5)


def test_other_collections_do_not_shape_the_scores_a_reader_sees(pipeline, hr, eng):
    # BM25 weights count only the searched collections: documents added where the reader
    # cannot look change nothing they see, not even a score.
    add(hr, "parking.txt", PARKING)
    add(hr, "holiday.txt", "Holiday policy: twenty-eight days of paid leave a year.")

    def scores(collections: list[Collection]) -> list[float]:
        result = passages_search(query="car park policy", collections=collections, mode="sparse")
        return [p.score for p in result.passages]

    before = scores([hr])
    for n in range(4):
        add(eng, f"park-{n}.txt", f"Car park {n}: the secret project's parking policy.")
    assert scores([hr]) == before
    assert scores([hr, eng])[: len(before)] != before  # searching both counts both


def test_term_counts_follow_each_live_version(pipeline, hr, eng):
    from ingest import term_stats
    from ingest.models import TermCount

    def kept(collection: Collection) -> dict[int, int]:
        rows = TermCount.objects.filter(collection=collection, passages__gt=0)
        return dict(rows.values_list("term", "passages"))

    def recounted(collection: Collection) -> dict[int, int]:
        return dict(term_stats.live_counts(collection.pk))

    add(hr, "parking.txt", PARKING)
    holiday = add(hr, "holiday.txt", "Holiday policy: twenty-eight days of paid leave.")
    add(eng, "build.txt", "Build policy: every change is reviewed.")
    add(hr, "parking.txt", PARKING + " Bicycles go in the shed by the gate.")  # a new version
    assert kept(hr)[term_stats.PASSAGES] == 2
    assert kept(hr) == recounted(hr) and kept(eng) == recounted(eng)
    document_delete(document=holiday, actor=SYSTEM)
    assert kept(hr) == recounted(hr) and kept(hr)[term_stats.PASSAGES] == 1
    assert TermCount.objects.filter(collection=eng).exists()
    eng_id = eng.pk
    eng.delete()
    assert not TermCount.objects.filter(collection_id=eng_id).exists()


def test_maintenance_keeps_every_answer_and_repairs_term_counts(pipeline, hr):
    from django.core.management import call_command

    from ingest import term_stats
    from ingest.models import Chunk, TermCount

    add(hr, "parking.txt", PARKING)
    gone = add(hr, "old.txt", "Old parking rules: the car park closed at noon.")
    add(hr, "holiday.txt", "Holiday policy: twenty-eight days of paid leave a year.")
    document_delete(document=gone, actor=SYSTEM)

    def found() -> list[tuple[int, float]]:
        result = passages_search(query="when does the car park open", collections=[hr])
        return [(p.chunk_id, round(p.score, 4)) for p in result.passages]

    before = found()
    counts = dict(TermCount.objects.filter(passages__gt=0).values_list("term", "passages"))
    TermCount.objects.filter(term=term_stats.PASSAGES).update(passages=999)  # gone wrong
    out = io.StringIO()
    call_command("vectors_optimize", stdout=out)
    # Every live passage is counted; the deleted document's are not among them.
    assert f"optimized points={Chunk.objects.count()} " in out.getvalue()
    assert dict(TermCount.objects.values_list("term", "passages")) == counts
    assert found() == before


def test_chunk_api_gives_the_passage_its_neighbours_and_document(docs, bob, charlie):
    from ingest.models import Chunk

    chunk = Chunk.objects.filter(document=docs["holiday"]).order_by("index").first()
    assert chunk is not None
    body = logged_in(bob).get(f"/api/v1/chunks/{chunk.pk}").json()
    assert body["passage"]["text"] == chunk.text and body["document"]["id"] == chunk.document_id
    assert chunk.pk in [n["id"] for n in body["neighbours"]]
    assert logged_in(charlie).get(f"/api/v1/chunks/{chunk.pk}").status_code == 404


def test_conversations_api_lists_and_shows_only_your_own(hr, bob, charlie):
    from retrieval.models import Conversation, Exchange

    mine = Conversation.objects.create(user=bob, title="Holidays")
    Exchange.objects.create(conversation=mine, query_id="q1", question="Days off?", answer="25.")
    listed = logged_in(bob).get("/api/v1/conversations").json()
    assert [c["title"] for c in listed["items"]] == ["Holidays"]
    shown = logged_in(bob).get(f"/api/v1/conversations/{mine.pk}").json()
    assert [e["answer"] for e in shown["exchanges"]] == ["25."]
    assert logged_in(charlie).get(f"/api/v1/conversations/{mine.pk}").status_code == 404
    assert logged_in(charlie).get("/api/v1/conversations").json()["items"] == []
