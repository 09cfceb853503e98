#!/usr/bin/env python3
"""Fixture data for `make check-api` (scripts/check-api.sh): real cases, records, an attachment, a hold,
a shredded record and destruction certificates, so that Schemathesis's path parameters can name things
that exist (Tests/support/schemathesis-hooks.py swaps generated ids for these).

    check-api-fixtures.py DIRECTOR_URL MEDIATOR_URL DIRECTOR_UID MEDIATOR_UID OUT.json

DIRECTOR_URL and MEDIATOR_URL are the loopback bridges of a director's and a mediator's uid. Writes
{"case_id": [...], "record_id": [...], "certificate_id": [...], "hold_id": [...], "user": [...]} to OUT.json
and exits non-zero at the first answer that is not the one expected. Standard library only.
"""

import json
import sys
import urllib.error
import urllib.request


def call(base, method, path, body=None, expect=(200, 201), content_type="application/json", raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    if status not in expect:
        sys.exit(f"check-api-fixtures: {method} {path} answered {status}, wanted {expect}: {payload[:500]!r}")
    return json.loads(payload) if payload else {}


def agreement(participant, online=False):
    acknowledgements = {"confidentiality": True, "no_recording": True, "will_not_compel_mediator": True,
                        "will_not_discuss_outside": True}
    if online:
        acknowledgements.update(devices_off=True, nobody_else_present=True)
    return {"type": "agreement_to_mediate", "content": {
        "participant": participant, "signed_at": "2026-11-20T10:00:00Z", "method": "written", "online": online,
        "acknowledgements": acknowledgements}}


INTAKE = {"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "no concerns"}}
NOTE = {"type": "session_note", "content": {"text": "said in session"}}
EVALUATION = {"type": "evaluation", "content": {"satisfaction": 4, "would_recommend": True}}
FINAL = {"type": "final_agreement", "content": {"terms": "quiet hours", "outcome": "resolved",
                                                "outcome_confidential": True, "consents": ["p1", "p2"]}}
CATEGORIES = ["sexual_harassment", "discrimination", "intent_to_harm", "mediator_defense"]


def main():
    director, mediator, director_uid, mediator_uid, out = sys.argv[1:6]
    mediator_user = f"uid:{mediator_uid}"
    records, cases = [], []

    def open_case():
        body = {"participants": [{"name": "Avery Example", "contact": "avery@example.edu"},
                                 {"name": "Blake Example", "contact": "blake@example.edu"}],
                "mediators": [mediator_user]}
        case_id = call(director, "POST", "/v1/cases", body, expect=(201,))["case_id"]
        cases.append(case_id)
        return case_id

    def file(base, case_id, body):
        filed = call(base, "POST", f"/v1/cases/{case_id}/records", body, expect=(201,))
        records.append(filed["record_id"])
        return filed

    # The mediator on the roster (again: an earlier run may have taken them off).
    call(director, "PUT", f"/v1/roster/mediators/{mediator_user}", expect=(200, 201))

    # An open case in session, with one record of each type and an attachment.
    open_id = open_case()
    file(director, open_id, INTAKE)
    first = file(director, open_id, agreement("p1"))
    file(director, open_id, agreement("p2", online=True))
    file(mediator, open_id, NOTE)
    file(director, open_id, EVALUATION)
    for category in CATEGORIES:
        file(director, open_id, {"type": "disclosure", "content": {"category": category, "summary": "summary"}})
    call(director, "PUT", f"/v1/records/{first['record_id']}/attachment", raw=b"%PDF-1.4 fixture\n",
         content_type="application/pdf", expect=(201,))
    # One filed in error and shredded: 410 from then on, and a certificate.
    mistaken = file(director, open_id, INTAKE)
    call(director, "DELETE", f"/v1/records/{mistaken['record_id']}", {"reason": "filed_in_error"}, expect=(200,))

    # A case closed by its final agreement, which shreds its note (another certificate).
    closed_id = open_case()
    file(director, closed_id, INTAKE)
    file(director, closed_id, agreement("p1"))
    file(director, closed_id, agreement("p2"))
    file(mediator, closed_id, NOTE)
    file(director, closed_id, FINAL)

    # A case under a legal hold.
    held_id = open_case()
    file(director, held_id, INTAKE)
    hold_id = call(director, "POST", "/v1/holds", {"case_id": held_id, "reason": "litigation"}, expect=(201,))["hold_id"]

    certificates = [document["certificate"]["certificate_id"]
                    for case_id in cases
                    for document in call(director, "GET", f"/v1/certificates?case_id={case_id}")["certificates"]]
    fixtures = {"case_id": cases, "record_id": records, "certificate_id": certificates, "hold_id": [hold_id],
                "user": [mediator_user, f"uid:{director_uid}", "uid:65534"]}
    with open(out, "w") as handle:
        json.dump(fixtures, handle, indent=1)
    print(f"fixtures: {len(cases)} cases, {len(records)} records, {len(certificates)} certificates, 1 hold")


if __name__ == "__main__":
    main()
