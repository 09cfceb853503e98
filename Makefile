# CaseVault: `make run` and `make test` set up what is missing (as root on Debian), then build.
SWIFT ?= swift
APT_PACKAGES := libsodium-dev libsqlite3-dev pkg-config systemd
# What the real-systemd test needs besides: systemd-nspawn, and the tools it drives the container with.
# The power-cut test's filesystem: libfuse3 to build it, fusermount3 to unmount it (the cut); e2fsprogs for the
# ext4 made on a loop device (util-linux's losetup) over it, where the audit log rides on a failing disk.
# PostgreSQL 15's server programs (initdb, pg_ctl, pg_basebackup, psql) for the clusters the PostgreSQL tests
# make and start themselves, on Unix sockets in a temporary directory (util-linux's setpriv runs them as nobody).
TEST_APT_PACKAGES := systemd-container curl bc procps util-linux passwd fuse3 libfuse3-dev gcc python3 e2fsprogs \
	postgresql-15 openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps test-deps apt-install build run lint test test-systemd test-asan test-tsan powercutfs bench soak fuzz check-api install clean

## deps: install the apt packages the build needs, only if one is missing
deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-deps: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_APT_PACKAGES)"

apt-install:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

## run: start casevaultd in the foreground on the embedded default under .casevault/
run: build
	$(SWIFT) run casevaultd --config Config/casevault.toml

## powercutfs: the power-cut test's FUSE filesystem (Tests/support/powercutfs.c), into .build/powercutfs
powercutfs: test-deps
	mkdir -p .build
	cc -O2 -Wall -Wextra -Werror -o .build/powercutfs Tests/support/powercutfs.c $$(pkg-config --cflags --libs fuse3)

## lint: swift-format (the toolchain's own) with .swift-format (120 columns, 4 spaces) over Sources and Tests;
## fails on any finding. `swift format format -i --configuration .swift-format -r Sources Tests` fixes most.
lint:
	$(SWIFT) format lint --strict --configuration .swift-format -r Sources Tests

## test: the lint, then every test, against real files, real libsodium, real processes killed with SIGKILL,
## power cut under a real filesystem that forgets what was not flushed (Tests/support/powercutfs.c), a real
## systemd booted in a throw-away container (Tests/system/real-systemd.sh), and real PostgreSQL 15 primaries and
## synchronous standbys that the PostgreSQL tests start on Unix sockets (Tests/CaseVaultPostgresTests). The
## failing ext4 under a riding audit log (RideFailureTests) runs alone after the rest: that ext4 has no journal,
## and its own metadata whose write failed is lost when the kernel, short of memory, drops it (docs/TESTING.md)
test: lint test-deps powercutfs
	$(SWIFT) build --build-tests
	Tests/system/real-systemd.sh .build/debug
	$(SWIFT) test --skip RideFailureTests
	$(SWIFT) test --skip-build --filter RideFailureTests

## test-asan: every Swift test, built with AddressSanitizer into .build-asan (the real-systemd script is left out);
## leak checks are off there (a process killed or stopped on an error path leaves memory by design) and on for
## the daemon's own start, requests and stop (scripts/asan-daemon-leaks.sh) and in make fuzz, third-party
## leaks suppressed in Tests/support/lsan.supp, each explained there
SANITIZER_ENV = CASEVAULT_POWERCUTFS=$(CURDIR)/.build/powercutfs CASEVAULT_SANITIZER=address CASEVAULT_SLOWDOWN=3 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/support/lsan.supp ASAN_OPTIONS=quarantine_size_mb=16:detect_leaks=0
test-asan: test-deps powercutfs
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	scripts/asan-daemon-leaks.sh .build-asan/debug
	$(SANITIZER_ENV) $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan

## test-tsan: every Swift test, built with ThreadSanitizer into .build-tsan, with -DCASEVAULT_TSAN (Mutex on a
## pthread mutex TSan sees: Sources/CaseVaultCrypto/VisibleMutex.swift); the reports of every process go to
## .build-tsan/tsan-reports (exitcode=0: a report must not look like a failed exit to the tests) and
## scripts/tsan-summary.sh sorts them; fails if a test fails or a report is not one TSan cannot see locked
TSAN_REPORTS = $(CURDIR)/.build-tsan/tsan-reports
TSAN_FLAGS = --sanitize=thread --scratch-path .build-tsan -Xswiftc -DCASEVAULT_TSAN
test-tsan: test-deps powercutfs
	$(SWIFT) build --build-tests $(TSAN_FLAGS)
	rm -rf $(TSAN_REPORTS) && mkdir -p $(TSAN_REPORTS)
	CASEVAULT_POWERCUTFS=$(CURDIR)/.build/powercutfs CASEVAULT_SLOWDOWN=10 CASEVAULT_SANITIZER=thread \
		TSAN_OPTIONS=halt_on_error=0:exitcode=0:log_path=$(TSAN_REPORTS)/r \
		$(SWIFT) test --skip-build $(TSAN_FLAGS); status=$$?; \
		scripts/tsan-summary.sh $(TSAN_REPORTS) && exit $$status

## test-systemd: only the real-systemd test, on the debug build
test-systemd: test-deps
	$(SWIFT) build
	Tests/system/real-systemd.sh .build/debug

