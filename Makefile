# Targets for the container image and the multi-host tests. The everyday
# commands need no make: `go run ./cmd/share serve` and `go test ./...`.
IMAGE ?= share:latest
GO ?= go
CONTEXT := build/image

.PHONY: image e2e test clean

# image builds a static binary and an image FROM scratch: no registry needed.
image:
	rm -rf $(CONTEXT)
	mkdir -p $(CONTEXT)/etc $(CONTEXT)/data $(CONTEXT)/shared $(CONTEXT)/tmp
	chmod 1777 $(CONTEXT)/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(CONTEXT)/share ./cmd/share
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(CONTEXT)/natrouter ./cmd/share/internal/netem/natrouter
	printf 'root:x:0:0:root:/:/share\nshare:x:10001:10001:share:/data:/share\n' > $(CONTEXT)/etc/passwd
	printf 'root:x:0:\nshare:x:10001:\n' > $(CONTEXT)/etc/group
	docker build -q -t $(IMAGE) -f Dockerfile $(CONTEXT)

# e2e runs both docker-compose clusters and breaks them (see cmd/share/internal/e2e).
e2e: image
	SHARE_IMAGE=$(IMAGE) $(GO) test -tags e2e -count=1 -timeout 20m -v ./cmd/share/internal/e2e

test:
	$(GO) test ./...

clean:
	rm -rf build
