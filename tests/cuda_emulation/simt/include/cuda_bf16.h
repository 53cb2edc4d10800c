// Emulator stand-in for cuda_bf16.h: __nv_bfloat16 as its 16 bits.
#pragma once
#include <cstdint>

struct alignas(2) __nv_bfloat16 {
  uint16_t x;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
