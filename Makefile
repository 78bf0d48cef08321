# The two commands a fresh machine needs: `make run` and `make test`. Both install what is missing: `make run` what
# running robin needs, `make test` that and what only the tests need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ROBIN := $(VENV)/bin/robin
# What running robin on a dev cluster needs (the FUSE clients and mkfs: /v1 activation and the gateway mount volumes).
RUN_DEBIAN_PACKAGES := ceph-mon ceph-osd ceph-mgr ceph-mds ceph-common python3-rados python3-rbd python3-cephfs \
                       ceph-fuse rbd-fuse fuse python3-venv e2fsprogs xfsprogs
# What only the tests need: PostgreSQL (--db=all), Chromium (the dashboard's browser tests), GlusterFS (the migration's),
# getfacl/setfacl and getfattr/setfattr (the migration tests read and set ACLs and attributes as a user would).
TEST_DEBIAN_PACKAGES := postgresql chromium glusterfs-server glusterfs-client acl attr \
                        podman buildah runc debootstrap
# The Ceph bindings exist only for Debian's interpreter, hence this python and --system-site-packages.
SYSTEM_PYTHON := /usr/bin/python3
PORT ?= 8080

.PHONY: bootstrap run test bench bench-provisioner bench-migrate bench-scale bench-load clean .run-debian-packages .test-debian-packages \
        image base-image container-engine

# A development checkout: robin editable with the test tools ([dev]), and every Debian package either needs.
bootstrap: $(VENV)/.installed-dev

# Only what `make run` needs: robin editable, without the [dev] extras.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml csi_shim/csi.proto | .run-debian-packages
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed | .test-debian-packages
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Idempotent and quick when everything is there: dpkg is asked before apt is. $(2), packages already installed that
# must stay, is named to apt too: podman recommends fuse-overlayfs, whose fuse3 conflicts with the run set's fuse, and
# apt drops a recommendation rather than remove a package named on its command line.
define install-debian-packages
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing from Debian: $$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing $(2) >/dev/null; \
	fi
endef

.run-debian-packages:
	$(call install-debian-packages,$(RUN_DEBIAN_PACKAGES))

.test-debian-packages:
	$(call install-debian-packages,$(TEST_DEBIAN_PACKAGES),$(RUN_DEBIAN_PACKAGES))

# Dev cluster + SQLite + the API on http://127.0.0.1:$(PORT), with an admin token printed.
run: $(VENV)/.installed
	$(ROBIN) dev-cluster up
	$(ROBIN) db upgrade
	@token=$$($(ROBIN) token create --direct --admin --name make-run); \
	echo; echo "robin serves http://127.0.0.1:$(PORT)  (OpenAPI UI: http://127.0.0.1:$(PORT)/api/v2/docs)"; \
	echo "admin token: $$token"; \
	echo "try: curl -s -H 'Authorization: Bearer $$token' -H 'Content-Type: application/json' \\"; \
	echo "       -d '{\"name\": \"demo\", \"quota\": {\"max_bytes\": 10737418240, \"max_volumes\": 10, \"max_snapshots\": 10}}' \\"; \
	echo "       http://127.0.0.1:$(PORT)/api/v2/projects"; echo
	$(ROBIN) serve --port $(PORT)

# The whole suite against a dev cluster and PostgreSQL that the test session starts and stops itself,
# once on SQLite and once on PostgreSQL (the CSI, Kubernetes and migration tests on PostgreSQL only: tests/conftest.py).
# The 25 slowest setups, calls and teardowns close the output: where the suite's time goes.
test: bootstrap
	$(VENV)/bin/ruff check robin csi_shim tests benchmarks
	$(PY) -m pytest --db=all --durations=25 $(PYTEST_ARGS)

bench: bootstrap
	$(PY) benchmarks/api_vs_binding.py

bench-provisioner: bootstrap
	$(PY) benchmarks/provisioner.py

bench-migrate: bootstrap
	$(PY) benchmarks/migrate.py

# A fleet of 10,000 images + 10,000 CephFS paths (about 20 minutes on 2 cores); a quick proof:
# `make bench-scale BENCH_ARGS="--count 200 --claims 50"`. Arguments: benchmarks/README.md.
bench-scale: bootstrap
	$(PY) benchmarks/scale.py $(BENCH_ARGS)

# Reads and writes under concurrency: two replicas on PostgreSQL, one on SQLite, the bare app and the raw call.
bench-load: bootstrap
	$(PY) benchmarks/load.py $(BENCH_ARGS)

