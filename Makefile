# assay — build, test, fuzz.
#   make            build/assay and build/libassay.a (CUDA backend too when nvcc is found)
#   make CUDA=0     CPU only
#   make test       every test (Criterion) + fuzz corpus replay;  SAN=1: under ASan + UBSan
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#   make deps       install missing Debian packages (tools/deps.sh)

CC        ?= cc
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
SAN       ?= 0
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(wildcard $(NVCC)),1,0)
endif
ifeq ($(SAN),1)
  CUDA := 0
endif

PKGS      := libcjson libpcre2-8 libutf8proc libcurl sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(or $(shell pkg-config --libs openblas 2>/dev/null),-lopenblas)

# CFLAGS is the user's (optimisation, debug info: `make CFLAGS=-O3` works); the flags the code
# needs to build at all live in ASSAY_CFLAGS and are always added.
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
ASSAY_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -I. $(PKG_CFLAGS) $(BLAS_CFLAGS)
LDLIBS  := $(PKG_LIBS) $(BLAS_LIBS) -fopenmp -lm -lpthread -ldl

# MPI (harness/dist.c): Open MPI when pkg-config finds it; MPI=0 builds one-process only.
MPI       ?= auto
ifeq ($(MPI),auto)
  MPI := $(if $(shell pkg-config --exists ompi-c 2>/dev/null && echo y),1,0)
endif
ifeq ($(MPI),1)
  # -isystem: the MPI headers are not held to our warning flags
  MPI_CFLAGS := -DASSAY_MPI=1 $(patsubst -I%,-isystem %,$(shell pkg-config --cflags ompi-c))
  LDLIBS     += $(shell pkg-config --libs ompi-c)
endif

ifeq ($(SAN),1)
  B       ?= build/san
  SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  ASSAY_CFLAGS += -O1 $(SANFLAGS)
  CFLAGS  := $(filter-out -O2 -O3,$(CFLAGS))
  LDLIBS  += $(SANFLAGS)
else
  B       ?= build
endif

VARIANT := cuda$(CUDA)-san$(SAN)
OBJDIR  := $(B)/obj-$(VARIANT)

