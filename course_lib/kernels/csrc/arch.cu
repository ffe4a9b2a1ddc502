// Which architecture's code runs on the current device (launch.h's Arch).
#include "common.cuh"

namespace course_kernels {

// Never launched: only its attributes are read. Every file is compiled with the same architecture list, so
// the code the driver picks for this kernel is the code it picks for all of them.
__global__ void arch_probe_kernel() {}

cudaError_t current_arch(Arch* arch) {
  static Arch cache[64] = {};
  const int dev = cached_device();
  if (cache[dev].device == 0) {
    int major = 0, minor = 0;
    cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    cudaFuncAttributes attr = {};
    if (err == cudaSuccess) err = cudaFuncGetAttributes(&attr, arch_probe_kernel);
    if (err != cudaSuccess) return err;
    cache[dev].code = attr.ptxVersion;  // the virtual architecture, e.g. 75 for compute_75 PTX JIT-compiled
    cache[dev].device = 10 * major + minor;
  }
  *arch = cache[dev];
  return cudaSuccess;
}

}  // namespace course_kernels
