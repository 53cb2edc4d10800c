// The Python module gencore._C: importing it runs the static op registrations.
// It also exposes the facts of the build.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "common/philox.h"

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
  // The raw generator and the normal transform, for known-answer and distribution tests.
  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
        const auto r = gencore::philox::philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
        return std::array<uint32_t, 4>{r.x[0], r.x[1], r.x[2], r.x[3]};
      },
      "Philox4x32-10 of counter c (4 words) under key k (2 words)");
  m.def(
      "box_muller4",
      [](std::array<uint32_t, 4> w, bool dbl) {
        const gencore::philox::U4 u{{w[0], w[1], w[2], w[3]}};
        if (dbl) {
          const auto n = gencore::philox::box_muller4<double>(u);
          return std::array<double, 4>{n.n[0], n.n[1], n.n[2], n.n[3]};
        }
        const auto n = gencore::philox::box_muller4<float>(u);
        return std::array<double, 4>{n.n[0], n.n[1], n.n[2], n.n[3]};
      },
      "The four normals gencore derives from one Philox output (float or double math)");
}
