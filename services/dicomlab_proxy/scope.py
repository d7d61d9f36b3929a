"""The scope decision: which routes a token opens, from the identifiers the response can contain.

The rule itself is :data:`dicomlab_core.tokens.SCOPE_TABLE` (route level × grant → allowed). This
module applies it to a request:

- retrieve, metadata, rendered, thumbnail, frames and bulk routes are judged by the study, series
  and instance *in the path* — Orthanc serves exactly those (it refuses a path whose parts do not
  belong together) and ignores query identifiers on these routes, so a query parameter never takes
  part in the decision (it once did, and an instance token read another study);
- WADO-URI names its object only in the query (``studyUID``/``seriesUID``/``objectUID``, all
  required); Orthanc serves ``objectUID`` and refuses it when it is not in that study and series, so
  these three are what the response contains;
- a QIDO search is constrained by the proxy: it writes the UID filter of the grant that allows the
  search (the path's study/series when the grant covers them, else ``StudyInstanceUID``,
  ``SeriesInstanceUID`` or ``SOPInstanceUID``) and drops every client spelling of that filter
  (by name in any case, by tag number, repeated). A UID the client names is only a choice among the
  token's own grants, checked before it is written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote_plus

from dicomlab_core.errors import BadRequest
from dicomlab_core.tokens import SCOPE_TABLE, Grant, RouteLevel, Scope

SEARCH_LEVELS = frozenset({RouteLevel.SEARCH_STUDIES, RouteLevel.SEARCH_SERIES, RouteLevel.SEARCH_INSTANCES})
FILTER_KEYWORD = {Grant.STUDY: "StudyInstanceUID", Grant.SERIES: "SeriesInstanceUID",
                  Grant.INSTANCE: "SOPInstanceUID"}
"""The QIDO filter the proxy writes for a grant of each kind."""
LEVEL_OF_KEY = {"studyinstanceuid": Grant.STUDY, "0020000d": Grant.STUDY, "seriesinstanceuid": Grant.SERIES,
                "0020000e": Grant.SERIES, "sopinstanceuid": Grant.INSTANCE, "00080018": Grant.INSTANCE}
"""DICOMweb query keys (normalized by :func:`normal_key`) that name an identifier, and its kind."""
WADO_LEVEL_OF_KEY = {"studyuid": Grant.STUDY, "seriesuid": Grant.SERIES, "objectuid": Grant.INSTANCE}
"""The same for WADO-URI, whose three keys are all required."""


class RouteKind(StrEnum):
    """What a route returns, for the de-identified mode (see :mod:`dicomlab_proxy.deid`)."""

    RETRIEVE = "retrieve"
    """Whole DICOM instances (multipart ``application/dicom``): every header attribute."""
    METADATA = "metadata"
    FRAMES = "frames"
    RENDERED = "rendered"
    THUMBNAIL = "thumbnail"
    BULK = "bulk"
    SEARCH = "search"
    FILE = "file"
    """``/instances/{id}/file``: one whole DICOM file."""
    WADO_URI = "wado_uri"


@dataclass(frozen=True)
class Route:
    """A route's level (for the scope table) and kind (for de-identified reading)."""

    level: RouteLevel
    kind: RouteKind


def classify(rule: str) -> Route:
    """The level and kind of a DICOMweb route template (relative to the DICOMweb root)."""
    parts = [p for p in rule.split("/") if p]
    named = [p for p in parts if p.startswith("<")]
    if len(parts) == 1:  # /studies, /series, /instances
        level = {"studies": RouteLevel.SEARCH_STUDIES, "series": RouteLevel.SEARCH_SERIES}.get(
            parts[0], RouteLevel.SEARCH_INSTANCES)
        return Route(level, RouteKind.SEARCH)
    if parts[-1] in ("series", "instances"):  # /studies/{s}/series, .../instances
        return Route(RouteLevel.SEARCH_SERIES if parts[-1] == "series" else RouteLevel.SEARCH_INSTANCES,
                     RouteKind.SEARCH)
    level = (RouteLevel.STUDY, RouteLevel.SERIES, RouteLevel.INSTANCE)[min(len(named), 3) - 1]
    tail = parts[parts.index(named[min(len(named), 3) - 1]) + 1:]
    kind = RouteKind(tail[0]) if tail else RouteKind.RETRIEVE
    return Route(level, kind)


