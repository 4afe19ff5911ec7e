# custos — build, test, benchmark.
GO        ?= go
TAGS      ?= nobadger,nomysql,nopgx
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
TEST_TIMEOUT ?= 20m
BENCHTIME ?= 10s

.PHONY: all build test fmt-check vet staticcheck unit bench tools run

all: build

build:
	$(GO) build -tags $(TAGS) ./...
	$(GO) build -tags $(TAGS) -o custos ./cmd/custos

tools: $(STATICCHECK)

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags $(TAGS) ./...

staticcheck: $(STATICCHECK)
	$(STATICCHECK) -tags $(TAGS) ./...

unit:
	$(GO) test -tags $(TAGS) -race -timeout $(TEST_TIMEOUT) ./...

test: fmt-check vet staticcheck unit

# bench: first every workload of the performance table on a durable
# 3-node cluster over HTTPS (node/clusterbench_test.go), then the package
# benchmarks.
bench:
	$(GO) test -tags $(TAGS) -run '^$$' -bench '^BenchmarkCluster$$' -benchtime $(BENCHTIME) -timeout 30m ./node/
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -skip '^BenchmarkCluster$$' -benchtime 3s ./...

run:
	$(GO) run -tags $(TAGS) ./cmd/custos server --dev
