# gearshard — `make run` starts a server on 127.0.0.1:4730, `make test` runs every test.
# `make help` lists the targets.

GO        ?= go
BIN       := bin/gearshard
PKGS      := ./...
# Debian packages the tests talk to: real Gearman clients/workers, gearadmin, gearmand.
DEB_PKGS  := gearman-tools libgearman-client-perl gearman-job-server php-cli php-gearman postgresql mariadb-server redis-server memcached curl openssl prometheus chromium iproute2
# Executions (Nx), not a duration: Go 1.26's fuzz coordinator can fail a
# duration-bound run with "context deadline exceeded" (go.dev/issue/75804).
FUZZTIME  ?= 1000000x
DURATION  ?= 2m

# `make run -- -r http --http-port 8080`: words after `run` are server flags
# (give values after a space: a word with `=` is a make variable). The
# catch-all rule keeps make from building those words, colons and all.
ifeq (run,$(firstword $(MAKECMDGOALS)))
  RUN_ARGS := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
  ifneq ($(RUN_ARGS),)
%::
	@:
  endif
endif

.DEFAULT_GOAL := help
.PHONY: help build run test deps vet bench fuzz bench-compare bench-persist soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/gearshard
	$(GO) build -o $(BIN) ./cmd/gearshard

# Defaults for the flags `make run --` did not give: the server refuses a
# flag given twice, as gearmand does.
RUN_DEFAULTS = $(if $(filter -L --listen,$(RUN_ARGS)),,-L 127.0.0.1) \
	$(if $(filter -p --port,$(RUN_ARGS)),,-p 4730) \
	$(if $(filter -l --log-file,$(RUN_ARGS)),,-l stderr) \
	$(if $(filter --verbose,$(RUN_ARGS)),,--verbose INFO)

run: build ## build and start a server on 127.0.0.1:4730, logging to stderr
	./$(BIN) $(strip $(RUN_DEFAULTS)) $(RUN_ARGS)

deps: ## install the Debian packages the tests need (as root), when missing
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" -ne 0 ]; then echo "deps: run as root to install: $$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags screenshot ./netio/monitor/

test: deps vet ## install what the tests need, then run every test with the race detector
	$(GO) test -race -count=1 $(PKGS)

bench: ## hot-path Go benchmarks (wire + engine), with allocations
	$(GO) test -run '^$$' -bench . -benchmem ./wire/ ./engine/

fuzz: ## run each fuzz target for FUZZTIME executions (default 1000000x)
	@for pkg in ./wire/ ./netio/ ./engine/; do for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
		echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done; done

soak: build ## mixed load with faults against a fresh server for DURATION (default 2m)
	./$(BIN) bench soak -d $(DURATION) --server-cmd "./$(BIN) -L 127.0.0.1 -p {port} -l none"

bench-persist: deps ## persisted background submissions vs gearmand per store, servers started here (~2 min)
	PERSIST_OUT=$(CURDIR)/bench/persist-table.md $(GO) test -run '^$$' -bench PersistedVsGearmand -benchtime 1x ./bench/

bench-compare: deps build bench-persist ## gearshard vs Debian's gearmand, standard scenarios, into bench/RESULTS.md (~17 min)
	./$(BIN) bench suite --rounds 3 -o bench/RESULTS.md
	@{ echo; echo '## Go benchmarks: engine hot path and shard scaling'; echo; \
	   echo 'Reproduce: `go test -run ^$$ -bench . -benchmem ./engine/ ./wire/`'; echo; echo '```'; \
	   $(GO) test -run '^$$' -bench 'JobCycle|GrabRotation|Backlog|Drain|ShardsParallel|AdminStatus|Decode|Append' -benchmem -count 3 ./engine/ ./wire/ | grep -E '^(Benchmark|cpu|goos)'; \
	   echo '```'; echo; bench/engine-scaling.sh $(GO) 5; \
	   cat bench/limits.md bench/persist.md bench/persist-table.md; } >> bench/RESULTS.md
	@echo "wrote bench/RESULTS.md"