# --- The container image (Containerfile; docs/container-image.md) ------------------------------------------------
CONTAINER_ENGINE ?= podman
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE ?= robin:$(VERSION)
# The image's org.opencontainers.image.source label: the repository it is built from.
IMAGE_SOURCE ?= $(shell git remote get-url origin 2>/dev/null)
# The Containerfile's base. Where Docker Hub is reachable it is pulled; where no registry is (these CI machines),
# it is made from Debian's archive with debootstrap, once per machine.
BASE_IMAGE := docker.io/library/debian:bookworm-slim
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBIAN_SECURITY_MIRROR ?= http://deb.debian.org/debian-security
BUILD_DIR := $(CURDIR)/build

# Rootful podman's defaults fail on a host that withholds CAP_SYS_RESOURCE (the CI VMs, whose cgroups are also
# hybrid): a container's default open-files limit (1048576) is above the host's hard limit and cannot be raised.
# There, podman runs with no default ulimits (a containers.conf saying so), runc and cgroupfs; elsewhere, and for
# rootless podman (whose default is the user's own limit), as it is.
ifeq ($(CONTAINER_ENGINE),podman)
ifneq ($(shell [ "$$(id -u)" != 0 ] || sh -c 'ulimit -Hn 1048576' 2>/dev/null && echo fine),fine)
PODMAN_CONF := $(BUILD_DIR)/podman/containers.conf
CONTAINER_ENGINE_ENV ?= CONTAINERS_CONF=$(PODMAN_CONF)
CONTAINER_ENGINE_FLAGS ?= --runtime runc --cgroup-manager cgroupfs
endif
endif
ENGINE = $(CONTAINER_ENGINE_ENV) $(CONTAINER_ENGINE) $(CONTAINER_ENGINE_FLAGS)

# The CA bundle the build's pip trusts besides Debian's: the one this machine's pip does (PIP_CERT), for a proxy that
# re-signs TLS; handed in as a build secret, so no layer keeps it.
PIP_CA_BUNDLE ?= $(PIP_CERT)
comma := ,

image: base-image
	$(ENGINE) build --file Containerfile --tag $(IMAGE) \
	    --build-arg VERSION=$(VERSION) --build-arg SOURCE_URL=$(IMAGE_SOURCE) \
	    $(if $(PIP_CA_BUNDLE),--secret id=pip-ca$(comma)src=$(PIP_CA_BUNDLE)) .

# The base image, when it is not there: pulled, or else made by debootstrap (as root) the way Debian's own slim
# image is (minbase, no apt lists or package cache, the bookworm, -updates and -security suites).
base-image: $(PODMAN_CONF)
	@$(ENGINE) image inspect $(BASE_IMAGE) >/dev/null 2>&1 || $(ENGINE) pull $(BASE_IMAGE) || { \
	    set -e; rootfs=$$(mktemp -d /tmp/robin-rootfs.XXXXXX); trap 'rm -rf "$$rootfs" "$$rootfs.log"' EXIT; \
	    echo "no registry has $(BASE_IMAGE): making it with debootstrap from $(DEBIAN_MIRROR) (about 2 minutes)"; \
	    debootstrap --variant=minbase bookworm "$$rootfs" $(DEBIAN_MIRROR) >"$$rootfs.log" 2>&1 \
	        || { tail -20 "$$rootfs.log"; exit 1; }; \
	    rm -f "$$rootfs"/etc/apt/sources.list "$$rootfs"/var/cache/apt/archives/*.deb "$$rootfs"/var/lib/apt/lists/*_*; \
	    printf '%s\n' 'Types: deb' 'URIs: $(DEBIAN_MIRROR)' 'Suites: bookworm bookworm-updates' 'Components: main' \
	        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' '' 'Types: deb' \
	        'URIs: $(DEBIAN_SECURITY_MIRROR)' 'Suites: bookworm-security' 'Components: main' \
	        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
	        >"$$rootfs"/etc/apt/sources.list.d/debian.sources; \
	    tar -C "$$rootfs" -c . | $(ENGINE) import --change 'CMD ["bash"]' - $(BASE_IMAGE); }

# How this machine runs the engine (environment, command, flags), one line: what the image tests run it with.
container-engine: $(PODMAN_CONF)
	@echo $(ENGINE)

$(BUILD_DIR)/podman/containers.conf:
	mkdir -p $(@D)
	printf '[containers]\ndefault_ulimits = []\n' >$@

# The image tests' builds (tests/image) go too; one a container still uses stays.
clean:
	-command -v $(CONTAINER_ENGINE) >/dev/null && $(CONTAINER_ENGINE) $(CONTAINER_ENGINE_FLAGS) images \
	    --format '{{.Repository}}:{{.Tag}}' localhost/robin-test | xargs -r $(CONTAINER_ENGINE) \
	    $(CONTAINER_ENGINE_FLAGS) rmi
	rm -rf $(VENV) *.egg-info build dist
