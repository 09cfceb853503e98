#!/usr/bin/env python3
"""A CaseVault client in Python's standard library alone: HTTP/1.1 + JSON over the daemon's Unix socket.

    examples/client.py [--socket PATH] demo            open a case, file an intake form, read it back
    examples/client.py [--socket PATH] get RECORD_ID   print a record's content
    examples/client.py [--socket PATH] cases           list the cases you may list

The daemon knows who you are from the socket (the kernel tells it your uid and groups), so there is no
token to send: run it as the user whose role you need. `demo` opens a case, files an intake form and
reads it back, which together only the director may (intake staff file but do not read records). Errors are problem documents (RFC 9457): their `type` is stable and
their `detail` says what to fix. Exit codes: 0 done, 1 the daemon refused (the problem is printed), 2 the
socket could not be reached or the arguments were wrong.
"""

import argparse
import http.client
import json
import socket
import sys
import urllib.parse

DEFAULT_SOCKET = ".casevault/run/casevault.sock"


class Problem(Exception):
    """A refusal from the daemon: its HTTP status, stable problem type, detail and the field it names."""

    def __init__(self, status, document):
        self.status = status
        self.type = document.get("type", "").removeprefix("urn:casevault:problem:")
        self.detail = document.get("detail", "")
        self.field = document.get("field")
        super().__init__(f"{status} {self.type}: {self.detail}" + (f" (field {self.field})" if self.field else ""))


class UnixConnection(http.client.HTTPConnection):
    """http.client's connection, on a Unix socket instead of TCP."""

    def __init__(self, path, timeout=30):
        super().__init__("casevault", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class CaseVault:
    """One connection to casevaultd, reused for every request."""

    def __init__(self, path=DEFAULT_SOCKET):
        self.connection = UnixConnection(path)

    def request(self, method, path, body=None):
        """Sends one request; returns the decoded JSON answer, or raises `Problem`."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        answer = json.loads(payload) if payload else {}
        if response.status >= 400:
            raise Problem(response.status, answer)
        return answer

    def open_case(self, participants, mediators=()):
        return self.request("POST", "/v1/cases", {"participants": participants, "mediators": list(mediators)})

    def file(self, case_id, record_type, content):
        return self.request("POST", f"/v1/cases/{case_id}/records", {"type": record_type, "content": content})

    def get(self, record_id):
        return self.request("GET", f"/v1/records/{record_id}")

    def cases(self, **query):
        """Every page of the case list, following `next_cursor`."""
        rows, cursor = [], None
        while True:
            parameters = dict(query, **({"cursor": cursor} if cursor else {}))
            suffix = urllib.parse.urlencode(parameters)
            page = self.request("GET", "/v1/cases" + ("?" + suffix if suffix else ""))
            rows += page["cases"]
            cursor = page.get("next_cursor")
            if not cursor:
                return rows


def demo(vault):
    case = vault.open_case([{"name": "Participant One"}, {"name": "Participant Two"}])
    print(f"opened case {case['case_id']} ({case['state']})")
    content = {"dispute_category": "roommate", "screening": "no safety concerns raised"}
    filed = vault.file(case["case_id"], "intake_form", content)
    print(f"filed {filed['type']} {filed['record_id']}")
    record = vault.get(filed["record_id"])
    if record["content"] != content:
        raise SystemExit("the record read back differs from the one filed")
    print(f"read it back: {json.dumps(record['content'], sort_keys=True)}")


def main(argv):
    parser = argparse.ArgumentParser(description="A CaseVault client in Python's standard library.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="the daemon's socket (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="open a case, file an intake form and read it back")
    get = commands.add_parser("get", help="print a record's content")
    get.add_argument("record_id")
    commands.add_parser("cases", help="list the cases you may list, one per line")
    arguments = parser.parse_args(argv)
    vault = CaseVault(arguments.socket)
    try:
        if arguments.command == "demo":
            demo(vault)
        elif arguments.command == "get":
            print(json.dumps(vault.get(arguments.record_id)["content"], sort_keys=True))
        else:
            for row in vault.cases():
                counts = ", ".join(f"{kind} {count}" for kind, count in sorted(row["records"].items()))
                print(f"{row['case_id']}  {row['state']:<9}  opened {row['created_at']}  {counts}")
    except Problem as problem:
        print(f"casevault: {problem}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"casevault: cannot reach the daemon at {arguments.socket}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
