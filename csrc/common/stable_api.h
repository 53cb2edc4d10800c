// gencore's one door to libtorch. Every C++ file uses the LibTorch stable ABI only
// (torch/csrc/stable and torch/headeronly, compiled with TORCH_TARGET_VERSION: see
// CMakeLists.txt), so the built library imports no C++ symbol of libtorch or c10 and
// loads in every torch from the target version on. This header adds what the launchers
// need on top of it: error checks with Python exception types, messages, dtype dispatch,
// and the few ATen ops called by name through the stable dispatcher.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <dlfcn.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace gencore {

using Tensor = torch::stable::Tensor;
using Device = torch::stable::Device;
using ScalarType = torch::headeronly::ScalarType;
using IntArrayRef = torch::headeronly::IntHeaderOnlyArrayRef;

constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kDouble = ScalarType::Double;
constexpr ScalarType kHalf = ScalarType::Half;
constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
constexpr ScalarType kLong = ScalarType::Long;

// ---- messages ----

struct Shape {
  IntArrayRef sizes;
};
inline Shape shape(const Tensor& t) { return {t.sizes()}; }

inline std::ostream& operator<<(std::ostream& o, Shape s) {
  o << '[';
  for (size_t i = 0; i < s.sizes.size(); ++i) o << (i ? ", " : "") << s.sizes[i];
  return o << ']';
}

inline std::string device_name(const Device& d) {
  std::string name;
  switch (d.type()) {
    case torch::headeronly::DeviceType::CPU: return "cpu";
    case torch::headeronly::DeviceType::CUDA: name = "cuda"; break;
    case torch::headeronly::DeviceType::Meta: return "meta";
    default: name = "device type " + std::to_string(static_cast<int>(d.type()));
  }
  return d.has_index() ? name + ":" + std::to_string(d.index()) : name;
}

inline const char* dtype_name(ScalarType st) { return c10::toString(st); }

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

// ---- errors ----
// A bad argument throws std::invalid_argument, which the op's Python binding raises as
// ValueError (pybind11's translation). No C++ standard exception maps to TypeError: a
// dtype error carries kTypeErrorTag in front of its message, and the public wrappers
// (python/gencore/ops/_errors.py) raise it as TypeError without the tag.
inline constexpr const char* kTypeErrorTag = "[TypeError] ";

#define GENCORE_CHECK_VALUE(cond, ...)                                  \
  do {                                                                  \
    if (!(cond)) throw std::invalid_argument(::gencore::str(__VA_ARGS__)); \
  } while (0)

#define GENCORE_CHECK_TYPE(cond, ...)                                                   \
  do {                                                                                  \
    if (!(cond))                                                                        \
      throw std::invalid_argument(::gencore::str(::gencore::kTypeErrorTag, __VA_ARGS__)); \
  } while (0)

// An internal invariant (a bug in gencore, not in the caller's arguments): RuntimeError.
#define GENCORE_CHECK(cond, ...)                                       \
  do {                                                                 \
    if (!(cond)) throw std::runtime_error(::gencore::str(__VA_ARGS__)); \
  } while (0)

// ---- dtypes ----

inline bool is_floating(ScalarType st) {
  return st == kFloat || st == kDouble || st == kHalf || st == kBFloat16 ||
         st == ScalarType::Float8_e4m3fn || st == ScalarType::Float8_e5m2 ||
         st == ScalarType::Float8_e4m3fnuz || st == ScalarType::Float8_e5m2fnuz ||
         st == ScalarType::Float8_e8m0fnu;
}

// The type arithmetic is done in: float for the half types (ATen's opmath_type).
template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<c10::Half> {
  using type = float;
};
template <>
struct OpMath<c10::BFloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

template <typename T>
constexpr ScalarType scalar_type_of() {
  if constexpr (std::is_same_v<T, double>) return kDouble;
  else if constexpr (std::is_same_v<T, float>) return kFloat;
  else if constexpr (std::is_same_v<T, c10::Half>) return kHalf;
  else if constexpr (std::is_same_v<T, c10::BFloat16>) return kBFloat16;
  else if constexpr (std::is_same_v<T, int64_t>) return kLong;
  else static_assert(sizeof(T) == 0, "gencore: no ScalarType for this C++ type");
}

// GENCORE_DISPATCH_FLOATING_TYPES(dtype, "name", [&] { ... scalar_t ... }): as ATen's
// AT_DISPATCH_* macros; _AND_HALF2 adds float16 and bfloat16 (c10::Half, c10::BFloat16).
#define GENCORE_DISPATCH_CASE_(ENUM, TYPE, ...) \
  case ENUM: {                                  \
    using scalar_t = TYPE;                      \
    __VA_ARGS__();                              \
    break;                                      \
  }
