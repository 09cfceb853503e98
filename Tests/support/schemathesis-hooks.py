"""Schemathesis hooks for `make check-api` (scripts/check-api.sh), loaded with SCHEMATHESIS_HOOKS.

Three things:

1. Fixtures. Schemathesis draws ids at random, which name nothing: every read and shred would be a 404.
   CASEVAULT_CHECK_FIXTURES names a JSON file (scripts/check-api-fixtures.py) of ids that exist, and a
   drawn `case_id`, `record_id`, `certificate_id`, `hold_id` or `user` (in the path, the certificates'
   query and a hold's body) is swapped for one of them, chosen by the drawn value itself (so the same
   draw always makes the same request, and shrinking and replay still work). One draw in n+1 keeps the
   drawn value, so unknown ids are still asked for. Only a value that already has the ID's form is
   swapped for one (an id for an id), so a case stays as valid or invalid as it was drawn.

   A record's `content` is completed the same way (REQUIRED_CONTENT, below).

   Three rules of the API cross fields or depend on the vault's state, which a schema cannot state; a
   draw is brought within them, so that a schema-valid request is one the daemon must take:
   - a record's participant ids (an agreement's `participant`, a final agreement's `consents`) must be
     the case's, and every fixture case has p1 and p2: any other `pN` becomes p1 or p2 by its parity,
     and a non-confidential outcome's consents become every participant;
   - init's `threshold` is at most `shares` (the larger of two such draws becomes `shares`), and is not
     given without shares; the coverage phase, which map_body does not see, draws them at the schema's
     bounds, so its 400 on `threshold` for a threshold above the shares is dropped (`filter_failure`);
   - an unseal share carries a BLAKE2b checksum of itself, which a drawn share cannot have: the answer
     400 `invalid-field` on `share` naming the checksum is dropped (`filter_failure`, 3.).

2. The check `refused_request_changed_nothing`: a request answered with an error (status 400 or more)
   must leave the vault as it was. Before each call and again after it, this process (root) takes a
   fingerprint of the daemon's state (CASEVAULT_CHECK_DATA, the data directory, and
   CASEVAULT_CHECK_KEYS, the keys directory):
   - every row of every table of the SQLite index, read with a read-only connection, except
     `audit_anchor`, which the audit log moves on by itself (at most once a second, and at
     checkpoints) and which records refusals as much as anything;
   - the size and modification time of every other file: key slots, segments, attachments, and in the
     keys directory the root key, the backup keys and the shred ledger copy.
   Not fingerprinted: `audit/` (which rightly records every refusal), the index's own files, which
   change with the anchor (their rows are compared instead), and `<root key>.throttle`, which must count
   a refused passphrase or share (that is how the unseal throttle outlives a restart).
   Schemathesis must run with one worker, so that nothing else happens between the two fingerprints.

3. Three failures are dropped (`filter_failure`): Schemathesis's "server error" (not_a_server_error) for a
   503 `sealed`, which a sealed vault answers to every route but health, status, init, unseal and seal by
   design (docs/ARCHITECTURE.md, "Sealed start"), though whether the document lists that 503 is still
   checked (status_code_conformance); "schema-valid request rejected" for an unseal share whose checksum does
   not match, and for init's threshold above its shares (1., above).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import sqlite3

import schemathesis

DATA = os.environ.get("CASEVAULT_CHECK_DATA", "")
KEYS = os.environ.get("CASEVAULT_CHECK_KEYS", "")
FIXTURES_PATH = os.environ.get("CASEVAULT_CHECK_FIXTURES", "")
# When set, every call is appended to this file: method, path and query, status, whether the vault's
# fingerprint changed ("changed") or not ("same"), and for an error its problem code and detail.
CALL_LOG = os.environ.get("CASEVAULT_CHECK_CALL_LOG", "")

ID = re.compile(r"^[0-9a-f]{32}$")
FIXTURES: dict[str, list[str]] = {}
if FIXTURES_PATH:
    with open(FIXTURES_PATH) as handle:
        FIXTURES = json.load(handle)


# --- 1. fixtures -------------------------------------------------------------------------------------


def swapped(name: str, value):
    """The fixture that a drawn `value` of parameter `name` stands for, or `value` itself."""
    choices = FIXTURES.get(name)
    if not choices or not isinstance(value, str):
        return value
    if name == "user":
        draw = int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    elif ID.match(value):
        draw = int(value, 16)
    else:
        return value
    index = draw % (len(choices) + 1)
    return value if index == len(choices) else choices[index]


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if isinstance(path_parameters, dict):
        for name, value in list(path_parameters.items()):
            path_parameters[name] = swapped(name, value)
    return path_parameters


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and "case_id" in query:
        query["case_id"] = swapped("case_id", query["case_id"])
    return query


# What each record type must hold at least, with values a fixture case takes (p1, p2). docs/openapi.yaml
# gives each type's content as a schema (NewRecord), so positive draws hold every required member already,
# though with values the case may not have (a participant id such as p7); only what is missing is filled
# in. Three draws in four of a record whose `content` is an object get it, so that records are really filed
# and the lifecycle rules answer; the fourth is sent as drawn. A negative draw whose only fault is a missing
# member gets it too, and is then sent valid.
REQUIRED_CONTENT = {
    "intake_form": lambda draw: {"dispute_category": ["roommate", "academic", "workplace"][draw % 3]},
    "agreement_to_mediate": lambda draw: {
        "participant": f"p{draw % 2 + 1}", "signed_at": "2026-11-20T10:00:00Z", "method": "written", "online": False,
        "acknowledgements": {"confidentiality": True, "no_recording": True, "will_not_compel_mediator": True,
                             "will_not_discuss_outside": True}},
    "session_note": lambda draw: {"text": "said in session"},
    "final_agreement": lambda draw: {"terms": "terms", "outcome": "resolved", "outcome_confidential": True,
                                     "consents": ["p1", "p2"]},
    "evaluation": lambda draw: {"satisfaction": draw % 5 + 1, "would_recommend": True},
    "disclosure": lambda draw: {"category": ["sexual_harassment", "discrimination", "intent_to_harm",
                                             "mediator_defense"][draw % 4], "summary": "summary"},
}


def completed_record(body):
    if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
        return body
    fill = REQUIRED_CONTENT.get(body.get("type"))
    if fill is None:
        return body
    draw = int.from_bytes(hashlib.blake2b(repr(body).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    if draw % 4 == 0:
        return body
    for key, value in fill(draw // 4).items():
        body["content"].setdefault(key, value)
    return body


PARTICIPANT = re.compile(r"^p[1-9][0-9]{0,4}$")


def fixture_participant(value):
    """p1 or p2 for a drawn participant id (odd: p1, even: p2); anything else as it is."""
    if not isinstance(value, str) or not PARTICIPANT.match(value):
        return value
    return "p1" if int(value[1:]) % 2 else "p2"


def case_participants(body):
    """A record's participant ids brought within the fixture cases' p1 and p2 (docstring, 1.)."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
        return body
    content = body["content"]
    if "participant" in content:
        content["participant"] = fixture_participant(content["participant"])
    consents = content.get("consents")
    if isinstance(consents, list):
        if content.get("outcome_confidential") is False and all(isinstance(item, str) and PARTICIPANT.match(item) for item in consents):
            content["consents"] = ["p1", "p2"]
        else:
            mapped = [fixture_participant(item) for item in consents]
            # Still distinct, as the schema asks (uniqueItems), when every one was an id.
            content["consents"] = list(dict.fromkeys(mapped)) if all(isinstance(item, str) for item in mapped) else mapped
    return body


