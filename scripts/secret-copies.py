#!/usr/bin/env python3
"""Counts the copies of a passphrase and of recovery shares left in a running casevaultd's memory.

Starts a daemon with the passphrase key source, runs init (3 shares, 2 needed), seal, unseal by two
shares, seal and unseal by passphrase through casevaultctl, then reads every readable mapping of the
daemon (/proc/PID/mem, as root) and counts where the passphrase and each share's text and value bytes
still lie, and whether each copy is in memory libsodium locked (sodium_malloc regions are mlock'ed, so
they show as "Locked" in /proc/PID/smaps). Prints one line per secret; run as root, after a build:

    python3 scripts/secret-copies.py [.build/release]
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else ".build/debug"
PASSPHRASE = "scan-me " + os.urandom(8).hex()


def ctl(args, sock, data=None):
    return subprocess.run([os.path.join(BIN, "casevaultctl")] + args + ["--socket", sock], input=data,
                          capture_output=True, text=True, check=False)


def regions(pid):
    """(start, end, locked) for each readable mapping."""
    out, current = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if head:
                current = [int(head.group(1), 16), int(head.group(2), 16), head.group(3), False]
                out.append(current)
            elif line.startswith("Locked:") and current is not None and int(line.split()[1]) > 0:
                current[3] = True
    return [(start, end, locked) for start, end, perms, locked in out if perms[0] == "r"]


def count(pid, needle):
    unlocked = locked = 0
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for start, end, is_locked in regions(pid):
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            found = data.count(needle)
            if is_locked:
                locked += found
            else:
                unlocked += found
    return unlocked, locked


def main():
    root = tempfile.mkdtemp(prefix="casevault-scan-")
    os.chmod(root, 0o755)
    sock = root + "/casevault.sock"
    with open(root + "/casevault.toml", "w") as config:
        config.write(f"""[store]
data_directory = "{root}/data"
root_key_file = "{root}/keys/root.key"
max_content_bytes = 65536
[server]
socket_path = "{sock}"
max_body_bytes = 131072
[roles]
operator = ["uid:0"]
[keys]
source = "passphrase"
argon2_operations = 2
argon2_memory_mib = 64
""")
    daemon = subprocess.Popen([os.path.join(BIN, "casevaultd"), "--config", root + "/casevault.toml"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if os.path.exists(sock):
                try:
                    socket.socket(socket.AF_UNIX).connect(sock)
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        made = ctl(["init", "--stdin", "--shares", "3", "--threshold", "2"], sock, PASSPHRASE + "\n")
        shares = [line for line in made.stdout.split("\n") if line.startswith("cvshare1-")]
        assert len(shares) == 3, made.stdout + made.stderr
        ctl(["seal"], sock)
        for share in shares[:2]:
            ctl(["unseal", "--share", "--stdin"], sock, share + "\n")
        ctl(["seal"], sock)
        unsealed = ctl(["unseal", "--stdin"], sock, PASSPHRASE + "\n")
        assert unsealed.returncode == 0, unsealed.stdout + unsealed.stderr
        time.sleep(0.5)
        secrets = [("passphrase", PASSPHRASE.encode())]
        for number, share in enumerate(shares, 1):
            secrets.append((f"share {number} text", share.encode()))
            secrets.append((f"share {number} values", bytes.fromhex(share.split("-")[3])))
        # A control: the socket's path is in the daemon's memory, so a scan that finds it reads that memory.
        secrets.append(("control: socket path", sock.encode()))
        for name, needle in secrets:
            unlocked, locked = count(daemon.pid, needle)
            print(f"{name:18} {unlocked} copies outside locked memory, {locked} inside")
    finally:
        daemon.kill()
        daemon.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
