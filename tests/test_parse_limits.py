"""A file cannot exhaust the machine: parsing runs in a child process under limits of
memory and time, large texts stream, and a file that keeps failing its parse is retried
a bounded number of times and then fails with the reason."""

import io
import os
import signal

import psutil
import pytest

from ingest import isolated
from ingest.chunking import passages
from ingest.extract import Limits
from ingest.models import Chunk, Stage
from ingest.parsing import Element, parse
from ingest.windows import file_windows, windows
from tests.test_ingest import upload, version_of

SENTENCE = "The quarterly report lists revenue, cost and risk for each region of the market. "


CAFE = "The café on the ground floor serves lunch from noon until two, and its menu changes."


def long_text(megabytes: float) -> bytes:
    paragraph = SENTENCE * 6 + "\n\n"
    return (paragraph * int(megabytes * 2**20 / len(paragraph))).encode()


@pytest.mark.parametrize("size", [7, 50, 1000])
def test_windows_cut_at_breaks_within_the_size_and_lose_nothing(size):
    text = ("word " * 300 + "\n" + "x" * 2500 + "\n\n" + "line\n" * 200) * 3
    pieces = list(windows(text, size))
    assert "".join(pieces) == text
    assert all(len(piece) <= size for piece in pieces)
    assert list(file_windows(io.StringIO(text), size)) == pieces


def test_a_text_without_headings_is_chunked_as_it_is_read():
    # One heading-free text: the chunker once gathered all of it into one run before
    # making its first passage, so a 150 MB file sat whole in memory several times over.
    pulled = 0

    def elements():
        nonlocal pulled
        for _ in range(2000):
            pulled += 1
            yield Element(text=SENTENCE * 20, page=None, section="", type="NarrativeText")

    first = next(passages(elements(), title="Report"))
    assert first.text.startswith("The quarterly report") and pulled < 50


def test_a_long_line_without_a_sentence_end_is_read_in_bounded_memory(
    pipeline, hr, settings, tmp_path
):
    # unstructured tags a whole element to find a verb: 3 KB of memory per character,
    # 1.2 GB for this one line.
    settings.KB_PARSE_MEMORY_MB = idle_parser_mb(tmp_path) + 400
    line = (SENTENCE * 5_000).replace(". ", ", ").encode()  # 400 KB, one line
    (result,) = upload(hr, "one-line.txt", line)
    version = version_of(result)
    assert version.stage == Stage.READY, version.error
    chunks = Chunk.objects.filter(version=version)
    assert chunks.count() > 200 and max(c.token_count for c in chunks) <= 256


def test_a_text_past_the_passage_limit_fails_with_the_limit_named(pipeline, hr, settings):
    settings.KB_MAX_PASSAGES = 50
    (long,) = upload(hr, "long.txt", long_text(2))
    (short,) = upload(hr, "short.txt", b"One short note about lunch.\n")
    failed = version_of(long)
    assert failed.stage == Stage.FAILED and "(KB_MAX_PASSAGES)" in failed.error
    assert not Chunk.objects.filter(version=failed).exists()
    assert version_of(short).stage == Stage.READY


def test_a_large_text_streams_with_its_encoding_and_headings(tmp_path):
    # Past the first window, which is plain ASCII: a later byte decides the encoding.
    text = "Cafeteria\n\n" + long_text(1.5).decode() + CAFE + "\n"
    path = tmp_path / "menu.txt"
    path.write_bytes(text.encode("cp1252"))
    parsed = parse(path, ".txt")
    assert not isinstance(parsed.elements, list)  # read as it goes
    *_, last = parsed.elements
    assert last.text == CAFE
    assert last.section == "Cafeteria"


def test_a_file_past_the_memory_limit_fails_after_its_attempts(pipeline, hr, settings, tmp_path):
    # A CSV is read whole into a table: 20 MB of rows take the parser past 300 MB more
    # than it holds when idle.
    settings.KB_PARSE_ATTEMPTS = 2
    settings.KB_PARSE_MEMORY_MB = idle_parser_mb(tmp_path) + 300
    rows = "".join(f"{n},region {n % 50},{n * 7},ok\n" for n in range(800_000))
    (big,) = upload(hr, "big.csv", ("id,region,amount,state\n" + rows).encode())
    (small,) = upload(hr, "small.txt", b"The canteen opens at eight.\n")
    failed = version_of(big)
    assert failed.stage == Stage.FAILED, failed.error
    assert "(KB_PARSE_MEMORY_MB)" in failed.error and failed.attempts == 2
    assert version_of(small).stage == Stage.READY


