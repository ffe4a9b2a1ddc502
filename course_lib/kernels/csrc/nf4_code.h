// The 16 NF4 values (bitsandbytes' table, bit for bit: course_lib.nf4.nf4_codebook() in float32), as exact
// hexadecimal float literals. Shared by the C++ (lowbit_cpu.cpp) and CUDA (common.cuh) kernels: a compile-time
// table needs no upload, so no call ever copies it to the GPU (a copy would break CUDA-graph capture).
// tests/library/test_kernels.py checks it against nf4_codebook().
#pragma once

#define COURSE_NF4_CODE                                                                              \
  {                                                                                                  \
    -0x1.0p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f, -0x1.23449ap-2f, -0x1.7a6a7ep-3f,   \
        -0x1.74f0e2p-4f, 0x0.0p+0f, 0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f,  \
        0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1.0p+0f                                     \
  }
