# loraflow build.  `make` builds build/loraflow and build/libloraflow.a;
# `make test` builds and runs the suite; `make test SAN=1` runs it under
# AddressSanitizer + UndefinedBehaviorSanitizer (in build-san/).

CC      ?= cc
OPT     ?= -O2
SAN     ?= 0
ifeq ($(SAN),1)
  BUILD   ?= build-san
  SANFLAGS = -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow -fno-omit-frame-pointer
  OPT      = -O1 -g
else
  BUILD   ?= build
  SANFLAGS =
endif

CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Werror=implicit-function-declaration \
           -g $(OPT) -fopenmp -Iinclude $(SANFLAGS) -MMD -MP
LDLIBS  += -lcjson -lm -lpthread
LDFLAGS += -fopenmp $(SANFLAGS)

# Data-parallel training over MPI is part of the build when Open MPI is
# installed (scripts/deps.sh installs it); without it loraflow runs as one
# process and says so when started by mpirun.
MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
  CFLAGS += -DLF_HAVE_MPI $(shell mpicc --showme:compile)
  LDLIBS += $(shell mpicc --showme:link)
endif

LIB_SRC  := $(sort $(wildcard src/*/*.c))
TOOL_SRC := $(sort $(wildcard tools/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TESTLIB_SRC := $(sort $(filter-out $(TEST_SRC),$(wildcard tests/*.c)))
BENCH_SRC := $(sort $(wildcard bench/*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TOOL_OBJ := $(TOOL_SRC:%.c=$(BUILD)/obj/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
REPL_BIN := $(BUILD)/replication/gen $(BUILD)/replication/bench

.PHONY: all test bench clean deps demo
all: $(BUILD)/loraflow $(BUILD)/libloraflow.a

# Objects are rebuilt when the flags change (e.g. Open MPI installed).
FLAGS_STAMP := $(BUILD)/.flags
$(shell mkdir -p $(BUILD); echo '$(CC) $(CFLAGS) $(LDLIBS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CFLAGS) $(LDLIBS)' > $(FLAGS_STAMP))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libloraflow.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/loraflow: $(TOOL_OBJ) $(BUILD)/libloraflow.a
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(BUILD)/libloraflow.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TESTLIB_OBJ) $(BUILD)/libloraflow.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(BUILD)/libloraflow.a $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libloraflow.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libloraflow.a $(LDLIBS)

deps:
	@scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory all-tests
	@BUILD=$(BUILD) tests/run.sh $(TEST_BIN)

.PHONY: all-tests
all-tests: all $(TEST_BIN) $(REPL_BIN)

bench: all $(BENCH_BIN)

# The replication benchmark (replication/README.md): its generator and its
# scoring/search/table tool (REPL_BIN, defined above).  `make demo` trains what
# is not cached in build/demo and prints the table (DEMO_ARGS=--small: quick mode).
.SECONDARY: $(REPL_BIN:$(BUILD)/replication/%=$(BUILD)/obj/replication/%.o)
$(BUILD)/replication/%: $(BUILD)/obj/replication/%.o $(BUILD)/libloraflow.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libloraflow.a $(LDLIBS)

demo: deps
	@$(MAKE) --no-print-directory all $(REPL_BIN)
	@scripts/demo.sh $(BUILD) $(DEMO_ARGS)

clean:
	rm -rf build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ======================= fuzzing and valgrind (docs/SECURITY.md) =======================
# `make fuzz [FUZZ_SECONDS=N]` builds the libFuzzer targets with clang
# (AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, in
# build/fuzz/), writes their seed corpora into fuzz-out/seeds/ (from
# ../shared when present, see fuzz/make_seeds.c) and runs each target N
# seconds in turn on one core (fuzz/run.sh).  Crashes go to fuzz-out/crashes/.
# `make fuzz-build` only builds them.
# `make test-valgrind` runs the test suite (and every loraflow command it
# starts) under valgrind's memcheck with leak checking.
# The SAN=1 suite checks leaks too: LeakSanitizer (on by default with
# AddressSanitizer on x86_64 Linux; made explicit here) fails a test program,
# or a loraflow command a test runs, that exits with memory still allocated.
ifeq ($(SAN),1)
  export ASAN_OPTIONS ?= detect_leaks=1
  export UBSAN_OPTIONS ?= print_stacktrace=1
endif
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build/fuzz
# One entry per fuzz/fuzz_<name>.c target (adapter_config and adapter_weights
# are both fuzz/fuzz_adapter.c; jsonl is the training-data reader).
FUZZ_TARGETS := safetensors st_index ptzip pickle config adapter_config adapter_weights gate jsonl \
                tokenizer_load tokenize
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fopenmp -Iinclude \
                -Wall -Wextra -Wshadow -Wno-unused-parameter -fsanitize=address,undefined,float-cast-overflow \
                -fno-sanitize-recover=undefined,float-cast-overflow
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LDLIBS  := -lcjson -lm -lpthread
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
SHARED_DIR   ?= $(if $(LORAFLOW_SHARED),$(LORAFLOW_SHARED),../shared)

.PHONY: fuzz fuzz-build fuzz-seeds test-valgrind
$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libloraflow.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_adapter_config: fuzz/fuzz_adapter.c fuzz/fuzz.h $(FUZZ_BUILD)/libloraflow.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libloraflow.a $(FUZZ_LDLIBS)

$(FUZZ_BUILD)/fuzz_adapter_weights: fuzz/fuzz_adapter.c fuzz/fuzz.h $(FUZZ_BUILD)/libloraflow.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_ADAPTER_WEIGHTS -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libloraflow.a $(FUZZ_LDLIBS)

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h fuzz/tok_build.h $(FUZZ_BUILD)/libloraflow.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libloraflow.a $(FUZZ_LDLIBS)

$(FUZZ_BUILD)/make_seeds: fuzz/make_seeds.c fuzz/fuzz.h fuzz/tok_build.h $(FUZZ_BUILD)/libloraflow.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_BUILD)/libloraflow.a $(FUZZ_LDLIBS)

fuzz-build:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory fuzz-bins

.PHONY: fuzz-bins
fuzz-bins: $(FUZZ_BIN) $(FUZZ_BUILD)/make_seeds
	@:

fuzz-seeds: fuzz-build
	@rm -rf fuzz-out/seeds && mkdir -p fuzz-out
	@$(FUZZ_BUILD)/make_seeds fuzz-out/seeds $(SHARED_DIR)

fuzz: fuzz-seeds
	@fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# VALGRIND_TESTS: the test programs to run (default: all; under memcheck the
# whole suite takes about an hour, e.g. VALGRIND_TESTS="test_hostile test_atomic").
# AMX is turned off there: valgrind does not emulate the tile instructions.
VALGRIND ?= valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --track-origins=yes
VALGRIND_TESTS ?= $(TEST_BIN:$(BUILD)/tests/%=%)
test-valgrind: deps
	@$(MAKE) --no-print-directory all-tests
	@mkdir -p $(BUILD)/valgrind
	@for t in $(TEST_BIN) $(BUILD)/loraflow; do \
	    printf '#!/bin/sh\nexec env LORAFLOW_AMX=0 %s %s "$$@"\n' "$(VALGRIND)" "$(CURDIR)/$$t" >$(BUILD)/valgrind/$$(basename $$t); \
	    chmod +x $(BUILD)/valgrind/$$(basename $$t); done
	@LORAFLOW_BIN=$(BUILD)/valgrind/loraflow LF_TEST_SLOW=50 BUILD=$(BUILD) tests/run.sh \
	    $(addprefix $(BUILD)/valgrind/,$(VALGRIND_TESTS))
-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
# ===================== end of fuzzing and valgrind section =====================

# ======================= benchmarks (docs/PERFORMANCE.md) =======================
# `make bench` builds bench/*.c.  `make bench-decode` writes a TinyLlama-1.1B-shaped
# random F16 model with two rank-64 F16 adapters and a gate into $(BENCH_MODELS)/1b
# (2.3 GB, once) and runs the decode/prompt benchmark on it in F16 and q8;
# BENCH_ARGS adds options (e.g. "-r 7", or "--llama-cli PATH --gguf-dir DIR" for
# the side-by-side run with llama.cpp described in docs/PERFORMANCE.md).
# `make bench-kernels` measures the memory bandwidth and the kernels alone.
BENCH_MODELS ?= $(BUILD)/bench-models
BENCH_ARGS   ?=
.PHONY: bench-decode bench-kernels
bench-decode: bench
	@test -f $(BENCH_MODELS)/1b/gate.safetensors || \
	    $(BUILD)/loraflow synth -o $(BENCH_MODELS)/1b --shape 1b --adapter-dtype f16
	$(BUILD)/bench/bench_decode -m $(BENCH_MODELS)/1b --q8 $(BENCH_ARGS)

bench-kernels: bench
	$(BUILD)/bench/bench_kernels $(BENCH_ARGS)
# ===================== end of benchmarks section =====================
