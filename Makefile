# fosr-collector build.  `make` builds ./fosr-collector; `make run` and `make check`
# are the README's two commands.  Everything lands under build/ except the daemon.

PKGS      := libevent_core libevent_extra libevent_openssl libevent_pthreads libssl libcrypto yaml-0.1 libcares libpcre2-8 libseccomp libidn2 gmime-3.0 libmagic gumbo librabbitmq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lfuzzy -lpthread -lm

CC       ?= cc
WARN     := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wvla -Wimplicit-fallthrough -Wno-unused-parameter
BASE     := -std=c11 -D_GNU_SOURCE -iquote src -iquote build/gen $(WARN) $(PKG_CFLAGS)
HARDEN   := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
HARDEN_LD:= -pie -Wl,-z,relro,-z,now
SAN      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZCC   ?= clang
NPROC    := $(shell nproc 2>/dev/null || echo 2)

SRC      := $(wildcard src/*.c)
LIBSRC   := $(filter-out src/main.c,$(SRC))
HDR      := $(wildcard src/*.h)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_HDR := $(wildcard tests/unit/*.h)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)

REL_OBJ  := $(patsubst src/%.c,build/rel/%.o,$(SRC))
ASAN_OBJ := $(patsubst src/%.c,build/asan/%.o,$(SRC))
REL_LIB  := $(filter-out build/rel/main.o,$(REL_OBJ))
ASAN_LIB := $(filter-out build/asan/main.o,$(ASAN_OBJ))
UNIT_REL := $(patsubst tests/unit/%.c,build/rel/tests/%,$(UNIT_SRC))
UNIT_ASAN:= $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))
FUZZ_BIN := $(patsubst fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

.PHONY: all run check check-fresh check-container check-valgrind deps fuzz install clean

all: fosr-collector

fosr-collector: $(REL_OBJ)
	$(CC) $(HARDEN) $(HARDEN_LD) -o $@ $^ $(PKG_LIBS)

build/rel/%.o: src/%.c $(HDR) | build/rel
	$(CC) $(BASE) $(HARDEN) -c -o $@ $<

build/asan/%.o: src/%.c $(HDR) | build/asan
	$(CC) $(BASE) $(SAN) -c -o $@ $<

build/asan/fosr-collector: $(ASAN_OBJ)
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS)

build/rel/tests/%: tests/unit/%.c $(REL_LIB) $(HDR) $(UNIT_HDR) | build/rel/tests
	$(CC) $(BASE) -O1 -g -o $@ $< $(REL_LIB) $(PKG_LIBS) -lcmocka

build/asan/tests/%: tests/unit/%.c $(ASAN_LIB) $(HDR) $(UNIT_HDR) | build/asan/tests
	$(CC) $(BASE) $(SAN) -o $@ $< $(ASAN_LIB) $(PKG_LIBS) -lcmocka

# bench/analysis.sh's CPU-per-mail bench (not part of make check).
build/rel/bench_analysis: bench/bench_analysis.c $(REL_LIB) $(HDR) | build/rel
	$(CC) $(BASE) -O2 -g -o $@ $< $(REL_LIB) $(PKG_LIBS)

# libFuzzer targets (clang).  Each links every module but main, compiled
# once with the fuzzer's coverage instrumentation.
FUZZFLAGS := -Wno-unused-command-line-argument -O1 -g -fsanitize=fuzzer-no-link,address,undefined
FUZZ_OBJ  := $(patsubst src/%.c,build/fuzz/obj/%.o,$(LIBSRC))
# Intermediate to make (only a fuzz target names them): kept, or every fuzz build recompiles all.
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: src/%.c $(HDR) | build/fuzz/obj
	$(FUZZCC) $(BASE) $(FUZZFLAGS) -c -o $@ $<

build/fuzz/%: fuzz/%.c $(FUZZ_OBJ) $(HDR) | build/fuzz
	$(FUZZCC) $(BASE) $(FUZZFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(PKG_LIBS)

# etc/rules.yml as a C string, for src/rules_default.c.
build/gen/rules_default.inc: etc/rules.yml | build/gen
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' etc/rules.yml > $@.tmp && mv $@.tmp $@

build/rel/rules_default.o build/asan/rules_default.o build/fuzz/obj/rules_default.o: build/gen/rules_default.inc

# etc/credentials.txt as a C string, for src/authdb.c (auth.outcome: policy).
build/gen/authdb_default.inc: etc/credentials.txt | build/gen
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' etc/credentials.txt > $@.tmp && mv $@.tmp $@

build/rel/authdb.o build/asan/authdb.o build/fuzz/obj/authdb.o: build/gen/authdb_default.inc

build/rel build/asan build/rel/tests build/asan/tests build/fuzz build/fuzz/obj build/gen:
	mkdir -p $@

deps:
	@sh scripts/deps.sh

# First README command: install what is missing (as root), build, run on the embedded defaults.
# The packages come first, in their own step: pkg-config must see them before compiling.
run:
	@sh scripts/deps.sh
	$(MAKE) -j$(NPROC) fosr-collector
	./fosr-collector

# Second README command: every test, plain and under ASan+UBSan, and the fuzz corpora replayed.
check:
	@sh scripts/deps.sh
	$(MAKE) -j$(NPROC) fosr-collector build/asan/fosr-collector $(UNIT_REL) $(UNIT_ASAN) $(FUZZ_BIN)
	sh tests/run.sh

# `make check` on a pristine Debian 12 root made by debootstrap, with only what
# scripts/deps.sh installs (as root, network to the Debian mirror; ~3 GB in /var/tmp).
check-fresh:
	sh scripts/check-fresh.sh

# The end-to-end suite with the daemon under valgrind memcheck (slow: ~20 minutes).
check-valgrind: fosr-collector
	sh tests/valgrind.sh

# The container (Dockerfile) built FROM a debootstrap base and tested with
# podman: mail on the three ports, the volume, a restart (root, ~minutes).
check-container:
	sh scripts/check-container.sh

# make install [PREFIX=/usr/local] [DESTDIR=...]: the daemon, the systemd unit
# (its ExecStart and -c pointed at the installed paths), the configuration
# (/etc/fosr-collector/fosr-collector.yml, never overwritten), the examples,
# the man pages and the logrotate snippet.
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
EXAMPLEDIR ?= $(PREFIX)/share/doc/fosr-collector/examples
EXAMPLES   := etc/fosr-collector.yml etc/credentials.txt etc/rules.yml etc/feed_config.yml \
              etc/feed_config.json

install: fosr-collector
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/fosr-collector \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(EXAMPLEDIR)
	install -m 755 fosr-collector $(DESTDIR)$(SBINDIR)/fosr-collector
	sed -e 's|^ExecStart=.*|ExecStart=$(SBINDIR)/fosr-collector -c $(SYSCONFDIR)/fosr-collector/fosr-collector.yml|' \
	    etc/fosr-collector.service > $(DESTDIR)$(UNITDIR)/fosr-collector.service.tmp
	chmod 644 $(DESTDIR)$(UNITDIR)/fosr-collector.service.tmp
	mv $(DESTDIR)$(UNITDIR)/fosr-collector.service.tmp $(DESTDIR)$(UNITDIR)/fosr-collector.service
	test -e $(DESTDIR)$(SYSCONFDIR)/fosr-collector/fosr-collector.yml || \
	    install -m 640 etc/fosr-collector.yml $(DESTDIR)$(SYSCONFDIR)/fosr-collector/fosr-collector.yml
	install -m 644 etc/logrotate.d/fosr-collector $(DESTDIR)$(SYSCONFDIR)/logrotate.d/fosr-collector
	install -m 644 man/fosr-collector.8 $(DESTDIR)$(MANDIR)/man8/fosr-collector.8
	install -m 644 man/fosr-collector.yml.5 $(DESTDIR)$(MANDIR)/man5/fosr-collector.yml.5
	install -m 644 $(EXAMPLES) $(DESTDIR)$(EXAMPLEDIR)/

fuzz: $(FUZZ_BIN)

clean:
	rm -rf build fosr-collector
