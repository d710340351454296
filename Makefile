# Build and install the telemetrics suite.
#
#   make                       cargo build --release
#   make install               build if needed, then install under PREFIX (default /usr)
#   make install PREFIX=/usr DESTDIR=/tmp/stage
#   make install TARGET_DIR=/path/to/target/release    install prebuilt files, build nothing
#   make post-install          after `make install` on the running host: create the telemetry
#                              user and directories, apply the core pattern, enable the units
#   make uninstall             disable and stop the units (on the running host), then remove
#                              the files `make install` laid out
#   make deb                   build the Debian packages into target/debian (packaging/build-deb)
#   make check                 install what the tests need (Debian: apt-get, pip), then run
#                              the format, lint and test commands CI runs (scripts/check)
#
# Installed: the suite's binaries found in TARGET_DIR, libtelemetry.so.4.0.1 (linked by
# libtelemetry-ffi/install.sh from TARGET_DIR/libtelemetry.a) with its libtelemetry.so.4
# and libtelemetry.so links, telemetry.h, libtelemetry.pc, the systemd
# units, the sysctl.d / system.conf.d / tmpfiles.d / sysusers.d files, the man pages and the
# distribution's default telemetrics.conf. Unit files and the core pattern name programs
# under $(BINDIR).

PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DEFAULTSDIR ?= $(DATADIR)/defaults/telemetrics
SYSTEMDDIR ?= $(PREFIX)/lib/systemd
UNITDIR ?= $(SYSTEMDDIR)/system
SYSTEMCONFDIR ?= $(SYSTEMDDIR)/system.conf.d
SYSCTLDIR ?= $(PREFIX)/lib/sysctl.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DESTDIR ?=

# `make uninstall` stops and disables the units first, on the running host only: not when
# removing a staged DESTDIR (set SYSTEMD_SETUP=yes/no to decide explicitly).
SYSTEMD_SETUP ?= $(if $(DESTDIR),no,yes)
SETUP_ENV = SYSUSERSDIR="$(DESTDIR)$(SYSUSERSDIR)" TMPFILESDIR="$(DESTDIR)$(TMPFILESDIR)" \
	SYSCTLDIR="$(DESTDIR)$(SYSCTLDIR)" UNITDIR="$(DESTDIR)$(UNITDIR)"

CARGO ?= cargo
INSTALL ?= install

# Every binary of the suite; those missing from TARGET_DIR are skipped.
BINARIES = telemprobd telempostd telemctl hprobe telem-record-gen crashprobe \
	klogscanner pstoreclean pstoreprobe journalprobe mceprobe thermalprobe swupdprobe

# Without TARGET_DIR, build the release profile first (honouring CARGO_TARGET_DIR).
ifeq ($(origin TARGET_DIR),undefined)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release
BUILD_FIRST := build
endif

