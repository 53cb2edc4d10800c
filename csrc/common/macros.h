// Shared by host and device code: one definition of the math, two launchers.
#pragma once

#if defined(__CUDACC__)
#define GENCORE_HD __host__ __device__ __forceinline__
#else
#define GENCORE_HD inline
#endif