## bench: release build, prints throughput figures (no pass/fail): the store, then over the socket vs nginx and
## vs Hummingbird alone (casevault-floor), then issue 17's table as ratios to ceilings from the same run
## (scripts/bench-summary.sh), with the most a GET and a PUT could be on this stack, and where the
## socket figures' time goes under perf (linux-perf, installed when the distribution has it for this kernel),
## and issue 19's PostgreSQL ceiling (pgbench on a throw-away PostgreSQL 15 cluster: scripts/bench-postgres.sh)
bench: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES="postgresql-15"
	@command -v perf >/dev/null || $(MAKE) --no-print-directory apt-install PACKAGES="linux-perf" \
		|| echo "linux-perf could not be installed: the profiles are left out"
	$(SWIFT) build -c release
	rm -f .build/bench-figures.txt .build/bench-figures.txt.profile
	CASEVAULT_BENCH_FIGURES=.build/bench-figures.txt .build/release/casevault-bench
	CASEVAULT_BENCH_FIGURES=.build/bench-figures.txt scripts/bench-socket.sh
	scripts/bench-slow-peers.sh
	CASEVAULT_BENCH_FIGURES=.build/bench-figures.txt scripts/bench-postgres.sh
	python3 scripts/secret-copies.py .build/release
	scripts/bench-summary.sh .build/bench-figures.txt

## soak: the SIGKILL crash test and both power-cut tests with many more cycles than make test runs (1,000, 500 and 500)
soak: deps powercutfs
	scripts/crash-soak.sh

## fuzz: libFuzzer with AddressSanitizer on every parser that meets bytes from outside (Sources/CaseVaultFuzz),
## FUZZ_SECONDS per target (default 60) from the seed corpus in Tests/fuzz-corpus; prints the inputs run and
## the corpus per target and the CPU time. A finding is kept in Tests/fuzz-corpus (so make test replays it)
## and fails the run. FUZZ_TARGETS names some targets only; scripts/fuzz.sh --merge keeps what the runs found.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	SWIFT="$(SWIFT)" scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## check-api: Schemathesis runs all of docs/openapi.yaml against a real casevaultd (debug build), through a loopback
## TCP bridge to its socket as the uid of each role, of none, and as the operator of a passphrase vault: 0 server
## errors, 0 responses that break the document, 0 refused requests that changed data (scripts/check-api.sh, as
## root, about 5 minutes; CHECK_API_* there tune it)
# Schemathesis (PyPI) is pinned and kept in a virtual environment under .build: Debian's python3 is externally managed.
SCHEMATHESIS_VERSION := 4.32.5
CHECK_API_VENV := .build/check-api-venv
check-api: deps
	@$(MAKE) --no-print-directory apt-install PACKAGES="python3 python3-venv curl util-linux"
	@$(CHECK_API_VENV)/bin/schemathesis --version 2>/dev/null | grep -q ' $(SCHEMATHESIS_VERSION)$$' || \
		{ python3 -m venv $(CHECK_API_VENV) && $(CHECK_API_VENV)/bin/python -m pip install --quiet 'schemathesis==$(SCHEMATHESIS_VERSION)'; }
	$(SWIFT) build
	SCHEMATHESIS=$(CHECK_API_VENV)/bin/schemathesis scripts/check-api.sh .build/debug

## install: release binaries, systemd units, sysusers/tmpfiles entries, shell completions, man pages, the docs, and
## the host configuration (only if none is there). PREFIX and DESTDIR as usual; BUILT names an existing
## build to install instead of building one (the tests use .build/debug).
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
BUILT ?= .build/release
BINDIR = $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR = $(PREFIX)/share/doc/casevault
install:
	@if [ "$(BUILT)" = ".build/release" ]; then $(MAKE) deps && $(SWIFT) build -c release; fi
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/casevault \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0755 $(BUILT)/casevaultd $(BUILT)/casevaultctl $(DESTDIR)$(BINDIR)/
	for unit in casevault.service casevault.socket casevault-sweep.service casevault-sweep.timer; do \
		sed -e 's#/usr/local/bin/#$(BINDIR)/#g' -e 's#/etc/casevault/#$(SYSCONFDIR)/casevault/#g' \
			-e 's#/usr/local/share/doc/casevault/#$(DOCDIR)/#g' systemd/$$unit > $(DESTDIR)$(UNITDIR)/$$unit; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit; \
	done
	install -m 0644 systemd/casevault.sysusers $(DESTDIR)$(SYSUSERSDIR)/casevault.conf
	install -m 0644 systemd/casevault.tmpfiles $(DESTDIR)$(TMPFILESDIR)/casevault.conf
	install -m 0644 README.md docs/openapi.yaml docs/API.md docs/ARCHITECTURE.md docs/SECURITY.md docs/OPERATIONS.md \
		docs/TESTING.md Config/casevault.toml Config/casevault-sweep.cron $(DESTDIR)$(DOCDIR)/
	@# An edited configuration is the operator's: never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/casevault/casevault.toml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/casevault/casevault.toml"; \
	else \
		install -m 0644 Config/casevault.host.toml $(DESTDIR)$(SYSCONFDIR)/casevault/casevault.toml; \
	fi
	$(BUILT)/casevaultctl --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/casevaultctl
	$(BUILT)/casevaultctl --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_casevaultctl
	$(BUILT)/casevaultctl --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/casevaultctl.fish
	$(BUILT)/casevaultd --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/casevaultd
	$(BUILT)/casevaultd --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_casevaultd
	$(BUILT)/casevaultd --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/casevaultd.fish
	$(BUILT)/casevaultctl --experimental-dump-help | $(BUILT)/casevault-manual --section 1 > $(DESTDIR)$(PREFIX)/share/man/man1/casevaultctl.1
	$(BUILT)/casevaultd --experimental-dump-help | $(BUILT)/casevault-manual --section 8 > $(DESTDIR)$(PREFIX)/share/man/man8/casevaultd.8
	chmod 0644 $(DESTDIR)$(PREFIX)/share/man/man1/casevaultctl.1 $(DESTDIR)$(PREFIX)/share/man/man8/casevaultd.8

clean:
	rm -rf .build .build-fuzz .build-asan .build-tsan .casevault