#define GENCORE_DISPATCH_SWITCH_(ST, NAME, ...)                                    \
  [&] {                                                                            \
    const ::gencore::ScalarType _st = (ST);                                        \
    switch (_st) {                                                                 \
      __VA_ARGS__                                                                  \
      default:                                                                     \
        GENCORE_CHECK_TYPE(false, "gencore: ", NAME, " does not support dtype ",   \
                           ::gencore::dtype_name(_st));                            \
    }                                                                              \
  }()
#define GENCORE_DISPATCH_FLOATING_TYPES(ST, NAME, ...)                       \
  GENCORE_DISPATCH_SWITCH_(ST, NAME,                                          \
      GENCORE_DISPATCH_CASE_(::gencore::kDouble, double, __VA_ARGS__)         \
      GENCORE_DISPATCH_CASE_(::gencore::kFloat, float, __VA_ARGS__))
#define GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(ST, NAME, ...)             \
  GENCORE_DISPATCH_SWITCH_(ST, NAME,                                          \
      GENCORE_DISPATCH_CASE_(::gencore::kDouble, double, __VA_ARGS__)         \
      GENCORE_DISPATCH_CASE_(::gencore::kFloat, float, __VA_ARGS__)           \
      GENCORE_DISPATCH_CASE_(::gencore::kHalf, c10::Half, __VA_ARGS__)        \
      GENCORE_DISPATCH_CASE_(::gencore::kBFloat16, c10::BFloat16, __VA_ARGS__))

// ---- tensors ----

inline std::vector<int64_t> vec(IntArrayRef a) { return {a.begin(), a.end()}; }

inline Tensor empty(IntArrayRef size, ScalarType dtype, const Device& device) {
  return torch::stable::empty(size, dtype, std::nullopt, device);
}
inline Tensor empty(IntArrayRef size, const Tensor& like) {
  return torch::stable::new_empty(like, size);
}
inline Tensor empty(IntArrayRef size, const Tensor& like, ScalarType dtype) {
  return torch::stable::new_empty(like, size, dtype);
}
inline Tensor zeros(IntArrayRef size, const Tensor& like) {
  return torch::stable::new_zeros(like, size);
}
inline Tensor zeros(IntArrayRef size, const Tensor& like, ScalarType dtype) {
  return torch::stable::new_zeros(like, size, dtype);
}
inline Tensor contig(const Tensor& t) {
  return t.is_contiguous() ? t : torch::stable::contiguous(t);
}
// t in dtype `st` (t itself when it already is).
inline Tensor to_dtype(const Tensor& t, ScalarType st) {
  return t.scalar_type() == st ? t : torch::stable::to(t, st);
}
inline Tensor to_contig(const Tensor& t, ScalarType st) { return contig(to_dtype(t, st)); }

// The value of a 0-d (or one-element) CPU tensor as double.
inline double cpu_scalar(const Tensor& t) {
  const Tensor d = contig(to_dtype(t, kDouble));
  return *d.const_data_ptr<double>();
}

// The message of the error that made the last shim call fail. torch >= 2.13 keeps it
// (torch_exception_get_what_without_backtrace); the symbol is looked up at run time so
// that the library still loads in older torch, where the op's name has to do.
inline std::string last_shim_error() {
  using Fn = const char* (*)();
  static const Fn what = reinterpret_cast<Fn>(
      dlsym(RTLD_DEFAULT, "torch_exception_get_what_without_backtrace"));
  const char* m = what != nullptr ? what() : nullptr;
  return m != nullptr ? std::string(m) : std::string("(this torch does not report the cause)");
}

// A call of torch's C shim (returns an AOTITorchError): a failure throws RuntimeError with
// the call and, where torch reports it, the cause.
#define GENCORE_SHIM_CHECK(call)                                                       \
  do {                                                                                 \
    if ((call) != TORCH_SUCCESS)                                                       \
      throw std::runtime_error(::gencore::str("gencore: ", #call, " failed: ",         \
                                              ::gencore::last_shim_error()));          \
  } while (0)


