# Hearth: the build is Meson + Ninja; this file is the front door.
#   make        build (build/hearth)
#   make run    install missing packages, build, start on :8080 / :1935 with SQLite
#   make test   install what tests need, build, run unit, sanitizer and end-to-end tests
#   make bench  the side-by-side benchmarks in bench/

BUILD      ?= build
ASAN_BUILD ?= build-asan
PYTHON     ?= /usr/bin/python3
PYTEST_ARGS ?=

.PHONY: all build run test unit asan e2e browser bench clean fuzz

all: build

build: web/dist/.built
	@scripts/deps build
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) --buildtype=debugoptimized
	ninja -C $(BUILD)

# The front end: TypeScript + Vite into web/dist, which the server serves.
WEB_SRC := $(wildcard web/src/*) $(wildcard web/src/*/*) $(wildcard web/*.html) web/vite.config.ts web/tsconfig.json

web/node_modules/.installed: web/package.json web/package-lock.json
	@scripts/deps build
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SRC)
	cd web && npm run --silent build
	touch $@

run:
	@scripts/deps run
	@$(MAKE) --no-print-directory build
	./$(BUILD)/hearth serve

unit: build
	meson test -C $(BUILD) --print-errorlogs

asan:
	@scripts/deps test
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs

e2e: build
	HEARTH_BIN=$(CURDIR)/$(BUILD)/hearth $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

browser: build
	HEARTH_BIN=$(CURDIR)/$(BUILD)/hearth HEARTH_HTTP_STATIC_DIR=$(CURDIR)/web/dist tests/browser/run

test:
	@scripts/deps test
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory e2e
	@$(MAKE) --no-print-directory browser

# Each benchmark runs Hearth and its peer side by side and prints the ratio.
# (bench/chat takes about 15 minutes: BENCHES=chat runs it alone.)
BENCHES ?= http ingest availability viewers latency chat
bench:
	@scripts/deps bench
	@$(MAKE) --no-print-directory build
	@for b in $(BENCHES); do \
		x=bench/$$b; [ -d $$x ] && x=$$x/run; [ -f $$x ] && [ -x $$x ] || continue; \
		echo "== $$x"; $$x || exit 1; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) web/dist web/node_modules

# Fuzz every network parser for FUZZ_SECONDS each (clang + libFuzzer).
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/deps build
	@[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) --buildtype=debugoptimized -Dfuzz=true -Db_lundef=false
	ninja -C $(FUZZ_BUILD)
	@for t in $(FUZZ_BUILD)/fuzz/fuzz_*; do \
		[ -x "$$t" ] || continue; echo "== $$t"; \
		mkdir -p $(FUZZ_BUILD)/corpus/$$(basename $$t); \
		$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$(basename $$t) $$( [ -d fuzz/seeds/$$(basename $$t) ] && echo fuzz/seeds/$$(basename $$t) ) 2>&1 | tail -3 || exit 1; \
	done
