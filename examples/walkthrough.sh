#!/usr/bin/env bash
# A whole mediation case against `make run`, with nothing but curl on the Unix socket.
# Run it as the user who started `make run` (that user is director, mediator and operator there).
#   examples/walkthrough.sh [SOCKET]      (default: .casevault/run/casevault.sock)
set -euo pipefail

SOCKET="${1:-.casevault/run/casevault.sock}"

# call METHOD PATH [JSON]: prints the response body, then checks the status against $EXPECT (default 2xx).
call() {
    local method="$1" path="$2" body="${3:-}" out status
    if [[ -n "$body" ]]; then
        out=$(curl -sS --unix-socket "$SOCKET" -X "$method" -H 'Content-Type: application/json' \
            --data-binary "$body" -w '\n%{http_code}' "http://casevault$path")
    else
        out=$(curl -sS --unix-socket "$SOCKET" -X "$method" -w '\n%{http_code}' "http://casevault$path")
    fi
    status="${out##*$'\n'}"
    out="${out%$'\n'*}"
    echo "$method $path -> $status" >&2
    [[ -n "$out" ]] && echo "  $out" >&2
    if [[ "$status" != "${EXPECT:-2}"* ]]; then
        echo "unexpected status $status (wanted ${EXPECT:-2xx})" >&2
        exit 1
    fi
    printf '%s' "$out"
}

# field NAME: the first string value of NAME in the JSON on stdin (ids are hex, so sed is enough).
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

me="uid:$(id -u)"
agreement() { # participant online
    local extra=""
    [[ "$2" == true ]] && extra=', "devices_off": true, "nobody_else_present": true'
    printf '{"type": "agreement_to_mediate", "content": {"participant": "%s", "signed_at": "2026-11-20T10:00:00Z",
      "method": "written", "online": %s, "acknowledgements": {"confidentiality": true, "no_recording": true,
      "will_not_compel_mediator": true, "will_not_discuss_outside": true%s}}}' "$1" "$2" "$extra"
}

echo "== the director puts themself on the mediator roster" >&2
call PUT "/v1/roster/mediators/$me" >/dev/null

echo "== open a case with two participants" >&2
case_id=$(call POST /v1/cases "{\"participants\": [{\"name\": \"Avery Example\", \"contact\": \"avery@example.edu\"},
  {\"name\": \"Blake Example\", \"contact\": \"blake@example.edu\"}], \"mediators\": [\"$me\"]}" | field case_id)

echo "== intake form" >&2
call POST "/v1/cases/$case_id/records" '{"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "no safety concerns"}}' >/dev/null

echo "== a session note before every agreement is on file is refused (409)" >&2
EXPECT=409 call POST "/v1/cases/$case_id/records" '{"type": "session_note", "content": {"text": "too early"}}' >/dev/null

echo "== two agreements to mediate, one of them online" >&2
call POST "/v1/cases/$case_id/records" "$(agreement p1 false)" >/dev/null
call POST "/v1/cases/$case_id/records" "$(agreement p2 true)" >/dev/null

echo "== recordings and transcripts do not exist here (422)" >&2
EXPECT=422 call POST "/v1/cases/$case_id/records" '{"type": "transcript", "content": {"text": "no"}}' >/dev/null

echo "== two session notes" >&2
note1=$(call POST "/v1/cases/$case_id/records" '{"type": "session_note", "content": {"text": "first session"}}' | field record_id)
call POST "/v1/cases/$case_id/records" '{"type": "session_note", "content": {"text": "second session"}}' >/dev/null

echo "== the final agreement: the response lists the notes it shredded" >&2
call POST "/v1/cases/$case_id/records" '{"type": "final_agreement", "content": {"terms": "quiet hours after 22:00",
  "outcome": "resolved", "outcome_confidential": true, "consents": ["p1", "p2"]}}' >/dev/null

echo "== an evaluation" >&2
call POST "/v1/cases/$case_id/records" '{"type": "evaluation", "content": {"satisfaction": 5, "would_recommend": true}}' >/dev/null

echo "== the case now: closed, no notes left" >&2
call GET "/v1/cases/$case_id" >/dev/null

echo "== the closed cases, listed: ids, states, dates, mediators and counts, never names" >&2
call GET "/v1/cases?state=closed&limit=5" >/dev/null

echo "== reading a shredded note gives 410" >&2
EXPECT=410 call GET "/v1/records/$note1" >/dev/null

echo "walkthrough complete: case $case_id" >&2
