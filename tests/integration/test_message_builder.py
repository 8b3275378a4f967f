"""The helper process that writes a dispatch's messages (schedctl.delivery.builder).

It is forked only from a process running no other thread, which a pytest worker is
not (its own threads talk to the controller), so the helper is run here in a started
interpreter of its own; the dispatch through it is tested end to end by the fault
suite (tests/faults/test_fault_kills.py: its digest worlds claim 100 messages).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from schedctl.delivery.builder import Builder

# Written by the helper and by the thread, for drafts of every shape build_email
# makes: the same envelope and the same bytes (each dated the same).
SAME_BYTES = r"""
import base64, json
from datetime import UTC, datetime
from schedctl.config import Settings
from schedctl.delivery.builder import Builder
from schedctl.delivery.dispatch import Draft, _write_for_smtp, message_for
from schedctl.delivery.transport import written
import functools, threading

settings = Settings(
    mail_from="Reports <reports@example.com>",
    unsubscribe_base_url="https://example.com/u",
    unsubscribe_secret="s" * 32,
)
write = functools.partial(_write_for_smtp, settings, "bounces@example.com")
csv = {"filename": "r.csv", "content_type": "text/csv",
       "content_b64": base64.b64encode(b"a,b\n1,2\n").decode()}
text = "Hello\n" * 20
long_text = "x" * 2000 + "\n.\n.dot\n"
long_html = "<b>" + "y" * 999 + "</b>"
ru_subject = "Отчёт за " + "неделю " * 12
drafts = [
    Draft(1, 1, "ann@example.org", "Report", text, "<p>Hi</p>", "<a1@example.com>", None, False),
    Draft(2, 1, "boris@example.org", ru_subject, "Привет\n", None, "<a2@example.com>", None, True),
    Draft(3, 2, "cy@example.org", "Long", long_text, long_html, "<a3@example.com>", [csv], False),
    Draft(4, 1, "not an address", "Bad", "b", None, "<a4@example.com>", None, False),
    Draft(5, 1, "dee@example.org", "Bad id", "b", None, "no-angle-brackets", None, False),
]
now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
builder = Builder.start(write)
assert builder is not None, "not started"
builder.submit(drafts, now, lambda d: d)
out = []
for draft in drafts:
    mine = builder.take(draft)
    try:
        theirs = write(draft, now)
    except Exception as exc:
        theirs = type(exc).__name__
    as_list = lambda w: list(w[:2]) + [w.payload.decode()]
    out.append([draft.id, None if mine is None else as_list(mine),
                theirs if isinstance(theirs, str) else as_list(theirs)])
helper = builder._pool._processes  # (to see it ends with close)
pids = list(helper)
builder.close()
print(json.dumps({"out": out, "threads": threading.active_count(), "helper": pids}))
"""


def test_the_helper_writes_what_the_thread_would() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SAME_BYTES], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert len(result["helper"]) == 1
    for draft_id, mine, theirs in result["out"]:
        if isinstance(theirs, str):  # cannot be built: the thread builds it and settles it
            assert mine is None, (draft_id, theirs)
        else:
            assert mine == theirs, draft_id
    built = [draft_id for draft_id, mine, _ in result["out"] if mine is not None]
    assert built == [1, 2, 3]


def test_no_helper_beside_another_thread() -> None:
    """Forking copies only the forking thread: a lock another holds would stay held
    in the helper, so a process with other threads builds in them instead."""
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        assert Builder.start(lambda draft, now: None) is None  # type: ignore[arg-type,return-value]
    finally:
        release.set()
        other.join()
