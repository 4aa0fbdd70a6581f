import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import CommandError, CommandParser

from kb.management.base import KbCommand, get_collection, get_user
from kb.models import Collection, Membership, Role
from retrieval import evaluation, golden
from retrieval.local_llm import local_llms_start
from retrieval.models import EvaluationRun, RunStatus
from retrieval.services import DEFAULT_PROFILE
from server.runtime import background_work, owner_alive


def _asker(collection: Collection, name: str | None) -> User:
    if name:
        return get_user(name)
    owners = Membership.objects.filter(
        collection=collection, role=Role.OWNER, user__isnull=False, user__is_active=True
    )
    if owners.count() != 1:
        raise CommandError(
            f"{collection.slug} has {owners.count()} owners: say whose questions these are "
            "with --user NAME"
        )
    return owners.get().user  # type: ignore[return-value]


class Command(KbCommand):
    help = (
        "Ask a golden set (JSON Lines or CSV: question, answer, optionally documents) of "
        "a collection's model profiles, print the numbers side by side and keep the runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("collection")
        parser.add_argument("--golden", required=True, metavar="FILE")
        parser.add_argument(
            "--profile",
            action="append",
            default=[],
            metavar="NAME",
            help=f"a model profile ({DEFAULT_PROFILE}: the settings' model); repeat to "
            "compare; none: the collection's own",
        )
        parser.add_argument(
            "--user",
            metavar="NAME",
            help="who asks (access and budget); default: the collection's only owner",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        collection = get_collection(options["collection"])
        path = Path(options["golden"]).expanduser()
        try:
            items = golden.golden_parse(path.name, path.read_bytes())
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        except golden.GoldenFileError as error:
            raise CommandError(str(error)) from None
        if unknown := golden.unknown_documents(collection, items):
            self.stderr.write(
                f"warning: {collection.slug} holds no document called "
                f"{', '.join(unknown)}: counted as not found"
            )
        user = _asker(collection, options["user"])
        with background_work() as work:
            here = work.owner or not settings.KB_INPROCESS_WORKER
            try:
                runs = evaluation.evaluation_start(
                    collection=collection,
                    user=user,
                    profiles=options["profile"],
                    actor=self.actor,
                    golden=items,
                    background=not here,
                )
            except evaluation.EvaluationRefused as error:
                raise CommandError(str(error)) from None
            self.stderr.write(
                f"asking {len(items)} questions of {', '.join(r.profile for r in runs)} "
                f"({work.describe()})"
            )
            if here:
                self._ask_here(runs)
            else:
                self._wait(runs)
        runs = [EvaluationRun.objects.get(pk=r.pk) for r in runs]
        self._table(runs)

    def _ask_here(self, runs: list[EvaluationRun]) -> None:
        # No server runs: the bundled model is started here while a run needs it.
        local = []
        if settings.KB_LOCAL_LLM and any(r.profile == DEFAULT_PROFILE for r in runs):
            local = local_llms_start()
        try:
            for run in runs:
                evaluation.evaluation_run(run_id=run.pk)
        finally:
            for server in local:
                server.stop()

    def _wait(self, runs: list[EvaluationRun]) -> None:
        pending = {r.pk for r in runs}
        last_report = 0.0
        while pending:
            finished = EvaluationRun.objects.filter(
                pk__in=pending, status__in=(RunStatus.DONE, RunStatus.FAILED)
            )
            pending -= set(finished.values_list("pk", flat=True))
            if pending and settings.KB_INPROCESS_WORKER and not owner_alive():
                # The server stopped: nothing will finish these (the next one would mark
                # them interrupted on start); say so now rather than wait forever.
                evaluation.evaluations_interrupt()
                raise CommandError(
                    "the kb server stopped before the evaluation finished (the answers "
                    "so far are kept on the collection's evaluation page): start it and "
                    "run collection_eval again"
                )
            if pending and time.monotonic() - last_report > 30:
                asked = sum(len(r.rows) for r in EvaluationRun.objects.filter(pk__in=pending))
                self.stderr.write(f"the server's worker is asking: {asked} answered so far")
                last_report = time.monotonic()
            if pending:
                time.sleep(1)

    def _table(self, runs: list[EvaluationRun]) -> None:
        width = max(12, *(len(r.profile) + 2 for r in runs))
        self.stdout.write(f"{'':<20}" + "".join(f"{r.profile:>{width}}" for r in runs))
        self.stdout.write(f"{'model':<20}" + "".join(f"{r.model:>{width}}" for r in runs))
        shown = [dict(evaluation.metrics_shown(r)) for r in runs]
        for _, label, _ in evaluation.METRICS:
            self.stdout.write(f"{label:<20}" + "".join(f"{s[label]:>{width}}" for s in shown))
        for run in runs:
            if run.error:
                self.stdout.write(f"{run.profile}: {run.error}")
        self.stdout.write(
            f"evaluation {runs[0].collection.slug} questions={len(runs[0].golden)} "
            f"runs={','.join(str(r.pk) for r in runs)}"
        )
