// The Python module gencore._C: importing it runs the static op registrations.
// It also exposes the facts of the build.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "gencore compiled extension: registers the torch.ops.gencore operators";
#ifdef GENCORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
#ifdef _OPENMP
  m.attr("openmp_version") = _OPENMP;
#else
  m.attr("openmp_version") = 0;
#endif
  m.def("parallel_info", []() { return at::get_parallel_info(); },
        "ATen's description of the thread pools this extension runs on");
}
