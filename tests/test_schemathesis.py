"""schemathesis against the OpenAPI spec, in process: generated requests to every
operation as a reader's token, a bounded number each. No 500, and every answer matches
what the spec says of it. (Driven through hypothesis directly: schemathesis's pytest
plugin does not run on this pytest.)"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from kb.audit import SYSTEM
from kb.models import TokenScope
from kb.services import token_create
from tests.conftest import dead_url

EXAMPLES = 15


def test_every_operation_answers_as_its_spec_says(docs, hr, bob, llm_at):
    from django.core.wsgi import get_wsgi_application

    llm_at(dead_url())  # /ask answers its documented 503; no model is needed
    _, secret = token_create(user=bob, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
    headers = {"Authorization": f"Bearer {secret}"}
    checked = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the spec itself is valid
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_specified(case) -> None:
            # An opaque cursor, or an id nobody holds, may well be refused: "valid by the
            # schema" is not "accepted" there.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        answers_as_specified()
        checked.append(operation.label)
    assert len(checked) >= 20, checked
