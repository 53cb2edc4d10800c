// Force-included before every .cu the emulator compiles (build.py: -include prelude.h).
// Torch's stable-ABI headers are included first, as host code, then the CUDA stand-ins
// and the settings that make the .cu files emulated CUDA:
// - __CUDA_ARCH__ = 900: gencore's headers take their device branches (e.g. the CUDA
//   math calls of common/coupling_math.h) and the kernels their sm_90 code paths;
// - the CUDA dispatch key becomes the CPU key of the `gencore_emu` library, so the
//   emulated kernels run on CPU tensors next to the real CPU kernels (`gencore`);
// - is_cuda() reads as is_cpu(): the launchers' device checks accept the CPU tensors
//   that stand in for device memory, and contrastive.h takes its CUDA branches;
// - GENCORE_SIMT_EMULATION is defined: the few host lines that call a CUDA-only ATen op
//   (aten::mm.dtype in contrastive_cuda.cu) call its CPU equivalent instead.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda_runtime.h"

#define __CUDA_ARCH__ 900
#define GENCORE_SIMT_EMULATION 1

#undef STABLE_TORCH_LIBRARY_IMPL
#define STABLE_TORCH_LIBRARY_IMPL(ns, k, m) _STABLE_TORCH_LIBRARY_IMPL(gencore_emu, CPU, m, C10_UID)

#define is_cuda is_cpu
