"""A collection's evaluation on its own golden set: files read, runs scored and kept,
each question audited as an evaluation, the command, and the page for owners."""

import contextlib
import dataclasses
import io
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from kb.models import AuditEvent, ModelProfile
from retrieval import evaluation
from retrieval.golden import GoldenFileError, GoldenItem, golden_parse
from retrieval.models import (
    Conversation,
    EvaluationRun,
    Exchange,
    Feedback,
    GoldenQuestion,
    RunStatus,
)
from retrieval.scoring import agreement
from tests.conftest import (
    PARKING,
    dead_url,
    embedded_env,
    kb_serve,
    logged_in,
    manage,
    principal,
)

HOLIDAY_Q = GoldenItem(
    "How many days of paid holiday does every employee receive?",
    "Twenty-eight days of paid holiday per year.",
    ("holiday.txt",),
)
ROOT = Path(__file__).resolve().parent.parent
PARKING_Q = GoldenItem(
    "When does the staff car park open?", "The car park opens at 6 am.", ("parking.txt",)
)


def asked_of_default(collection, user, *golden: GoldenItem) -> EvaluationRun:
    """A run of the collection's own profile, asked here (not queued); reread."""
    (run,) = evaluation.evaluation_start(
        collection=collection, user=user, profiles=[], actor=principal(user), golden=list(golden)
    )
    evaluation.evaluation_run(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_golden_sets_are_read_from_json_lines_and_csv():
    jsonl = "\n".join(
        json.dumps(line)
        for line in [
            {
                "question": HOLIDAY_Q.question,
                "answer": HOLIDAY_Q.answer,
                "documents": ["holiday.txt"],
            },
            {"question": "Who approves leave?", "answer": "Your manager."},
        ]
    )
    csv = (
        "question,answer,documents\n"
        f'"{HOLIDAY_Q.question}","{HOLIDAY_Q.answer}",holiday.txt\n'
        '"Who approves leave?","Your manager.",\n'
    )
    expected = [HOLIDAY_Q, GoldenItem("Who approves leave?", "Your manager.", ())]
    assert golden_parse("set.jsonl", jsonl.encode()) == expected
    assert golden_parse("set.csv", csv.encode()) == expected
    two = golden_parse("s.csv", b"question,answer,documents\nq?,a,one.pdf; two.docx\n")
    assert two[0].documents == ("one.pdf", "two.docx")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("set.csv", b"", "set.csv is empty"),
        ("set.csv", b"question,documents\nq?,a.pdf\n", "no 'answer' column"),
        ("set.jsonl", b'{"question": "q?", "answer": "a"}\n{"question": \n', "line 2: not JSON"),
        ("set.jsonl", b'{"question": "q?"}\n', "line 1: no 'answer'"),
        ("set.csv", b"question,answer\nq?,\n", "line 2: the answer is empty"),
        ("set.csv", b"\xff\xfequestion", "not UTF-8"),
    ],
)
def test_a_bad_golden_file_says_what_is_wrong_in_one_line(name, data, message):
    with pytest.raises(GoldenFileError) as error:
        golden_parse(name, data)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_agreement_counts_the_expected_content_words_in_the_answer():
    assert agreement("Every employee gets 28 days [1].", "28 days") == 1.0
    assert agreement("The car park opens at 6 am.", "It opens at 7 am") == pytest.approx(2 / 3)
    assert agreement("I cannot say.", "28 days") == 0.0


def test_a_run_scores_the_answers_and_audits_each_question_as_an_evaluation(
    docs, alice, local_llm, llm_at
):
    llm_at(local_llm)
    hr = docs["holiday"].collection
    run = asked_of_default(hr, alice, HOLIDAY_Q, PARKING_Q)
    assert run.status == RunStatus.DONE and run.profile == "default"
    assert run.model == "smollm2-135m" and len(run.rows) == 2
    assert run.metrics["hit_rate"] == 1.0 and run.metrics["errors"] == 0
    assert run.metrics["completion_tokens"] > 0 and run.metrics["ttft_ms"] > 0
    # Each question is in the trail as an evaluation's, never as someone's question.
    asked = AuditEvent.objects.filter(action="evaluation.ask")
    assert asked.count() == 2 and {e.detail["evaluation"] for e in asked} == {run.pk}
    assert not AuditEvent.objects.filter(action="ask").exists()
    assert AuditEvent.objects.get(action="evaluation.start").detail["runs"] == {"default": run.pk}