def init_within_rules(body):
    """Init's threshold at most its shares, and none without shares (docstring, 1.)."""
    if not isinstance(body, dict):
        return body
    shares, threshold = body.get("shares"), body.get("threshold")
    if type(shares) is int and type(threshold) is int:
        if shares == 0:
            del body["threshold"]
        elif 2 <= shares < threshold <= 255:
            body["shares"], body["threshold"] = threshold, shares
    return body


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if operation is None:
        return body
    if operation.path == "/v1/holds" and isinstance(body, dict) and "case_id" in body:
        body["case_id"] = swapped("case_id", body["case_id"])
    if operation.path == "/v1/cases/{case_id}/records" and operation.method.lower() == "post":
        body = case_participants(completed_record(body))
    if operation.path == "/v1/admin/init":
        body = init_within_rules(body)
    return body


# --- 2. refused requests change nothing --------------------------------------------------------------

EXCLUDED_TABLES = {"audit_anchor"}
INDEX_FILES = {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "index.sqlite-journal"}


def index_rows() -> dict[str, str]:
    """A digest of every table's rows (sorted, so that the order SQLite returns them in does not count)."""
    digests = {}
    if not os.path.exists(f"{DATA}/index.sqlite"):
        return {"index": "absent"}  # a vault not initialised yet
    connection = sqlite3.connect(f"file:{DATA}/index.sqlite?mode=ro", uri=True, timeout=5)
    try:
        connection.execute("BEGIN")  # one snapshot for every table
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            if table in EXCLUDED_TABLES:
                continue
            rows = sorted(repr(row) for row in connection.execute(f'SELECT * FROM "{table}"'))
            digest = hashlib.blake2b(digest_size=16)
            for row in rows:
                digest.update(row.encode("utf-8", "surrogatepass") + b"\n")
            digests[f"index:{table}"] = f"{len(rows)} rows {digest.hexdigest()}"
        connection.execute("COMMIT")
    finally:
        connection.close()
    return digests


