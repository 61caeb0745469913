# vigil: `make test` is what CI runs; `make demo` is the quickstart.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test deps fmt-check clippy unit demo demo-deps crds bench image

## Install what is missing, then formatting, lints with warnings denied, and every test.
test: deps fmt-check clippy unit

## Real components the tests use: Prometheus and promtool; buildah and the CA bundle for the
## image (tests/image.rs); Chromium, headless, for the HTML report (tests/report.rs). Debian's
## packages.
deps:
	@missing=""; \
	{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing="$$missing prometheus"; \
	command -v buildah >/dev/null || missing="$$missing buildah"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -s /etc/ssl/certs/ca-certificates.crt ] || missing="$$missing ca-certificates"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@prometheus --version 2>&1 | head -1
	@buildah --version
	@chromium --version

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets --locked -- -D warnings

# Benches are compiled by clippy --all-targets but not run here: figures come from `make bench`.
unit:
	$(CARGO) test --locked

## The controller's container image (FROM scratch, static binary, user 65532) as an OCI
## archive: target/vigil-image.tar. See deploy/image/build.sh.
image:
	deploy/image/build.sh --release --out target/vigil-image.tar

## Regenerate the CRDs in crds/ from the Rust types.
crds:
	$(CARGO) run --quiet -- crds --out crds/

## Criterion benches and the detection benchmark (release build; minutes).
bench:
	$(CARGO) bench

## The quickstart: a real canary release on this machine. Needs only Prometheus (not the
## test tools `deps` installs). Built with [profile.demo] (light optimisation): from a fresh
## clone 1659 s to the demo's end against 1897 s with --release (benches/README.md).
demo: demo-deps
	$(CARGO) run --quiet --profile demo -- demo

demo-deps:
	@{ command -v prometheus >/dev/null; } || { \
		echo "installing prometheus (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	}
	@prometheus --version 2>&1 | head -1
