// The Python module gencore._C, written against Python's limited API (abi3): importing it
// runs the static op registrations of the other files. It also exposes the facts of the
// build and, for known-answer and distribution tests, the raw Philox generator and the
// normal transform of common/philox.h.
#include <Python.h>

#include <torch/headeronly/version.h>

#include <cstdint>

#include "common/philox.h"

#ifndef GENCORE_TORCH_TARGET
#error "GENCORE_TORCH_TARGET (the stable-ABI target torch version, e.g. \"2.11\") must be defined"
#endif

namespace {

// Reads `n` unsigned 32-bit words from a Python sequence.
bool read_words(PyObject* seq, uint32_t* out, Py_ssize_t n, const char* what) {
  if (!PySequence_Check(seq) || PySequence_Size(seq) != n) {
    PyErr_Format(PyExc_ValueError, "gencore: %s must be a sequence of %zd integers", what, n);
    return false;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_GetItem(seq, i);
    if (item == nullptr) return false;
    const unsigned long long v = PyLong_AsUnsignedLongLong(item);
    Py_DECREF(item);
    if (PyErr_Occurred()) return false;
    if (v > 0xFFFFFFFFull) {
      PyErr_Format(PyExc_ValueError, "gencore: %s[%zd] does not fit in 32 bits", what, i);
      return false;
    }
    out[i] = static_cast<uint32_t>(v);
  }
  return true;
}

PyObject* philox4x32_10(PyObject*, PyObject* args) {
  PyObject *c, *k;
  if (!PyArg_ParseTuple(args, "OO", &c, &k)) return nullptr;
  uint32_t cw[4], kw[2];
  if (!read_words(c, cw, 4, "counter") || !read_words(k, kw, 2, "key")) return nullptr;
  const auto r = gencore::philox::philox4x32_10(cw[0], cw[1], cw[2], cw[3], kw[0], kw[1]);
  return Py_BuildValue("(kkkk)", static_cast<unsigned long>(r.x[0]),
                       static_cast<unsigned long>(r.x[1]), static_cast<unsigned long>(r.x[2]),
                       static_cast<unsigned long>(r.x[3]));
}

PyObject* box_muller4(PyObject*, PyObject* args) {
  PyObject* w;
  int dbl;
  if (!PyArg_ParseTuple(args, "Op", &w, &dbl)) return nullptr;
  uint32_t ww[4];
  if (!read_words(w, ww, 4, "words")) return nullptr;
  const gencore::philox::U4 u{{ww[0], ww[1], ww[2], ww[3]}};
  double n[4];
  if (dbl) {
    const auto r = gencore::philox::box_muller4<double>(u);
    for (int i = 0; i < 4; ++i) n[i] = r.n[i];
  } else {
    const auto r = gencore::philox::box_muller4<float>(u);
    for (int i = 0; i < 4; ++i) n[i] = r.n[i];
  }
  return Py_BuildValue("(dddd)", n[0], n[1], n[2], n[3]);
}

PyMethodDef methods[] = {
    {"philox4x32_10", philox4x32_10, METH_VARARGS,
     "Philox4x32-10 of counter c (4 words) under key k (2 words)"},
    {"box_muller4", box_muller4, METH_VARARGS,
     "The four normals gencore derives from one Philox output (float or double math)"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT,
                      "_C",
                      "gencore compiled extension: registers the torch.ops.gencore operators",
                      -1,
                      methods,
                      nullptr,
                      nullptr,
                      nullptr,
                      nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  PyObject* m = PyModule_Create(&module);
  if (m == nullptr) return nullptr;
#ifdef GENCORE_WITH_CUDA
  const bool with_cuda = true;
#else
  const bool with_cuda = false;
#endif
  if (PyModule_AddObject(m, "with_cuda", PyBool_FromLong(with_cuda)) < 0 ||
      PyModule_AddStringConstant(m, "torch_target_version", GENCORE_TORCH_TARGET) < 0 ||
      PyModule_AddStringConstant(m, "built_with_torch", TORCH_VERSION) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