def files(root: str, label: str, skip) -> dict[str, str]:
    found = {}
    for directory, subdirectories, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        subdirectories[:] = sorted(d for d in subdirectories if not skip(os.path.normpath(os.path.join(relative, d))))
        for name in names:
            path = os.path.normpath(os.path.join(relative, name))
            if skip(path):
                continue
            try:
                status = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            found[f"{label}:{path}"] = f"{status.st_size} bytes, mtime {status.st_mtime_ns}"
    return found


def fingerprint() -> dict[str, str]:
    if not DATA:
        return {}
    state = index_rows()
    state.update(files(DATA, "data", lambda path: path == "audit" or path.startswith("audit/") or path in INDEX_FILES))
    if KEYS:
        state.update(files(KEYS, "keys", lambda path: path.endswith(".throttle")))
    return state


# What each response found: id(response) -> (response, before, after). Only the newest are kept.
OBSERVED: collections.OrderedDict = collections.OrderedDict()
PENDING: dict[int, dict[str, str]] = {}


@schemathesis.hook
def before_call(context, case, **kwargs):
    PENDING[id(case)] = fingerprint()


@schemathesis.hook
def after_call(context, case, response):
    before = PENDING.pop(id(case), None)
    if before is None:
        return
    after = fingerprint()
    OBSERVED[id(response)] = (response, before, after)
    if CALL_LOG:
        with open(CALL_LOG, "a") as log:
            effect = "same" if before == after else "changed"
            problem = ""
            if response.status_code >= 400:
                try:
                    problem = " " + json.loads(response.content).get("type", "").rsplit(":", 1)[-1]
                    problem += " " + json.dumps(json.loads(response.content).get("detail", ""))
                except (ValueError, AttributeError):
                    pass
            log.write(f"{response.request.method} {response.request.path_url} {response.status_code} {effect}{problem}\n")
    while len(OBSERVED) > 64:
        OBSERVED.popitem(last=False)


@schemathesis.check
def refused_request_changed_nothing(ctx, response, case):
    if response.status_code < 400:
        return None
    observed = OBSERVED.get(id(response))
    if observed is None or observed[0] is not response:
        return None  # not a call these hooks saw
    _, before, after = observed
    if before == after:
        return True
    changed = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changed.append(f"{key}: {before.get(key, 'absent')} -> {after.get(key, 'absent')}")
    raise AssertionError(
        f"Refused with {response.status_code}, yet the vault changed:\n" + "\n".join(changed[:20])
    )


# --- 3. a sealed vault's 503 is not a server error -------------------------------------------------------


@schemathesis.hook
def filter_failure(context, failure, case, response):
    code = getattr(failure, "code", "")
    if response is None or code not in ("ST101", "ST202"):
        return True
    try:
        problem = json.loads(response.content)
    except (ValueError, AttributeError):
        return True
    if not isinstance(problem, dict):
        return True
    if code == "ST101":
        return not (response.status_code == 503 and problem.get("type") == "urn:casevault:problem:sealed")
    # ST202: a share whose checksum does not match, which no drawn share can have; and init's threshold
    # above its shares, which the coverage phase draws at the schema's bounds without map_body.
    invalid = response.status_code == 400 and problem.get("type") == "urn:casevault:problem:invalid-field"
    if case.operation.path == "/v1/admin/unseal":
        return not (invalid and problem.get("field") == "share" and "checksum does not match" in str(problem.get("detail", "")))
    if case.operation.path == "/v1/admin/init" and isinstance(case.body, dict):
        shares, threshold = case.body.get("shares"), case.body.get("threshold")
        crossed = type(shares) is int and type(threshold) is int and 2 <= shares < threshold
        return not (invalid and problem.get("field") == "threshold" and crossed)
    return True
