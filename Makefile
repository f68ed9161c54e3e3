# rulelock — build and test.
#
#   make test    everything CI runs: set-up of external parts, gofmt, go vet, lint, go test -race
#   make lint    go mod tidy -diff (go.mod and go.sum tidy) and staticcheck at a pinned version
#   make build   the rulelock binary in ./bin
#   make fuzz    each fuzz target for FUZZTIME (default 30s)
#   make bench   the benchmarks in bench/ (see docs/benchmarks.md)

GO       ?= go
FUZZTIME ?= 30s
# staticcheck, pinned: the newest release that builds with this Go.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test setup fmt-check vet lint unit build fuzz bench

test: setup fmt-check vet lint unit

setup:
	@bash scripts/setup.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	cd internal/witness/testdata/interop && $(GO) vet ./...

lint:
	$(GO) mod tidy -diff
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 ./...
	cd internal/witness/testdata/interop && $(GO) test -race -count=1 ./...

build:
	$(GO) build -o bin/rulelock ./cmd/rulelock

fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

bench:
	cd bench && $(GO) test -run '^$$' -bench . -count 10 ./... | tee bench.out
