# pverep — the README's two commands are `make demo` and `make test`.
# Everything installs itself: Debian packages (apt-get, only what is missing), a private
# virtualenv in .venv with the Python dependencies, and the Rust extension built by maturin.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Debian packages the lab, the tests and the benches need.
DEB_PACKAGES := zfs-fuse openssh-server openssh-client btrfs-progs iproute2 util-linux procps \
                cstream pv mbuffer nftables psmisc openssl
DEB_PACKAGES += mmdebstrap e2fsprogs  # the OpenZFS lab engine's guest image (pverep.lab.openzfs)
DEB_PACKAGES += python3 dpkg-dev binutils lintian systemd man-db  # make deb: target interpreter, dpkg-shlibdeps, strip; its test: lintian, systemd-analyze, man
DEB_PACKAGES += prometheus chromium  # promtool checks, the exporter scrape test, the report render

.PHONY: all sysdeps venv build test test-fast lint bench demo clean deb sysdeps-openzfs openzfs-image test-openzfs
all: build

sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The OpenZFS lab engine (tests/openzfs): QEMU from bookworm-backports, virtiofsd built by
# cargo into /var/cache/pverep/virtiofsd. Only `make test` needs it (not `make demo`).
OZ_FILES := python/pverep/lab/openzfs/files
test: sysdeps sysdeps-openzfs openzfs-image
sysdeps-openzfs:
	@$(OZ_FILES)/host-backports.sh
	@$(OZ_FILES)/build-virtiofsd.sh

# The guest image (cached; rebuilt only when its inputs change), with progress lines here
# rather than inside pytest's captured output.
openzfs-image: sysdeps build sysdeps-openzfs
	@$(PY) -m pverep.lab.openzfs.image

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.5,<2"
	touch $@

venv: $(VENV)/.stamp

# Editable install: python/ on the path, the extension built in release mode next to it.
build: venv
	$(VENV)/bin/maturin develop -q --release -E test

lint: build
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings
	$(VENV)/bin/ruff check python tests benches packaging
	$(VENV)/bin/ruff format --check python tests benches packaging
	$(VENV)/bin/mypy

# The Debian package for Proxmox VE 8 (Debian 12): dist/pverep_<version>_amd64.deb.
deb: sysdeps build
	$(PY) packaging/deb/build.py --out dist

test: sysdeps build deb
	cargo test -q -p pverep-core
	$(PY) -m mypy.stubtest pverep._core
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q

# The real-OpenZFS tier alone (QEMU guests; builds the cached guest image on first use).
test-openzfs: sysdeps build sysdeps-openzfs openzfs-image
	$(PY) -m pytest -q tests/openzfs

# Quick loop while developing: no lab, no lint.
test-fast: build
	$(PY) -m pytest -q -m "not lab and not deb and not openzfs"

# pytest-benchmark suites, then the standalone side-by-side comparisons (relays, rate-limit
# accuracy, parse+diff against pure Python); each prints its verdicts. A few minutes in all.
bench: sysdeps build
	$(PY) -m pytest -q benches --benchmark-only --benchmark-enable
	$(PY) benches/compare_relays.py --rounds 3
	$(PY) benches/compare_parse.py --rounds 3
	$(PY) benches/compare_budget.py --rounds 3
	$(PY) benches/compare_cycle.py

# Mutation testing of the core (tools/mutants.sh; not part of `make test`/CI, it is long).
# The tools are pinned and installed here, so it runs on a fresh machine.
.PHONY: mutants
MUTMUT_VERSION        := 3.8.1
CARGO_MUTANTS_VERSION := 27.1.0
mutants: sysdeps build
	$(PIP) install -q "mutmut==$(MUTMUT_VERSION)"
	@# A Python-only run needs no cargo-mutants (its install takes minutes).
	@[ "$(MUTANTS_ONLY)" = python ] || \
	  .tools/bin/cargo-mutants mutants --version 2>/dev/null | grep -qx "cargo-mutants $(CARGO_MUTANTS_VERSION)" || \
	  nice -n 10 cargo install -q --locked --version $(CARGO_MUTANTS_VERSION) --root .tools cargo-mutants
	bash tools/mutants.sh

demo: sysdeps build
	$(PY) -m pverep.demo

clean:
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache
