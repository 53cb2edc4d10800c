// Emulator stand-in for cuda_fp16.h: __half as its 16 bits (the kernels reinterpret
// c10::Half storage as __half for wmma; arithmetic goes through c10::Half / float).
#pragma once
#include <cstdint>

struct alignas(2) __half {
  uint16_t x;
};
struct alignas(4) __half2 {
  __half x, y;
};