@dataclass(frozen=True)
class Target:
    """What a request reads: the identifiers the scope decision used (and the access log records)."""

    study: str | None = None
    series: str | None = None
    instance: str | None = None
    orthanc_id: str | None = None

    def of(self, grant: Grant) -> str | None:
        return {Grant.STUDY: self.study, Grant.SERIES: self.series, Grant.INSTANCE: self.instance,
                Grant.ORTHANC_ID: self.orthanc_id}[grant]


@functools.lru_cache(maxsize=1024)
def normal_key(name: str) -> str:
    """A query key lower-cased and stripped of punctuation: ``Study-Instance_UID`` is ``studyinstanceuid``."""
    return "".join(c for c in name.lower() if c.isalnum())


@dataclass(frozen=True)
class Search:
    """A QIDO search as the proxy forwards it: the grant that allowed it and the filter it writes."""

    grant: Grant
    filter: tuple[str, str] | None
    """``(keyword, uid)`` the proxy adds, or None when the path already names the granted identifier."""
    target: Target


def constrain_search(scope: Scope, level: RouteLevel, path: Target, named: Mapping[Grant, str | None]) -> Search | None:
    """The constraint that keeps a search of ``level`` inside ``scope``, or None when nothing allows it.

    ``path`` holds the study/series in the search's path; ``named`` the single UID the client's query
    names at each level (already checked for conflicts). For each grant the table allows, broadest
    first: the path's identifier when it has one at that level, else the UID the client chose, else
    the token's only grant of that kind.
    """
    for grant in (Grant.STUDY, Grant.SERIES, Grant.INSTANCE):
        if grant not in SCOPE_TABLE[level]:
            continue
        granted = scope.granted(grant)
        in_path = path.of(grant)
        if in_path is not None:
            if in_path in granted:
                return Search(grant, None, path)
            continue
        chosen = named.get(grant) or (granted[0] if len(granted) == 1 else None)
        if chosen is not None and chosen in granted:
            target = Target(**{**_fields(path), grant.value: chosen})
            return Search(grant, (FILTER_KEYWORD[grant], chosen), target)
    return None


def _fields(target: Target) -> dict[str, str | None]:
    return {"study": target.study, "series": target.series, "instance": target.instance,
            "orthanc_id": target.orthanc_id}


def search_query(query_string: str, *, drop_key: str, search: Search) -> str:
    """The query to forward: the client's, less ``drop_key`` and every spelling of the proxy's filter, plus it.

    Every other byte stays as the client sent it.
    """
    replaced = search.grant if search.filter is not None else None
    kept = []
    for part in query_string.split("&") if query_string else ():
        if not part:
            continue
        key = unquote_plus(part.split("=", 1)[0])
        if key == drop_key or (replaced is not None and LEVEL_OF_KEY.get(normal_key(key)) is replaced):
            continue
        kept.append(part)
    if search.filter is not None:
        keyword, uid = search.filter
        kept.append(f"{keyword}={quote(uid, safe='.')}")
    return "&".join(kept)


def one_uid(path_value: str | None, query_values: list[str], what: str, pattern: re.Pattern[str]) -> str | None:
    """The single identifier a request names at one level; conflicting or malformed ones are a 400."""
    values = set(query_values)
    if path_value is not None:
        values.add(path_value)
    if len(values) > 1:
        raise BadRequest(f"conflicting {what} values")
    for value in values:
        if not pattern.fullmatch(value):
            raise BadRequest(f"invalid {what}")
    return next(iter(values), None)
