// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0 on read; 1.0 on write).
// Supported dtypes: float32 ('<f4'), float16 ('<f2'), int32 ('<i4') and uint8 ('|u1', skip masks),
// little-endian, C order. Anything else is a blasst::Error naming the file and what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blasst::npy {

enum class Type : std::uint8_t { f32, f16, i32, u8 };
const char* to_string(Type t);  // "float32", "float16", "int32", "uint8"
std::size_t type_size(Type t);

struct Array {
  Type type = Type::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;  // raw little-endian element data, C order

  std::int64_t numel() const;
  template <class T> T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <class T> const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
};

// Throws blasst::Error: missing file, bad magic, unsupported version, malformed or truncated header,
// Fortran order, unsupported dtype or byte order, data shorter or longer than the shape says.
Array load(const std::string& path);

// Writes atomically: to a temporary file beside `path`, renamed over it only once complete, so a
// failed write never leaves a half-written file. Throws blasst::Error on failure.
void save(const std::string& path, const Array& a);
void save(const std::string& path, Type type, const std::vector<std::int64_t>& shape,
          const void* data);

}  // namespace blasst::npy
