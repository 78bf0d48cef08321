# The two commands a fresh machine needs: `make run` and `make test`. Both install what is missing: `make run` what
# running robin needs, `make test` that and what only the tests need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ROBIN := $(VENV)/bin/robin
# What running robin on a dev cluster needs (the FUSE clients and mkfs: /v1 activation and the gateway mount volumes).
RUN_DEBIAN_PACKAGES := ceph-mon ceph-osd ceph-mgr ceph-mds ceph-common python3-rados python3-rbd python3-cephfs \
                       ceph-fuse rbd-fuse fuse python3-venv e2fsprogs xfsprogs
# What only the tests need: PostgreSQL (--db=all), Chromium (the dashboard's browser tests), GlusterFS (the migration's).
TEST_DEBIAN_PACKAGES := postgresql chromium glusterfs-server glusterfs-client
# The Ceph bindings exist only for Debian's interpreter, hence this python and --system-site-packages.
SYSTEM_PYTHON := /usr/bin/python3
PORT ?= 8080

.PHONY: bootstrap run test bench bench-provisioner bench-migrate clean .run-debian-packages .test-debian-packages

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

# Idempotent and quick when everything is there: dpkg is asked before apt is.
define install-debian-packages
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing from Debian: $$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

.run-debian-packages:
	$(call install-debian-packages,$(RUN_DEBIAN_PACKAGES))

.test-debian-packages:
	$(call install-debian-packages,$(TEST_DEBIAN_PACKAGES))

# Dev cluster + SQLite + the API on http://127.0.0.1:$(PORT), with an admin token printed.
run: $(VENV)/.installed
	$(ROBIN) dev-cluster up
	$(ROBIN) db upgrade
	@token=$$($(ROBIN) token create --admin --name make-run); \
	echo; echo "robin serves http://127.0.0.1:$(PORT)  (OpenAPI UI: http://127.0.0.1:$(PORT)/api/v2/docs)"; \
	echo "admin token: $$token"; \
	echo "try: curl -s -H 'Authorization: Bearer $$token' -H 'Content-Type: application/json' \\"; \
	echo "       -d '{\"name\": \"demo\", \"quota\": {\"max_bytes\": 10737418240, \"max_volumes\": 10, \"max_snapshots\": 10}}' \\"; \
	echo "       http://127.0.0.1:$(PORT)/api/v2/projects"; echo
	$(ROBIN) serve --port $(PORT)

# The whole suite against a dev cluster and PostgreSQL that the test session starts and stops itself,
# once on SQLite and once on PostgreSQL.
test: bootstrap
	$(VENV)/bin/ruff check robin csi_shim tests benchmarks
	$(PY) -m pytest --db=all $(PYTEST_ARGS)

bench: bootstrap
	$(PY) benchmarks/api_vs_binding.py

bench-provisioner: bootstrap
	$(PY) benchmarks/provisioner.py

bench-migrate: bootstrap
	$(PY) benchmarks/migrate.py

clean:
	rm -rf $(VENV) *.egg-info build dist
