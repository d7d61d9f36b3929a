"""The state every finding starts in when a reader opens an image (#19 item 5), chosen per job.

``not-looked-at`` (the default for new jobs): no finding is decided until the reader decides it, and
the viewer refuses to submit while any finding is still "not looked at" — the reader sets each one, or
marks the rest absent in one action. ``absent``: findings start absent, as before; the reader only
marks what is there (quicker, at the price of not knowing whether an absent finding was looked at).

The state "not looked at" never reaches a stored answer: it only exists in the viewer and in drafts.
"""

from __future__ import annotations

from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import DefaultFindingState

FIELD = "defaultFindingState"


DEFAULT = DefaultFindingState.NOT_LOOKED_AT.value
"""What a job created without the option gets."""
EXISTING_JOBS = DefaultFindingState.ABSENT.value
"""What jobs created before the option existed keep (the migration's server default): their readers
went on working the way they started."""


def check_default_finding_state(value: Any, field: str = FIELD) -> str:
    """The job's default finding state (``None``: :data:`DEFAULT`); anything else is a 400 naming the field."""
    if value is None:
        return DEFAULT
    try:
        return DefaultFindingState(value).value
    except ValueError:
        raise BadRequest(f"{field}: one of {', '.join(s.value for s in DefaultFindingState)}") from None