LIB_DIRS := core runtime runtime/cuda loader kernels/cpu kernels/cuda scoring harness harness/tasks
LIB_SRCS := $(filter-out harness/main.c,$(wildcard $(addsuffix /*.c,$(LIB_DIRS))))
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJDIR)/%.o)

ifeq ($(CUDA),1)
  CU_SRCS   := $(wildcard kernels/cuda/*.cu runtime/cuda/*.cu)
  CU_OBJS   := $(CU_SRCS:%.cu=$(OBJDIR)/%.cu.o)
  NVFLAGS   := -O2 -std=c++17 -I. -Xcompiler -Wall,-Werror \
               -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
  ASSAY_CFLAGS += -DASSAY_CUDA=1 -I$(CUDA_HOME)/include
  LDLIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
else
  CU_OBJS   :=
endif

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(B)/tests/%)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
REPLAY_BINS := $(FUZZ_SRCS:fuzz/%.c=$(B)/replay/%)

.PHONY: all test fuzz deps demo clean format format-check bench
all: $(B)/assay $(B)/libassay.a

# The commit results.json records (assay.commit): only harness/eval.o gets the define, and it
# rebuilds only when the value changes ($(B)/commit.txt is rewritten only then).
ASSAY_COMMIT := $(or $(shell git describe --always --dirty 2>/dev/null),unknown)
$(shell mkdir -p $(B) && (test "$$(cat $(B)/commit.txt 2>/dev/null)" = '$(ASSAY_COMMIT)' || \
  printf '%s' '$(ASSAY_COMMIT)' >$(B)/commit.txt))
$(OBJDIR)/harness/eval.o: $(B)/commit.txt
$(OBJDIR)/harness/eval.o $(OBJDIR)/harness/history.o: ASSAY_CFLAGS += -DASSAY_COMMIT='"$(ASSAY_COMMIT)"'

# Only harness/dist.o sees MPI; it rebuilds when MPI is switched ($(B)/mpi.txt changes only then).
$(shell mkdir -p $(B) && (test "$$(cat $(B)/mpi.txt 2>/dev/null)" = '$(MPI)' || \
  printf '%s' '$(MPI)' >$(B)/mpi.txt))
$(OBJDIR)/harness/dist.o: $(B)/mpi.txt
$(OBJDIR)/harness/dist.o: ASSAY_CFLAGS += $(MPI_CFLAGS)
# NCCL (a communicator for tensor-parallel work to come) where the CUDA toolkit has nccl.h; the
# library itself is opened at run time.
ifeq ($(CUDA)$(MPI)$(if $(wildcard $(CUDA_HOME)/include/nccl.h),1,0),111)
$(OBJDIR)/harness/dist.o: ASSAY_CFLAGS += -DASSAY_NCCL=1
endif

# Objects of different variants never mix: each variant has its own object folder, and the
# final artifacts relink when the variant changes.
$(B)/.variant-$(VARIANT):
	@mkdir -p $(B) && rm -f $(B)/.variant-* && touch $@

$(OBJDIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(OBJDIR)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(B)/libassay.a: $(LIB_OBJS) $(CU_OBJS) $(B)/.variant-$(VARIANT)
	@rm -f $@
	ar rcs $@ $(LIB_OBJS) $(CU_OBJS)

$(B)/assay: $(OBJDIR)/harness/main.o $(B)/libassay.a
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -o $@ $< $(B)/libassay.a $(LDLIBS)

# Each test file is its own binary (handy while working on one module); `make test` runs the
# single binary that links them all, so Criterion prints one closing summary.
$(B)/tests/%: tests/%.c $(B)/libassay.a
	@mkdir -p $(dir $@)
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(B)/libassay.a $(LDLIBS) -lcriterion

$(B)/tests/all: $(TEST_SRCS) $(wildcard tests/*.h) $(B)/libassay.a
	@mkdir -p $(dir $@)
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $(TEST_SRCS) $(B)/libassay.a $(LDLIBS) -lcriterion

# Fuzz corpus replay: the libFuzzer entry point driven by a plain main over the committed corpus.
$(B)/replay/%: fuzz/%.c fuzz/replay.c $(B)/libassay.a
	@mkdir -p $(dir $@)
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $< fuzz/replay.c $(B)/libassay.a $(LDLIBS)

# The fault-injecting OpenAI-compatible server the judge tests start (found next to tests/all).
$(B)/tests/judge_server: tests/judge_server.c
	@mkdir -p $(dir $@)
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(PKG_LIBS) -lpthread

test: $(B)/assay $(B)/tests/all $(B)/tests/judge_server $(REPLAY_BINS)
	@set -e; for r in $(REPLAY_BINS); do n=$$(basename $$r); n=$${n#fuzz_}; \
	  $$r fuzz/corpus/$$n; done
	@rc=0; OMP_WAIT_POLICY=passive ASSAY_BIN=$(B)/assay \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  $(B)/tests/all --jobs 2 \
	  --json=$(B)/test-report.json || rc=$$?; \
	  bash tools/test_summary.sh $(B)/test-report.json || rc=1; exit $$rc

# libFuzzer targets: the library compiled once with clang (fuzzer-no-link instrumentation), then
# each target linked against it.
FUZZ_SAN    := -fsanitize=address,undefined
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -I. $(PKG_CFLAGS) $(BLAS_CFLAGS) -fopenmp $(FUZZ_SAN)
FUZZ_OBJS   := $(LIB_SRCS:%.c=build/fuzz/obj/%.o)
fuzz: $(FUZZ_SRCS:fuzz/%.c=build/fuzz/%)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/libassay-fuzz.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^
build/fuzz/%: fuzz/%.c build/fuzz/libassay-fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libassay-fuzz.a \
	  $(PKG_LIBS) -fopenmp -lm -lpthread

deps:
	bash tools/deps.sh

demo: all
	bash tools/demo.sh $(B)/assay

bench: all
	bash bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu')
format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' '*.cu')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# GPU op check (tests/gpu/ops_check.cu): every CUDA op against the CPU reference, for a GPU
# machine (tests/gpu/check.sh runs it). Needs CUDA=1; linked like build/assay.
.PHONY: gpu-ops-check
gpu-ops-check: $(B)/gpu/ops_check
$(B)/gpu/ops_check: tests/gpu/ops_check.cu tests/gpu/ops_ref.h $(wildcard kernels/cuda/*.cuh) \
                    $(B)/libassay.a
	@test "$(CUDA)" = 1 || { echo "gpu-ops-check: needs CUDA=1 (nvcc at $(NVCC))"; exit 1; }
	@mkdir -p $(dir $@) $(OBJDIR)/tests/gpu
	$(NVCC) $(NVFLAGS) -c $< -o $(OBJDIR)/tests/gpu/ops_check.cu.o
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -o $@ $(OBJDIR)/tests/gpu/ops_check.cu.o $(B)/libassay.a \
	  $(LDLIBS)

# The same checker on a host-memory stand-in for the CUDA runtime, the launchers emulated on the
# CPU (tests/gpu/hostsim/): checks the checker itself (shapes, poison, sentinels, tolerances,
# references) without a GPU. Any CUDA setting; the library's CUDA objects are not linked in.
.PHONY: gpu-ops-check-hostsim
gpu-ops-check-hostsim: $(B)/gpu/ops_check_hostsim
	$(B)/gpu/ops_check_hostsim --quick
$(B)/gpu/ops_check_hostsim: tests/gpu/ops_check.cu tests/gpu/ops_ref.h \
                            $(wildcard tests/gpu/hostsim/*) $(wildcard kernels/cuda/*.h) \
                            $(B)/libassay.a
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O1 -g -Wall -Wextra -Werror -Itests/gpu/hostsim -I. \
	  -x c++ tests/gpu/ops_check.cu -x c++ tests/gpu/hostsim/ops_emulated.cpp -x none \
	  -o $@ $(B)/libassay.a $(LDLIBS)
# ---- GPU checks (cuda-backend) ------------------------------------------------------------------
# Both need an NVIDIA GPU: tests/gpu/check.sh builds, runs the op parity check and the sanitizers,
# CPU vs CUDA parity, batch invariance and the benchmark (its header says how long and what);
# bench/gpu_bench.sh is the benchmark alone.
.PHONY: gpu-check gpu-bench
gpu-check:
	bash tests/gpu/check.sh
gpu-bench:
	bash bench/gpu_bench.sh
# ---- attention: timing and bit checks on a GPU (tests/gpu/attn_bench.cu) ------------------------
.PHONY: gpu-attn-bench
gpu-attn-bench: $(B)/gpu/attn_bench
$(B)/gpu/attn_bench: tests/gpu/attn_bench.cu $(wildcard kernels/cuda/*.cuh kernels/cuda/*.h) \
                     $(B)/libassay.a
	@test "$(CUDA)" = 1 || { echo "gpu-attn-bench: needs CUDA=1 (nvcc at $(NVCC))"; exit 1; }
	@mkdir -p $(dir $@) $(OBJDIR)/tests/gpu
	$(NVCC) $(NVFLAGS) -c $< -o $(OBJDIR)/tests/gpu/attn_bench.cu.o
	$(CC) $(ASSAY_CFLAGS) $(CFLAGS) -o $@ $(OBJDIR)/tests/gpu/attn_bench.cu.o $(B)/libassay.a \
	  $(LDLIBS)

# ---- attention on the CPU: the kernel's own source under a thin emulation (tests/gpu/emu/):
# threads, barriers, shuffles, ASan on every buffer. Needs a CPU-only library: make SAN=1 attn-emu
.PHONY: attn-emu
attn-emu: $(B)/gpu/attn_emu
$(B)/gpu/attn_emu: tests/gpu/attn_emu.cc kernels/cuda/attention.cu kernels/cuda/attn_plan.h \
                   $(wildcard tests/gpu/emu/*.h) tests/gpu/emu/rewrite.py $(B)/libassay.a
	@test "$(CUDA)" = 0 || { echo "attn-emu: needs a CPU-only build (SAN=1 or CUDA=0)"; exit 1; }
	@mkdir -p $(dir $@) $(B)/emu
	python3 tests/gpu/emu/rewrite.py kernels/cuda/attention.cu $(B)/emu/attention_emu.cc
	$(CXX) -std=c++20 -O1 -g -pthread -Itests/gpu/emu -I. $(PKG_CFLAGS) \
	  $(if $(filter 1,$(SAN)),$(SANFLAGS)) -o $@ tests/gpu/attn_emu.cc $(B)/emu/attention_emu.cc \
	  $(B)/libassay.a $(LDLIBS)

# ---- the whole CUDA build on the CPU (tests/gpu/emu/): build/emu/assay is the real CLI and
# library with ASSAY_CUDA, backend_cuda.cu and kernels/cuda/*.cu compiled as host C++ against the
# emulated CUDA runtime (tests/gpu/emu/cuda_runtime.h) after tests/gpu/emu/rewrite.py, cuBLASLt
# emulated by build/emu/libcublasLt-emu.so (found next to the binary). EMU_SAN=1: under ASan +
# UBSan in build/emu-san. make cuda-emu-check: CPU vs emulated CUDA on every fixture.
EMU_SAN ?= 0
EMU_B   := $(if $(filter 1,$(EMU_SAN)),build/emu-san,build/emu)
EMU_OBJ := $(EMU_B)/obj
EMU_SANFLAGS := -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
EMU_FLAGS := -g -ffp-contract=off -DASSAY_CUDA=1 -DEMU_CHECK_KERNEL_PTRS $(if $(filter 1,$(EMU_SAN)),$(EMU_SANFLAGS),-O2)
EMU_CU      := $(wildcard kernels/cuda/*.cu runtime/cuda/*.cu)
EMU_CU_OBJS := $(EMU_CU:%.cu=$(EMU_OBJ)/%.cu.o)
EMU_C_OBJS  := $(LIB_SRCS:%.c=$(EMU_OBJ)/%.o)
EMU_HDRS    := $(wildcard tests/gpu/emu/*.h)
.PHONY: cuda-emu cuda-emu-check
cuda-emu: $(EMU_B)/assay $(EMU_B)/libcublasLt-emu.so
$(EMU_OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -I. $(PKG_CFLAGS) $(BLAS_CFLAGS) $(EMU_FLAGS) \
	  -MMD -MP -c $< -o $@
$(EMU_OBJ)/%.cu.o: %.cu tests/gpu/emu/rewrite.py $(EMU_HDRS)
	@mkdir -p $(dir $@)
	python3 tests/gpu/emu/rewrite.py $< $(EMU_OBJ)/$*.emu.cc
	$(CXX) -std=c++20 -Wall -Werror -Wno-unused-function -Wno-unknown-pragmas -fopenmp -Itests/gpu/emu -I. -I$(dir $<) \
	  $(EMU_FLAGS) -MMD -MP -c $(EMU_OBJ)/$*.emu.cc -o $@
$(EMU_B)/libcublasLt-emu.so: tests/gpu/emu/cublaslt_emu.cc $(EMU_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -Wall -Werror -shared -fPIC -fopenmp -Itests/gpu/emu -I. \
	  $(filter-out -fsanitize%,$(EMU_FLAGS)) -o $@ $<
$(EMU_B)/assay: $(EMU_OBJ)/harness/main.o $(EMU_C_OBJS) $(EMU_CU_OBJS)
	$(CXX) $(EMU_FLAGS) -fopenmp -rdynamic -o $@ $^ $(filter-out -L$(CUDA_HOME)/lib64 -lcudart_static,$(LDLIBS))
cuda-emu-check: cuda-emu
	EMU=1 EMU_BIN=$(EMU_B)/assay OUT=$(EMU_B)/check bash tests/gpu/check.sh