// ---- ATen ops by name, through the stable dispatcher ----
namespace aten {

template <typename... Args>
StableIValue* call_(std::array<StableIValue, sizeof...(Args)>& stack, const char* op,
                    const char* overload) {
  if (torch_call_dispatcher(op, overload, stack.data(), TORCH_ABI_VERSION) != TORCH_SUCCESS)
    throw std::runtime_error(str("gencore: ", op, ".", overload, " failed: ", last_shim_error()));
  return stack.data();
}

// op(args...) -> Tensor. Arguments: Tensor, int64_t, bool, optionals, std::vector<Tensor>
// (Tensor[]), IntArrayRef. Not Scalar: the stable dispatcher does not convert it (hence
// the 0-d tensors of `scalar` below, and subtract for a - b).
template <typename... Args>
Tensor call(const char* op, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  call_<Args...>(stack, op, overload);
  return torch::stable::detail::to<Tensor>(stack[0]);
}

// A 0-d tensor holding v, with like's dtype and device.
inline Tensor scalar(double v, const Tensor& like) {
  return torch::stable::full({}, v, like.scalar_type(), std::nullopt, like.device());
}
inline Tensor mul(const Tensor& a, const Tensor& b) { return call("aten::mul", "Tensor", a, b); }
inline Tensor mul(const Tensor& a, double b) { return mul(a, scalar(b, a)); }
inline Tensor div(const Tensor& a, const Tensor& b) { return call("aten::div", "Tensor", a, b); }
inline Tensor div(const Tensor& a, double b) { return div(a, scalar(b, a)); }
inline Tensor neg(const Tensor& a) { return call("aten::neg", "", a); }
// a - alpha * b
inline Tensor sub(const Tensor& a, const Tensor& b, double alpha = 1.0) {
  return torch::stable::subtract(a, b, alpha);
}
inline Tensor add(const Tensor& a, const Tensor& b) { return sub(a, b, -1.0); }
inline Tensor reciprocal(const Tensor& a) { return call("aten::reciprocal", "", a); }
inline Tensor sqrt(const Tensor& a) { return call("aten::sqrt", "", a); }
inline Tensor sum(const Tensor& a) { return torch::stable::sum(a); }
// sum over dim (keepdim as given).
inline Tensor sum(const Tensor& a, int64_t dim, bool keepdim = false) {
  const std::vector<int64_t> d{dim};
  return torch::stable::sum(a, IntArrayRef(d), keepdim);
}
// Euclidean norms of the rows of a 2-D tensor, (n, 1).
inline Tensor row_norms(const Tensor& a) { return sqrt(sum(mul(a, a), 1, true)); }
inline Tensor maximum(const Tensor& a, const Tensor& b) { return call("aten::maximum", "", a, b); }
inline Tensor clamp_min(const Tensor& a, double v) { return maximum(a, scalar(v, a)); }
inline Tensor lt(const Tensor& a, double v) { return call("aten::lt", "Tensor", a, scalar(v, a)); }
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  return call("aten::where", "self", cond, a, b);
}
inline Tensor cat(const std::vector<Tensor>& ts, int64_t dim = 0) {
  return call("aten::cat", "", ts, dim);
}
// 0, 1, ..., n - 1 as int64 on like's device, made there (cumulative sum of 0, 1, ..., 1):
// no host-to-device copy, so no stream sync on CUDA.
inline Tensor arange(int64_t n, const Tensor& like) {
  const std::vector<int64_t> size{n};
  Tensor steps = torch::stable::full(IntArrayRef(size), 1.0, kLong, std::nullopt, like.device());
  if (n > 0) torch::stable::fill_(torch::stable::narrow(steps, 0, 0, 1), 0.0);
  return call("aten::cumsum", "", steps, int64_t{0}, std::optional<ScalarType>());
}
inline Tensor expand(const Tensor& a, IntArrayRef size) {
  return call("aten::expand", "", a, size, false);
}
inline Tensor unsqueeze(const Tensor& a, int64_t dim) { return torch::stable::unsqueeze(a, dim); }
inline Tensor narrow(const Tensor& a, int64_t dim, int64_t start, int64_t len) {
  return torch::stable::narrow(const_cast<Tensor&>(a), dim, start, len);
}
inline Tensor t(const Tensor& a) { return torch::stable::transpose(a, 0, 1); }
inline Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index) {
  return call("aten::index_select", "", a, dim, index);
}
// self += src, in place (self's storage is written).
inline void add_into(const Tensor& self, const Tensor& src) {
  Tensor dst = self;
  torch::stable::copy_(dst, add(self, src));
}
// a with src's rows added at rows index of a: a.index_add(0, index, src), a and src 2-D.
inline Tensor index_add_rows(const Tensor& a, const Tensor& index, const Tensor& src) {
  const Tensor idx = expand(aten::unsqueeze(index, int64_t{1}), src.sizes());
  return call("aten::scatter_add", "", a, int64_t{0}, idx, src);
}

}  // namespace aten
}  // namespace gencore
