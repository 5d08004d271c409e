"""The JSON API's description, OpenAPI 3.1, served at ``/api/v1/openapi.json``.

Written by hand beside the routes (``server.web``) and held to the real answers by
``tests/test_http_api.py``, which validates every kind of answer the API gives
against the schema given here for its path and status.
"""

from __future__ import annotations

from typing import Any, Dict

from ..version import __version__

_TEXT = {"type": "string"}
_VALUE = {"type": ["string", "null"], "description": "a revision value, as bitbake stores it"}
_GIVEN = {"type": ["string", "null"], "format": "date-time",
          "description": "when the value was given (RFC 3339, UTC); null: not known"}
_CLIENT = {"type": ["string", "null"], "description": "whom the value was given to (address, or the user "
           "it proved); present only to clients that may write; null: not recorded"}
_ERROR = {"type": "object", "required": ["error"], "additionalProperties": False,
          "properties": {"error": {"type": "object", "required": ["message"], "additionalProperties": False,
                                   "properties": {"message": _TEXT}}}}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
_STATUS = {"type": "object", "additionalProperties": False,
           "required": ["role", "engine", "version", "upstream", "mirror_of", "identity", "figures", "mirror",
                        "upstream_state"],
           "properties": {"role": {"enum": ["read-write", "read-only", "mirror"]},
                          "engine": {"enum": ["sqlite", "postgresql"]}, "version": _TEXT,
                          "upstream": {"type": ["string", "null"]}, "mirror_of": {"type": ["string", "null"]},
                          "identity": {"type": ["string", "null"],
                                       "description": "the history this server holds (a mirror: its source's)"},
                          "figures": {"type": "object", "required": ["packages", "values", "given_24h"],
                                      "additionalProperties": False, "properties": {
                                          "packages": {**_COUNT, "description": "packages stored; null: not "
                                                       "counted (yet: a large table is counted over several "
                                                       "views)"},
                                          "values": {**_COUNT, "description": "values stored; null: not counted"},
                                          "given_24h": {**_COUNT, "description": "values given in the last 24 "
                                                        "hours; null: the database keeps no record"}}},
                          "mirror": {"type": ["object", "null"],
                                     "description": "a mirror's state, as mirror-status answers it"},
                          "upstream_state": {"type": ["object", "null"], "description": "the upstream's address, "
                                             "whether it is down, and its answers (ok, error)"}}}
_HISTORY = {"type": "object", "required": ["version", "pkgarch", "latest", "history"], "additionalProperties": False,
            "properties": {"version": _TEXT, "pkgarch": _TEXT, "latest": _VALUE, "history": {
                "type": "array", "items": {
                    "type": "object", "required": ["checksum", "value", "given"], "additionalProperties": False,
                    "properties": {"checksum": _TEXT, "value": _VALUE, "given": _GIVEN,
                                   "address": _CLIENT, "user": _CLIENT}}}}}
_RECENT = {"type": "object", "required": ["items", "next"], "additionalProperties": False,
           "properties": {"next": {"type": ["string", "null"], "description": "the cursor of the next page"},
                          "items": {"type": "array", "items": {
                              "type": "object", "additionalProperties": False,
                              "required": ["version", "pkgarch", "checksum", "value", "given"],
                              "properties": {"version": _TEXT, "pkgarch": _TEXT, "checksum": _TEXT,
                                             "value": _VALUE, "given": _GIVEN, "address": _CLIENT,
                                             "user": _CLIENT}}}}}
_PACKAGES = {"type": "object", "required": ["items", "next"], "additionalProperties": False,
             "properties": {"next": {"type": ["string", "null"], "description": "the cursor of the next page"},
                            "items": {"type": "array", "items": {
                                "type": "object", "required": ["version", "pkgarch", "latest", "given"],
                                "additionalProperties": False,
                                "properties": {"version": _TEXT, "pkgarch": _TEXT, "latest": _VALUE,
                                               "given": _GIVEN}}}}}


def _json(description: str, schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, required: bool = False, schema: Any = None) -> Dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or _TEXT}


_BAD = _json("a parameter missing, repeated or out of range", _ERROR)
_NOT_MODIFIED = {"description": "the answer named by If-None-Match has not changed"}


def document() -> Dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "prserv", "version": __version__,
                 "description": "A PR server's history, read-only: what each package holds."},
        "paths": {
            "/api/v1/status": {"get": {"summary": "what this server is", "responses": {
                "200": _json("the server's role, engine, version and sources", _STATUS)}}},
            "/api/v1/history": {"get": {
                "summary": "every row of one package, in numeric value order",
                "parameters": [_query("version", "the package's version", True),
                               _query("pkgarch", "the package's architecture", True)],
                "responses": {"200": _json("the package's rows", _HISTORY), "304": _NOT_MODIFIED, "400": _BAD,
                              "404": _json("no such package", _ERROR)}}},
            "/api/v1/packages": {"get": {
                "summary": "packages in (version, pkgarch) byte order, by pages",
                "parameters": [_query("prefix", "a literal, case-sensitive prefix of the version"),
                               _query("pkgarch", "an architecture"),
                               _query("limit", "packages per page", schema={"type": "integer", "minimum": 1,
                                                                            "maximum": 1000, "default": 100}),
                               _query("after", "the cursor a page gave as next")],
                "responses": {"200": _json("one page", _PACKAGES), "304": _NOT_MODIFIED, "400": _BAD}}},
            "/api/v1/recent": {"get": {
                "summary": "values newest first (the change feed's order, backwards), by pages",
                "parameters": [_query("since", "only values given at or after this RFC 3339 time",
                                      schema={"type": "string", "format": "date-time"}),
                               _query("limit", "values per page", schema={"type": "integer", "minimum": 1,
                                                                          "maximum": 1000, "default": 100}),
                               _query("after", "the cursor a page gave as next")],
                "responses": {"200": _json("one page", _RECENT), "304": _NOT_MODIFIED, "400": _BAD}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}},
        },
    }