def test_the_command_prints_the_numbers_and_keeps_the_run(
    docs, alice, local_llm, llm_at, settings, tmp_path
):
    llm_at(local_llm)
    settings.KB_LOCAL_LLM = False  # the model is the test's server, not one to start here
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps(
            {
                "question": PARKING_Q.question,
                "answer": PARKING_Q.answer,
                "documents": ["parking.txt", "missing.pdf"],
            }
        )
    )
    out, err = io.StringIO(), io.StringIO()
    call_command("collection_eval", "hr", "--golden", str(golden), stdout=out, stderr=err)
    run = EvaluationRun.objects.get()
    assert run.status == RunStatus.DONE and run.user == alice  # hr's only owner
    assert "missing.pdf" in err.getvalue() and "warning" in err.getvalue()
    lines = out.getvalue().splitlines()
    assert any(line.startswith("hit rate") and line.endswith("1.00") for line in lines)
    assert lines[-1] == f"evaluation hr questions=1 runs={run.pk}"
    with pytest.raises(CommandError, match="no 'answer'"):
        golden.write_text('{"question": "q?"}\n')
        call_command("collection_eval", "hr", "--golden", str(golden))
    with pytest.raises(CommandError, match="no model profile called 'nope'"):
        golden.write_text(json.dumps({"question": "q?", "answer": "a"}))
        call_command("collection_eval", "hr", "--golden", str(golden), "--profile", "nope")
    assert EvaluationRun.objects.count() == 1


def served_hr(tmp_path: Path, **settings: str) -> tuple[Path, dict[str, str], Path]:
    """An embedded kb of its own with hr owned by alice, and a golden file of PARKING_Q:
    (data folder, environment, golden file)."""
    data = tmp_path / "kb"
    data.mkdir()
    env = embedded_env(data, **settings)
    for args, stdin in (
        (["migrate", "--verbosity", "0"], ""),
        (["user_create", "alice", "--password-stdin"], "alice-pass-4821"),
        (["collection_create", "hr"], ""),
        (["member_add", "hr", "--user", "alice", "--role", "owner"], ""),
    ):
        manage(env, *args, stdin=stdin).check_returncode()
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps(dataclasses.asdict(PARKING_Q)))
    return data, env, golden


