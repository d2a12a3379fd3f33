# plantsync — build, run, test.
#   make run      build everything and start hub, agent, plant simulator, sandbox ERP
#   make test     unit + integration tests (race detector), Go only
#   make interop  tests against third-party peers (mosquitto, node-opcua, Tryton)
#   make bench    benchmarks (separate processes, mTLS, fsync; BENCHFLAGS="-runs 5" etc.)
#   make bench-mqtt  the MQTT source through mosquitto and mochi (MQTTBENCHFLAGS="-n 200000")
#   make proto    regenerate committed protobuf code with pinned generators
#   make package  .deb and .rpm of agent and hub in dist/ (nfpm, a pinned Go tool)
#   make image    the hub container image as an OCI tarball in dist/ (no daemon needed)

GO        ?= go
BIN       := bin
STATE     ?= .state
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X github.com/plantsync/plantsync/internal/buildinfo.Version=$(VERSION) \
             -X github.com/plantsync/plantsync/internal/buildinfo.Commit=$(COMMIT) \
             -X github.com/plantsync/plantsync/internal/buildinfo.Date=$(DATE)
export CGO_ENABLED := 0

.PHONY: all build run test interop bench bench-mqtt proto proto-check package image clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plantsync-agent ./agent/cmd/plantsync-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plantsync-hub ./hub/cmd/plantsync-hub
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plantsim ./sim/cmd/plantsim
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandboxerp ./sim/cmd/sandboxerp
	@mkdir -p $(BIN)/plugins
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plugins/webhook ./plugins/webhook
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plugins/tryton ./plugins/tryton
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plugins/filedrop ./plugins/filedrop

run: build
	$(GO) run ./internal/cmd/demo -bin $(BIN) -state $(STATE) -configs configs

# The race detector needs cgo.
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

interop:
	bash scripts/interop.sh

bench: build
	$(GO) run ./e2e/cmd/bench -bin $(BIN) $(BENCHFLAGS)

bench-mqtt: build
	bash scripts/ensure-apt-packages.sh mosquitto
	$(GO) run ./e2e/cmd/mqttbench -bin $(BIN) $(MQTTBENCHFLAGS)

PROTO_FILES := $(wildcard proto/plantsync/v1/*.proto)
# The host <-> connector plugin protocol (plugins/sdk); imports plantsync/v1.
PLUGIN_PROTO_FILES := $(wildcard proto/plantsync/plugin/v1/*.proto)
# Third-party wire contracts the agent decodes (no services, so no gRPC code).
PROTO_MSG_FILES := $(wildcard proto/sparkplug/*.proto)

proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler libprotobuf-dev" >&2; exit 1; }
	@mkdir -p $(BIN)/tools
	$(GO) build -o $(BIN)/tools/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(BIN)/tools/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH="$(CURDIR)/$(BIN)/tools:$$PATH" protoc -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTO_FILES)
	PATH="$(CURDIR)/$(BIN)/tools:$$PATH" protoc -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PLUGIN_PROTO_FILES)
	PATH="$(CURDIR)/$(BIN)/tools:$$PATH" protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		$(PROTO_MSG_FILES)

# Fails when the committed generated code differs from what `make proto` makes,
# including generated files git does not track yet (a new .proto whose .pb.go
# was never added). GIT_OPTIONAL_LOCKS=0: a read-only check must not take the
# index lock from a concurrent git command.
proto-check: proto
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "proto-check: not a git work tree; it compares generated code against git" >&2; exit 1; }
	@changes="$$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=all -- proto/)"; \
	if [ -n "$$changes" ]; then \
		echo "generated protobuf code is stale or uncommitted: run 'make proto' and commit proto/" >&2; \
		echo "$$changes" >&2; \
		GIT_OPTIONAL_LOCKS=0 git --no-pager diff -- proto/ >&2; \
		exit 1; \
	fi

# Packaging (packaging/README.md). The script checks that the binaries carry
# VERSION and COMMIT and writes the shipped plugins' checksums into the
# packaged example configs.
DIST      := dist
PKGENV     = VERSION='$(VERSION)' COMMIT='$(COMMIT)' DATE='$(DATE)' GO='$(GO)' BIN='$(BIN)'

package: build
	$(PKGENV) bash packaging/package.sh packages

# FROM scratch, built with go-containerregistry; packaging/container/Dockerfile
# describes the same image, and dist/image-context/ is its build context.
image: build
	$(PKGENV) bash packaging/package.sh stage
	rm -f $(DIST)/plantsync-hub-*.oci.tar
	$(GO) run ./packaging/container -stage $(DIST)/stage/hub -version '$(VERSION)' -commit '$(COMMIT)' -created '$(DATE)' \
		-out $(DIST)/plantsync-hub-$(VERSION)-$$($(GO) env GOARCH).oci.tar -context $(DIST)/image-context

clean:
	rm -rf $(BIN)