def test_a_file_past_the_time_limit_fails_after_its_attempts(pipeline, hr, settings):
    settings.KB_PARSE_ATTEMPTS = 2
    settings.KB_PARSE_SECONDS = 1
    (slow,) = upload(hr, "slow.txt", long_text(4))
    (quick,) = upload(hr, "quick.txt", b"The canteen opens at eight.\n")
    failed = version_of(slow)
    assert failed.stage == Stage.FAILED, failed.error
    assert "(KB_PARSE_SECONDS)" in failed.error and failed.attempts == 2
    assert version_of(quick).stage == Stage.READY


def test_a_parser_killed_mid_file_is_reported_and_the_next_file_is_read(tmp_path, settings):
    limits = Limits(max_elements=100_000, max_passages=100_000)
    big, path = tmp_path / "report.txt", tmp_path / "note.txt"
    big.write_bytes(long_text(2))  # streamed: parsed at once, read while it is chunked
    path.write_text("The canteen opens at eight.\n")

    def kill(pages):
        (child,) = parsers()
        child.send_signal(signal.SIGKILL)  # not waited for here: its parent reaps it

    with pytest.raises(isolated.Stopped, match=r"parser stopped on this file \(signal 9\)"):
        isolated.extract_isolated(big, ".txt", title="Report", limits=limits, parsed=kill)
    extracted = isolated.extract_isolated(
        path, ".txt", title="Note", limits=limits, parsed=lambda pages: None
    )
    assert [p.text for p in extracted.passages] == ["The canteen opens at eight."]


def parsers() -> list[psutil.Process]:
    """The parse children alive. One that ended with a worker thread of an earlier test
    can linger as a zombie until the next is started: not counted."""
    alive = []
    for child in psutil.Process(os.getpid()).children():
        try:
            if "ingest.isolated" in child.cmdline():
                alive.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return alive


def idle_parser_mb(folder) -> int:
    """The parse child's memory once it has loaded its models, started if need be."""
    if not parsers():
        note = folder / "idle.txt"
        note.write_text("Idle.\n")
        isolated.extract_isolated(
            note, ".txt", title="", limits=Limits(10, 10), parsed=lambda pages: None
        )
    (child,) = parsers()
    return int(child.memory_info().rss) // 2**20


def test_a_file_that_kills_the_parser_in_a_batch_fails_alone_and_the_rest_are_read(
    pipeline, hr, settings, monkeypatch
):
    # Small files are parsed many to a message: the one that kills the child is tried
    # again alone, then fails; those before it are kept, those after it go to a new child.
    # So it costs a batch its child once; later, only itself.
    from ingest import pipeline as stages
    from ingest import storage

    settings.KB_PARSE_ATTEMPTS = 2
    with monkeypatch.context() as held:
        held.setattr(stages, "enqueue_parse", lambda version_id: None)  # all waiting
        # The third is small enough for a batch, long enough to be killed mid-chunking.
        results = [
            upload(hr, f"note-{n}.txt", f"Note {n}: the canteen opens at {n}.\n".encode())
            if n != 2
            else upload(hr, "report.txt", long_text(0.24))
            for n in range(5)
        ]
    killer = version_of(results[2][0])
    assert killer.size <= stages.PARSE_BATCH_BYTES
    batches: list[int] = []
    real = isolated.extract_batch_isolated

    def killing(jobs, *, limits, parsed):
        batches.append(len(jobs))

        def hook(index, pages):
            if jobs[index].path == str(storage.path_for(killer.sha256)):
                (child,) = parsers()
                child.send_signal(signal.SIGKILL)
            parsed(index, pages)

        return real(jobs, limits=limits, parsed=hook)

    monkeypatch.setattr(stages, "extract_batch_isolated", killing)
    with monkeypatch.context() as held:
        held.setattr(stages, "enqueue_parse", lambda version_id: None)  # the retry waits
        stages.version_parse(version_id=version_of(results[0][0]).pk)
        assert batches == [5, 2]  # the batch, then the files after the killer in a new child
        assert version_of(results[2][0]).stage == Stage.QUEUED
        later = [upload(hr, f"later-{n}.txt", f"Later note {n}.\n".encode()) for n in range(2)]
    stages.version_parse(version_id=version_of(later[0][0]).pk)
    assert batches == [5, 2, 2]  # the killer, tried before, is left out of new batches
    stages.version_parse(version_id=killer.pk)  # its own message
    assert batches == [5, 2, 2, 1]
    failed = version_of(results[2][0])
    assert failed.stage == Stage.FAILED and failed.attempts == 2
    assert "parser stopped on this file (signal 9)" in failed.error
    for (result,) in [*results[:2], *results[3:], *later]:
        version = version_of(result)
        assert version.stage == Stage.READY, version.error
        assert version.attempts == 1
    assert not Chunk.objects.filter(version=failed).exists()