def ingested(env: dict[str, str], tmp_path: Path) -> None:
    """parking.txt into hr, through the running server's worker."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "parking.txt").write_text(PARKING)
    manage(env, "ingest_folder", "hr", str(folder), "--wait", timeout=300).check_returncode()


def test_while_kb_serves_the_command_hands_the_runs_to_its_worker_and_waits(tmp_path, local_llm):
    # The embedded default: the server owns the data, so the command cannot ask here;
    # the server's worker asks the bundled model, and the command prints what it found.
    data, env, golden = served_hr(
        tmp_path, LLM_BASE_URL=local_llm, LLM_MODEL="smollm2-135m", KB_LLM_MAX_TOKENS="32"
    )
    server, _ = kb_serve(env, data)
    try:
        ingested(env, tmp_path)
        done = manage(env, "collection_eval", "hr", "--golden", str(golden), timeout=300)
    finally:
        server.terminate()
        server.wait(30)
    assert done.returncode == 0, done.stderr
    assert "the running kb server does the work" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["model", "smollm2-135m"]
    assert any(line.startswith("hit rate") and line.endswith("1.00") for line in lines)
    assert lines[-1] == "evaluation hr questions=1 runs=1"


def hold(listener: socket.socket, held: list[socket.socket]) -> None:
    """Accepts connections and never answers them, until `listener` is closed."""
    with contextlib.suppress(OSError):
        while True:
            held.append(listener.accept()[0])


def test_a_command_waiting_on_a_server_that_dies_says_so_and_stops(tmp_path):
    # The model never answers, so the run is under way when the server is killed.
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(None)  # it waits as long as the test does, whatever the default
    held: list[socket.socket] = []
    threading.Thread(target=hold, args=(silent, held), daemon=True).start()
    data, env, golden = served_hr(
        tmp_path, LLM_BASE_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", LLM_MODEL="m"
    )
    server, _ = kb_serve(env, data)
    waiting = None
    try:
        ingested(env, tmp_path)
        waiting = subprocess.Popen(
            [sys.executable, "manage.py", "collection_eval", "hr", "--golden", str(golden)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not held and time.monotonic() < deadline:  # the worker is asking the model
            time.sleep(0.2)
        assert held
        server.kill()
        server.wait(30)
        _, err = waiting.communicate(timeout=60)  # it waited forever before
    finally:
        for process in (server, waiting):
            if process is not None and process.poll() is None:
                process.kill()
        silent.close()
    assert waiting.returncode == 1
    assert "the kb server stopped before the evaluation finished" in err
    with sqlite3.connect(data / "kb.sqlite3") as database:
        runs = database.execute("SELECT status, error FROM retrieval_evaluationrun").fetchall()
    assert runs == [("failed", "interrupted: kb stopped before the run finished")]


def upload(client: Client, text: str, name: str = "golden.csv"):
    stream = io.BytesIO(text.encode())
    stream.name = name
    return client.post("/collections/hr/evaluation/golden", {"file": stream})


def test_the_page_is_for_owners_who_upload_run_and_compare(
    pipeline, docs, alice, bob, charlie, llm_at
):
    llm_at(dead_url())  # the answers fail fast; the run is what is shown
    ModelProfile.objects.create(name="other", base_urls=dead_url(), model="other-model")
    assert logged_in(charlie).get("/collections/hr/evaluation").status_code == 404
    assert logged_in(bob).get("/collections/hr/evaluation").status_code == 403
    assert upload(logged_in(bob), "question,answer\nq?,a\n").status_code == 403
    owner = logged_in(alice)
    bad = owner.get(upload(owner, "question,documents\nq?,a.pdf\n")["Location"])
    assert "no &#x27;answer&#x27; column" in bad.content.decode()
    upload(owner, f'question,answer,documents\n"{PARKING_Q.question}",6 am,parking.txt\n')
    assert GoldenQuestion.objects.get().documents == ["parking.txt"]
    # Two profiles side by side, asked by the worker (at once here, as it commits).
    owner.post("/collections/hr/evaluation/start", {"profile": "default", "compare": "other"})
    runs = list(EvaluationRun.objects.order_by("pk"))
    assert [r.profile for r in runs] == ["default", "other"] and runs[0].batch == runs[1].batch
    assert all(r.status == RunStatus.DONE and len(r.rows) == 1 for r in runs)
    page = owner.get("/collections/hr/evaluation").content.decode()
    assert '<th scope="col">default' in page and '<th scope="col">other' in page
    assert "Hit rate" in page and PARKING_Q.question in page
    assert AuditEvent.objects.filter(action="evaluation.ask").count() == 2


def test_rated_answers_become_golden_questions_and_owners_write_what_unhelpful_ones_expect(
    docs, alice, bob
):
    holiday = docs["holiday"]
    conversation = Conversation.objects.create(user=bob, title="leave")
    rated = [
        (HOLIDAY_Q.question, "up", "hr", "Twenty-eight days [1]."),
        (PARKING_Q.question, "down", "hr", "The car park never opens [1]."),
        ("Who approves travel?", "down", "finance", "Nobody [1]."),  # another collection's
    ]
    for n, (question, rating, searched, answer) in enumerate(rated):
        exchange = Exchange.objects.create(
            conversation=conversation,
            query_id=f"q{n}",
            question=question,
            answer=answer,
            collections=searched,
            citations=[{"n": 1, "document_id": holiday.pk, "collection_id": holiday.collection_id}],
        )
        Feedback.objects.create(exchange=exchange, rating=rating)
    owner = logged_in(alice)
    added = owner.get(owner.post("/collections/hr/evaluation/feedback")["Location"])
    assert "1 helpful answers added" in added.content.decode()
    helpful, unhelpful = GoldenQuestion.objects.order_by("pk")
    assert helpful.question == HOLIDAY_Q.question and helpful.answer == "Twenty-eight days [1]."
    assert helpful.documents == ["holiday.txt"] and helpful.source == "feedback"
    # kb's wrong answer is not the one expected: the owner sees it and writes the right one.
    assert unhelpful.question == PARKING_Q.question and unhelpful.answer == ""
    assert "The car park never opens" in added.content.decode()
    (run,) = evaluation.evaluation_start(
        collection=holiday.collection, user=alice, profiles=[], actor=principal(alice)
    )
    assert [q["question"] for q in run.golden] == [HOLIDAY_Q.question]  # not asked yet
    path = f"/collections/hr/evaluation/golden/{unhelpful.pk}"
    assert logged_in(bob).post(path, {"answer": "6 am"}).status_code == 403
    owner.post(path, {"answer": "", "documents": "parking.txt"})
    unhelpful.refresh_from_db()
    assert unhelpful.answer == ""
    owner.post(path, {"answer": PARKING_Q.answer, "documents": "parking.txt; "})
    unhelpful.refresh_from_db()
    assert (unhelpful.answer, unhelpful.documents) == (PARKING_Q.answer, ["parking.txt"])
    assert AuditEvent.objects.filter(action="evaluation.golden_set", detail__source="edit").exists()
    (run,) = evaluation.evaluation_start(
        collection=holiday.collection, user=alice, profiles=[], actor=principal(alice)
    )
    assert len(run.golden) == 2
    assert logged_in(bob).post("/collections/hr/evaluation/feedback").status_code == 403


def test_a_run_whose_worker_stopped_is_marked_interrupted_and_the_page_stops_reloading(
    pipeline, hr, alice, settings
):
    # Production's workers are other processes: one killed mid-run leaves its run
    # "running". Beat's reconciler gives up a run that has answered nothing for
    # KB_EVALUATION_STALE_SECONDS (answers so far kept), and queues again one whose
    # message was lost.
    from datetime import timedelta

    from django.utils import timezone

    from retrieval.tasks import evaluations_reconcile_task

    def started(status: str, *, idle: int) -> EvaluationRun:
        (run,) = evaluation.evaluation_start(
            collection=hr, user=alice, profiles=[], actor=principal(alice), golden=[PARKING_Q]
        )
        EvaluationRun.objects.filter(pk=run.pk).update(
            status=status, updated_at=timezone.now() - timedelta(seconds=idle)
        )
        return run

    stale = settings.KB_EVALUATION_STALE_SECONDS
    alive = started(RunStatus.RUNNING, idle=stale - 60)
    lost = started(RunStatus.QUEUED, idle=stale + 60)
    dead = started(RunStatus.RUNNING, idle=stale + 60)  # the newest: the page shows it first
    EvaluationRun.objects.filter(pk=dead.pk).update(rows=[{"question": "asked before"}])
    page = logged_in(alice).get("/collections/hr/evaluation").content.decode()
    assert "location.reload" in page
    evaluations_reconcile_task()
    dead.refresh_from_db()
    assert dead.status == RunStatus.FAILED and dead.error == "interrupted: its worker stopped"
    assert dead.finished_at and len(dead.rows) == 1
    assert EvaluationRun.objects.get(pk=alive.pk).status == RunStatus.RUNNING
    assert EvaluationRun.objects.get(pk=lost.pk).status == RunStatus.DONE  # asked (eagerly)
    page = logged_in(alice).get("/collections/hr/evaluation").content.decode()
    assert "interrupted: its worker stopped" in page and "location.reload" not in page


def test_a_worker_whose_run_was_given_up_asks_no_further(hr, alice, monkeypatch):
    # A worker taken for dead that was only slow: its run stays interrupted, and the
    # model is not asked the questions after.
    from datetime import timedelta

    from retrieval import services

    asked = []

    def answer_while_given_up(**kwargs):
        asked.append(kwargs["question"])
        evaluation.evaluations_reconcile(stale_after=timedelta(0))
        raise services.QuestionTooLong("not asked: the test stops here")

    monkeypatch.setattr(services, "question_answer", answer_while_given_up)
    run = asked_of_default(hr, alice, HOLIDAY_Q, PARKING_Q)
    assert asked == [HOLIDAY_Q.question]
    assert run.status == RunStatus.FAILED and run.error == "interrupted: its worker stopped"
