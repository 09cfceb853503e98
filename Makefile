# CaseVault: `make run` and `make test` set up what is missing (as root on Debian), then build.
SWIFT ?= swift
APT_PACKAGES := libsodium-dev libsqlite3-dev pkg-config systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build run test bench soak clean

## deps: install the apt packages the build needs, only if one is missing
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

## run: start casevaultd in the foreground on the embedded default under .casevault/
run: build
	$(SWIFT) run casevaultd --config Config/casevault.toml

## test: every test, against real files, real libsodium and real processes killed with SIGKILL
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test

## bench: release build, prints throughput figures (no pass/fail): the store, then over the socket vs nginx
bench: deps
	$(SWIFT) build -c release
	.build/release/casevault-bench
	scripts/bench-socket.sh

## soak: the SIGKILL crash test with many more cycles than make test runs
soak: deps
	scripts/crash-soak.sh

clean:
	rm -rf .build .casevault