UNITS = $(wildcard systemd/*.service systemd/*.socket systemd/*.path systemd/*.timer systemd/*.target)
MANPAGES = $(wildcard man/*.[1-9])

.PHONY: all build install post-install uninstall deb check

all: build

build:
	$(CARGO) build --release --workspace

install: $(BUILD_FIRST)
	@test -d "$(TARGET_DIR)" || { echo "TARGET_DIR $(TARGET_DIR) does not exist" >&2; exit 1; }
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)"
	@for b in $(BINARIES); do \
		if [ -f "$(TARGET_DIR)/$$b" ]; then \
			echo "$(INSTALL) -m 0755 $(TARGET_DIR)/$$b $(DESTDIR)$(BINDIR)/$$b"; \
			$(INSTALL) -m 0755 "$(TARGET_DIR)/$$b" "$(DESTDIR)$(BINDIR)/$$b" || exit 1; \
		fi; \
	done
	@if [ -f "$(TARGET_DIR)/libtelemetry.a" ]; then \
		sh libtelemetry-ffi/install.sh --prefix "$(PREFIX)" --libdir "$(LIBDIR)" \
			--destdir "$(DESTDIR)" --lib "$(TARGET_DIR)/libtelemetry.a" || exit 1; \
	else \
		echo "note: $(TARGET_DIR)/libtelemetry.a not found; libtelemetry not installed"; \
	fi
	$(INSTALL) -d "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSTEMCONFDIR)" "$(DESTDIR)$(SYSCTLDIR)" \
		"$(DESTDIR)$(TMPFILESDIR)" "$(DESTDIR)$(SYSUSERSDIR)" "$(DESTDIR)$(DEFAULTSDIR)"
	@for u in $(UNITS); do \
		sed 's|/usr/bin/|$(BINDIR)/|g' "$$u" > "$(DESTDIR)$(UNITDIR)/$${u##*/}" && \
		chmod 0644 "$(DESTDIR)$(UNITDIR)/$${u##*/}" || exit 1; \
	done
	sed 's|/usr/bin/|$(BINDIR)/|g' systemd/sysctl.d/40-crash-probe.conf \
		> "$(DESTDIR)$(SYSCTLDIR)/40-crash-probe.conf"
	$(INSTALL) -m 0644 systemd/system.conf.d/40-core-ulimit.conf "$(DESTDIR)$(SYSTEMCONFDIR)/"
	$(INSTALL) -m 0644 systemd/tmpfiles.d/telemetrics-dirs.conf "$(DESTDIR)$(TMPFILESDIR)/"
	$(INSTALL) -m 0644 systemd/sysusers.d/telemetrics.conf "$(DESTDIR)$(SYSUSERSDIR)/"
	$(INSTALL) -m 0644 etc/telemetrics.conf "$(DESTDIR)$(DEFAULTSDIR)/telemetrics.conf"
	@for m in $(MANPAGES); do \
		s=$${m##*.}; \
		$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man$$s" && \
		$(INSTALL) -m 0644 "$$m" "$(DESTDIR)$(MANDIR)/man$$s/" || exit 1; \
	done

# The steps the Debian package's postinst takes, for a `make install` on the running host.
post-install:
	$(SETUP_ENV) sh packaging/systemd-setup post-install

# Without TARGET_DIR, `cargo build --release` first, as for install.
deb: $(BUILD_FIRST)
	packaging/build-deb --no-build --target-dir "$(TARGET_DIR)"

check:
	scripts/check

uninstall:
ifeq ($(SYSTEMD_SETUP),yes)
	$(SETUP_ENV) sh packaging/systemd-setup pre-uninstall
endif
	rm -f $(addprefix "$(DESTDIR)$(BINDIR)/,$(addsuffix ",$(BINARIES)))
	rm -f "$(DESTDIR)$(LIBDIR)/libtelemetry.so" "$(DESTDIR)$(LIBDIR)/libtelemetry.so.4" \
		"$(DESTDIR)$(LIBDIR)/libtelemetry.so.4.0.1" "$(DESTDIR)$(LIBDIR)/pkgconfig/libtelemetry.pc" \
		"$(DESTDIR)$(PREFIX)/include/telemetry.h"
	rm -f $(foreach u,$(UNITS),"$(DESTDIR)$(UNITDIR)/$(notdir $(u))")
	rm -f "$(DESTDIR)$(SYSCTLDIR)/40-crash-probe.conf" "$(DESTDIR)$(SYSTEMCONFDIR)/40-core-ulimit.conf" \
		"$(DESTDIR)$(TMPFILESDIR)/telemetrics-dirs.conf" "$(DESTDIR)$(SYSUSERSDIR)/telemetrics.conf" \
		"$(DESTDIR)$(DEFAULTSDIR)/telemetrics.conf"
	rm -f $(foreach m,$(MANPAGES),"$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m))")
ifeq ($(SYSTEMD_SETUP),yes)
	$(SETUP_ENV) sh packaging/systemd-setup post-uninstall
endif
