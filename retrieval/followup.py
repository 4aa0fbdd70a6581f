"""A follow-up question made standalone before it is searched.

"And for contractors?" searched alone finds nothing of the topic the conversation is
on; only the prompt would see the history. A question that reads as a follow-up is
rewritten first: by the model when one answers within KB_REWRITE_SECONDS and its
output passes the checks below, else by carrying the earlier questions' content terms
(deterministic, and what a sensitive collection without a local model gets).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from retrieval import llm

# Words that carry no topic, and words that point back at one named earlier.
_STOP = """a about above after again all also am an and any are as at be because been before
    being between both but by can could did do does doing done during each else for from
    further had has have having how i if in into is just may me might more most must my
    no nor not now of off on once only or other our out over own same should so some
    such than that the then there these they this those through to too under until up
    us very was we were what when where which while who whom why will with would you
    your yours please tell know get got give need needs let lets like want"""
_BACK = """it its it's itself they them their theirs this that these those he she him her
    mine hers ours there same one ones such else too also then"""
STOP_WORDS = frozenset(_STOP.split())
REFERRING = frozenset(_BACK.split())
CONNECTIVES = ("and", "but", "or", "so", "also", "what about", "how about", "then")
FEW_TERMS = 2  # a question of at most this many content terms leans on what came before
TURNS = 3  # earlier questions looked at, newest first
MAX_TOKENS = 60
MAX_CHARS = 300

_WORD = re.compile(r"\w[\w'\u2019-]*")

INSTRUCTIONS = (
    "Rewrite the follow-up question so that it can be understood without the "
    "conversation: name the topic it refers to. Reply with the rewritten question only."
)
EXAMPLE = [
    {
        "role": "user",
        "content": "Earlier questions:\n- What is the notice period for employees?\n"
        "Follow-up: and for contractors?",
    },
    {"role": "assistant", "content": "What is the notice period for contractors?"},
]


@dataclass(frozen=True)
class Rewrite:
    query: str  # what to search
    how: str = ""  # "model" or "terms" when rewritten, else ""


def _words(text: str) -> list[str]:
    return [w.lower().strip("'\u2019-") for w in _WORD.findall(text)]


def content_terms(text: str) -> list[str]:
    """The words that carry a topic, in order, once each."""
    words = [w for w in _words(text) if w not in STOP_WORDS and w not in REFERRING]
    return list(dict.fromkeys(w for w in words if len(w) > 1 or w.isdigit()))


def is_followup(question: str) -> bool:
    """Reads as leaning on the conversation: it starts like a continuation, points back
    with a word like "it" or "those", or names too little to search for alone."""
    text = " ".join(_words(question))
    starts = any(text == c or text.startswith(c + " ") for c in CONNECTIVES)
    points_back = bool(set(text.split()) & REFERRING)
    return starts or points_back or len(content_terms(question)) <= FEW_TERMS


def earlier_questions(history: Sequence[dict[str, str]]) -> list[str]:
    """The user's earlier questions that lead up to this one, oldest first: back to the
    newest that stood alone, at most TURNS."""
    asked = [t["content"] for t in history if t.get("role") == "user" and t.get("content")]
    chain: list[str] = []
    for question in reversed(asked[-TURNS:]):
        chain.insert(0, question[: settings.KB_MAX_QUESTION_CHARS])
        if not is_followup(question):
            break
    return chain


def with_terms(question: str, earlier: Sequence[str]) -> str:
    """The follow-up after the earlier questions' content terms it does not repeat."""
    own = set(content_terms(question))
    carried = [t for t in content_terms(" ".join(earlier)) if t not in own]
    return " ".join([*dict.fromkeys(carried), question])


def _messages(question: str, earlier: Sequence[str]) -> list[dict[str, str]]:
    listed = "\n".join(f"- {q}" for q in earlier)
    return [
        {"role": "system", "content": INSTRUCTIONS},
        *EXAMPLE,
        {"role": "user", "content": f"Earlier questions:\n{listed}\nFollow-up: {question}"},
    ]


def _checked(output: str, question: str, earlier: Sequence[str]) -> str:
    """The model's rewrite, or "" when it is unusable: empty, too long, dropping a term
    of the follow-up, or naming nothing of the earlier questions (small models echo the
    earlier question, or the prompt's example)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = re.sub(r"^(rewritten|standalone)?\s*(question|query)\s*:\s*", "", lines[0], flags=re.I)
    text = text.strip().strip("\"'`").strip()
    terms = set(content_terms(text))
    if not text or len(text) > MAX_CHARS or not set(content_terms(question)) <= terms:
        return ""
    if not terms & set(content_terms(" ".join(earlier))):
        return ""
    return text


def standalone_query(
    *, question: str, history: Sequence[dict[str, str]], pool: llm.LlmPool | None
) -> Rewrite:
    """What to search for `question` asked after `history` (OpenAI-style turns). `pool`
    is the model that may rewrite it; None (or KB_REWRITE_SECONDS 0) keeps to terms."""
    earlier = earlier_questions(history)
    if not earlier or not is_followup(question):
        return Rewrite(question)
    if pool is not None and settings.KB_REWRITE_SECONDS > 0:
        try:
            output = pool.complete(
                _messages(question, earlier),
                max_tokens=MAX_TOKENS,
                timeout=settings.KB_REWRITE_SECONDS,
            )
        except llm.LlmUnavailable:
            output = ""
        if rewritten := _checked(output, question, earlier):
            return Rewrite(rewritten, "model")
    return Rewrite(with_terms(question, earlier), "terms")
