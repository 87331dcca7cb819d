// NumPy .npy reader (format 1.0, 2.0, 3.0) and writer (format 1.0; 2.0 only when a header would not
// fit in 1.0's 16-bit length, as numpy itself does). The writer reproduces np.save byte for byte.
#include "blasst/npy.hpp"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "blasst/types.hpp"

namespace blasst::npy {

const char* to_string(Type t) {
  switch (t) {
    case Type::f32: return "float32";
    case Type::f16: return "float16";
    case Type::i32: return "int32";
    case Type::u8: return "uint8";
  }
  return "unknown";
}

std::size_t type_size(Type t) {
  switch (t) {
    case Type::f32: return 4;
    case Type::f16: return 2;
    case Type::i32: return 4;
    case Type::u8: return 1;
  }
  return 0;
}

std::int64_t Array::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) throw Error("npy::Array: negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(n, d, &n)) throw Error("npy::Array: element count overflows int64");
  }
  return n;
}

namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kAlign = 64;          // numpy's ARRAY_ALIGN
constexpr std::size_t kGrowthDigits = 21;   // numpy's GROWTH_AXIS_MAX_DIGITS

constexpr bool host_little_endian() {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
  return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#else
  return true;  // every platform this library targets (x86-64, aarch64) is little-endian
#endif
}

const char* descr_of(Type t) {
  switch (t) {
    case Type::f32: return "<f4";
    case Type::f16: return "<f2";
    case Type::i32: return "<i4";
    case Type::u8: return "|u1";
  }
  return "?";
}

// Python's repr of a tuple of ints: (), (5,), (2, 3).
std::string shape_repr(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  s += ")";
  return s;
}

// Header text, with control characters made visible so that messages stay on one line.
std::string printable(const std::string& s, std::size_t max_len = 80) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max_len; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// ---------------------------------------------------------------------------------------------
// A parser for the Python literal subset that .npy headers use: a dict of str keys whose values
// are strings, True/False/None, ints and tuples/lists of those.

struct Value {
  enum class Kind { str, boolean, none, integer, tuple, list, dict } kind = Kind::none;
  std::string str;
  bool boolean = false;
  std::int64_t integer = 0;
  bool integer_overflow = false;
  std::vector<Value> items;      // tuple and list elements; dict values
  std::vector<std::string> keys; // dict keys, parallel to items
  std::string raw;               // the source text of this value
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  Value parse_document() {
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the header dict");
    if (v.kind != Value::Kind::dict) fail("the header is not a dict");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": malformed .npy header: " + what + " at offset " + std::to_string(pos_) +
                " in \"" + printable(s_) + "\"");
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r' ||
            s_[pos_] == '\f' || s_[pos_] == '\v'))
      ++pos_;
  }

  bool peek(char c) {
    skip_ws();
    return pos_ < s_.size() && s_[pos_] == c;
  }

  Value parse_value(int depth) {
    if (depth > 32) fail("nesting too deep");
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end of header");
    std::size_t start = pos_;
    Value v;
    char c = s_[pos_];
    if (c == '{') {
      parse_dict(v, depth);
    } else if (c == '(' || c == '[') {
      parse_sequence(v, depth);
    } else if (c == '\'' || c == '"') {
      v.kind = Value::Kind::str;
      v.str = parse_string();
    } else if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
      parse_int(v);
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      std::size_t b = pos_;
      while (pos_ < s_.size() &&
             (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
        ++pos_;
      std::string word = s_.substr(b, pos_ - b);
      if (word == "True" || word == "False") {
        v.kind = Value::Kind::boolean;
        v.boolean = word == "True";
      } else if (word == "None") {
        v.kind = Value::Kind::none;
      } else {
        pos_ = b;
        fail("unexpected name '" + printable(word) + "'");
      }
    } else {
      fail(std::string("unexpected character '") + printable(std::string(1, c)) + "'");
    }
    v.raw = s_.substr(start, pos_ - start);
    return v;
  }

  void parse_dict(Value& v, int depth) {
    v.kind = Value::Kind::dict;
    ++pos_;  // '{'
    while (true) {
      if (peek('}')) { ++pos_; return; }
      skip_ws();
      if (pos_ >= s_.size()) fail("unterminated dict");
      if (s_[pos_] != '\'' && s_[pos_] != '"') fail("dict key is not a string");
      std::string key = parse_string();
      if (!peek(':')) fail("expected ':' after key '" + printable(key) + "'");
      ++pos_;
      Value val = parse_value(depth + 1);
      for (const auto& k : v.keys)
        if (k == key) fail("duplicate key '" + printable(key) + "'");
      v.keys.push_back(std::move(key));
      v.items.push_back(std::move(val));
      if (peek(',')) { ++pos_; continue; }
      if (peek('}')) { ++pos_; return; }
      fail("expected ',' or '}' in dict");
    }
  }

  // '(' ... ')' is a tuple when empty or when it contains a comma; otherwise (x) is just x.
  // '[' ... ']' is a list.
  void parse_sequence(Value& v, int depth) {
    const char open = s_[pos_];
    const char close = open == '(' ? ')' : ']';
    std::size_t start = pos_;
    ++pos_;
    std::vector<Value> items;
    bool comma = false;
    while (true) {
      if (peek(close)) { ++pos_; break; }
      if (pos_ >= s_.size()) fail("unterminated sequence");
      items.push_back(parse_value(depth + 1));
      if (peek(',')) { ++pos_; comma = true; continue; }
      if (peek(close)) { ++pos_; break; }
      fail(std::string("expected ',' or '") + close + "'");
    }
    if (open == '(' && items.size() == 1 && !comma) {
      v = std::move(items[0]);  // parenthesised expression, not a tuple
      v.raw = s_.substr(start, pos_ - start);
      return;
    }
    v.kind = open == '(' ? Value::Kind::tuple : Value::Kind::list;
    v.items = std::move(items);
    v.raw = s_.substr(start, pos_ - start);
  }

  std::string parse_string() {
    const char q = s_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == q) break;
      if (c == '\n') fail("newline inside a string");
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("unterminated string");
        char e = s_[pos_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case '0': out += '\0'; break;
          default: out += e; break;  // \\ \' \" and anything else taken literally
        }
      } else {
        out += c;
      }
    }
    return out;
  }

  void parse_int(Value& v) {
    v.kind = Value::Kind::integer;
    bool neg = false;
    if (s_[pos_] == '-' || s_[pos_] == '+') {
      neg = s_[pos_] == '-';
      ++pos_;
      skip_ws();
    }
    if (pos_ >= s_.size() || !(s_[pos_] >= '0' && s_[pos_] <= '9')) fail("expected a digit");
    // Accumulate as a negative number so that INT64_MIN is representable.
    std::int64_t acc = 0;
    bool overflow = false;
    while (pos_ < s_.size() && ((s_[pos_] >= '0' && s_[pos_] <= '9') || s_[pos_] == '_')) {
      if (s_[pos_] == '_') { ++pos_; continue; }
      int d = s_[pos_] - '0';
      if (!overflow && (__builtin_mul_overflow(acc, 10, &acc) || __builtin_sub_overflow(acc, d, &acc)))
        overflow = true;
      ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;  // Python 2 long suffix
    if (pos_ < s_.size() && (std::isalpha(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '.'))
      fail("expected an integer");
    if (!neg) {
      if (acc == std::numeric_limits<std::int64_t>::min()) overflow = true;
      else acc = -acc;
    }
    v.integer = acc;
    v.integer_overflow = overflow;
  }

  const std::string& path_;
  const std::string& s_;
  std::size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------

const char* kSupported =
    "supported: float32 '<f4', float16 '<f2', int32 '<i4', uint8 '|u1'";

[[noreturn]] void unsupported_dtype(const std::string& path, const std::string& shown,
                                    const std::string& name, const std::string& advice) {
  std::string msg = path + ": unsupported dtype " + shown;
  if (!name.empty()) msg += " (" + name + ")";
  msg += "; ";
  msg += kSupported;
  if (!advice.empty()) msg += "; " + advice;
  throw Error(msg);
}

Type parse_descr(const std::string& path, const Value& v) {
  if (v.kind != Value::Kind::str) {
    std::string kind = v.kind == Value::Kind::list ? "structured" : "not a simple dtype";
    unsupported_dtype(path, printable(v.raw), kind, "");
  }
  const std::string& d = v.str;
  const std::string shown = "'" + printable(d) + "'";
  std::size_t i = 0;
  char order = '=';  // numpy treats a missing byte-order character as native
  if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) order = d[i++];
  if (i >= d.size() || !std::isalpha(static_cast<unsigned char>(d[i])))
    unsupported_dtype(path, shown, "", "");
  const char kind = d[i++];
  std::size_t size = 0;
  bool has_size = i < d.size();
  for (; i < d.size(); ++i) {
    if (!(d[i] >= '0' && d[i] <= '9') || size > 100000) {
      has_size = false;
      size = 0;
      break;
    }
    size = size * 10 + static_cast<std::size_t>(d[i] - '0');
  }
  if (i != d.size()) unsupported_dtype(path, shown, "", "");

  const bool little = order == '<' || (order == '=' && host_little_endian());
  const bool big = order == '>' || (order == '=' && !host_little_endian());

  std::string name;
  std::string advice;
  if (has_size) {
    switch (kind) {
      case 'f':
        name = size == 2 ? "float16" : "float" + std::to_string(size * 8);
        if (size == 4 && little) return Type::f32;
        if (size == 2 && little) return Type::f16;
        advice = size == 2 ? "convert with .astype(np.float16)" : "convert with .astype(np.float32)";
        break;
      case 'i':
        name = "int" + std::to_string(size * 8);
        if (size == 4 && little) return Type::i32;
        advice = "convert with .astype(np.int32)";
        break;
      case 'u':
        name = "uint" + std::to_string(size * 8);
        if (size == 1) return Type::u8;  // a single byte has no byte order
        advice = "convert with .astype(np.int32)";
        break;
      case 'b':
        name = size == 1 ? "bool" : "";
        advice = "convert with .astype(np.uint8)";
        break;
      case 'c': name = "complex" + std::to_string(size * 8); break;
      case 'U': name = "unicode string"; break;
      case 'S': name = "byte string"; break;
      case 'V': name = "void"; break;
      default: break;
    }
  } else {
    switch (kind) {
      case 'O': name = "object"; break;
      case 'M': name = "datetime64"; break;
      case 'm': name = "timedelta64"; break;
      default: break;
    }
  }
  if (!name.empty() && (kind == 'f' || kind == 'i' || kind == 'u') && size > 1) {
    if (big) name = "big-endian " + name;
    else if (order == '|') name = "no byte order " + name;
  }
  unsupported_dtype(path, shown, name, advice);
}

std::string sys_error() { return std::strerror(errno); }

struct File {
  std::FILE* f = nullptr;
  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (f) std::fclose(f);
  }
};

std::uint64_t read_le(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool read_exact(std::FILE* f, void* dst, std::size_t n) {
  auto* p = static_cast<unsigned char*>(dst);
  while (n > 0) {
    std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
    std::size_t got = std::fread(p, 1, chunk, f);
    if (got != chunk) return false;
    p += got;
    n -= got;
  }
  return true;
}

std::string bytes_str(std::uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

}  // namespace

Array load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": cannot open file: is a directory");

  File file;
  errno = 0;
  file.f = std::fopen(path.c_str(), "rb");
  if (!file.f) throw Error(path + ": cannot open file: " + sys_error());

  if (std::fseek(file.f, 0, SEEK_END) != 0) throw Error(path + ": cannot read file: " + sys_error());
  const long end = std::ftell(file.f);
  if (end < 0) throw Error(path + ": cannot read file: " + sys_error());
  const std::uint64_t file_size = static_cast<std::uint64_t>(end);
  std::rewind(file.f);

  unsigned char pre[12];
  const std::size_t pre_n = file_size < 8 ? static_cast<std::size_t>(file_size) : 8;
  if (!read_exact(file.f, pre, pre_n)) throw Error(path + ": cannot read file: read error");
  if (pre_n < kMagicLen || std::memcmp(pre, kMagic, kMagicLen) != 0)
    throw Error(path + ": not a .npy file (bad magic; expected \\x93NUMPY, file is " +
                bytes_str(file_size) + ")");
  if (pre_n < 8)
    throw Error(path + ": truncated header: file ends after " + bytes_str(file_size));
  const int major = pre[6], minor = pre[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0))
    throw Error(path + ": unsupported .npy format version " + std::to_string(major) + "." +
                std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");

  const int len_bytes = major == 1 ? 2 : 4;
  std::uint64_t prefix = 8 + static_cast<std::uint64_t>(len_bytes);
  if (file_size < prefix)
    throw Error(path + ": truncated header: file ends after " + bytes_str(file_size));
  if (!read_exact(file.f, pre + 8, static_cast<std::size_t>(len_bytes)))
    throw Error(path + ": cannot read file: read error");
  const std::uint64_t header_len = read_le(pre + 8, len_bytes);
  if (header_len > file_size - prefix)
    throw Error(path + ": truncated header: header length " + std::to_string(header_len) +
                " runs past the end of the file (" + bytes_str(file_size) + ")");

  std::string header(static_cast<std::size_t>(header_len), '\0');
  if (header_len > 0 && !read_exact(file.f, header.data(), header.size()))
    throw Error(path + ": cannot read file: read error");
  // 1.0/2.0 headers are Latin-1 and 3.0 headers UTF-8; a valid header's keys and values are ASCII,
  // so the bytes are parsed as they are (non-ASCII bytes can only appear inside strings).

  const Value dict = HeaderParser(path, header).parse_document();
  const Value* descr = nullptr;
  const Value* fortran = nullptr;
  const Value* shape_v = nullptr;
  for (std::size_t i = 0; i < dict.keys.size(); ++i) {
    const std::string& key = dict.keys[i];
    if (key == "descr") descr = &dict.items[i];
    else if (key == "fortran_order") fortran = &dict.items[i];
    else if (key == "shape") shape_v = &dict.items[i];
    else
      throw Error(path + ": malformed .npy header: unexpected key '" + printable(key) +
                  "' in \"" + printable(header) + "\"");
  }
  const char* missing = !descr ? "descr" : !fortran ? "fortran_order" : !shape_v ? "shape" : nullptr;
  if (missing)
    throw Error(path + ": malformed .npy header: missing key '" + missing + "' in \"" +
                printable(header) + "\"");

  if (fortran->kind != Value::Kind::boolean)
    throw Error(path + ": malformed .npy header: fortran_order is not True or False: " +
                printable(fortran->raw));
  if (shape_v->kind != Value::Kind::tuple && shape_v->kind != Value::Kind::list)
    throw Error(path + ": malformed .npy header: bad shape " + printable(shape_v->raw) +
                " (expected a tuple of ints)");
  std::vector<std::int64_t> shape;
  for (const Value& d : shape_v->items) {
    if (d.kind != Value::Kind::integer)
      throw Error(path + ": malformed .npy header: bad shape " + printable(shape_v->raw) +
                  " (expected a tuple of ints)");
    if (d.integer_overflow)
      throw Error(path + ": shape " + printable(shape_v->raw) + " is too large (dimension " +
                  printable(d.raw) + " overflows int64)");
    if (d.integer < 0)
      throw Error(path + ": negative dimension " + std::to_string(d.integer) + " in shape " +
                  printable(shape_v->raw));
    shape.push_back(d.integer);
  }

  const Type type = parse_descr(path, *descr);
  if (fortran->boolean)
    throw Error(path + ": Fortran order (fortran_order: True) is unsupported; save a C-order array "
                "with np.save(path, np.ascontiguousarray(a))");

  // numel * itemsize, guarded against overflow.
  bool zero = false;
  for (std::int64_t d : shape) zero = zero || d == 0;
  std::uint64_t need = type_size(type);
  if (zero) {
    need = 0;
  } else {
    for (std::int64_t d : shape) {
      if (__builtin_mul_overflow(need, static_cast<std::uint64_t>(d), &need))
        throw Error(path + ": shape " + shape_repr(shape) + " is too large (" + to_string(type) +
                    " data size overflows 64 bits)");
    }
  }

  const std::uint64_t data_off = prefix + header_len;
  const std::uint64_t have = file_size - data_off;
  if (have < need)
    throw Error(path + ": truncated data: expected " + bytes_str(need) + ", found " +
                std::to_string(have) + " (shape " + shape_repr(shape) + ", " + to_string(type) + ")");
  if (have > need)
    throw Error(path + ": trailing bytes after the data: expected " + bytes_str(need) + ", found " +
                std::to_string(have) + " (shape " + shape_repr(shape) + ", " + to_string(type) + ")");
  if (need > std::numeric_limits<std::size_t>::max())
    throw Error(path + ": array of " + bytes_str(need) + " is too large for this platform");

  Array a;
  a.type = type;
  a.shape = std::move(shape);
  try {
    a.bytes.resize(static_cast<std::size_t>(need));
  } catch (const std::bad_alloc&) {
    throw Error(path + ": out of memory allocating " + bytes_str(need));
  } catch (const std::length_error&) {
    throw Error(path + ": out of memory allocating " + bytes_str(need));
  }
  if (need > 0 && !read_exact(file.f, a.bytes.data(), a.bytes.size()))
    throw Error(path + ": cannot read file: read error in the data");
  return a;
}

namespace {

// The complete header block (magic .. newline) exactly as np.save writes it.
std::string make_header(Type type, const std::vector<std::int64_t>& shape) {
  std::string dict = std::string("{'descr': '") + descr_of(type) +
                     "', 'fortran_order': False, 'shape': " + shape_repr(shape) + ", }";
  if (!shape.empty()) {
    const std::size_t digits = std::to_string(shape[0]).size();
    if (digits < kGrowthDigits) dict.append(kGrowthDigits - digits, ' ');
  }
  // Version 1.0 has a 16-bit header length; numpy falls back to 2.0 when it does not fit.
  for (int major : {1, 2}) {
    const std::size_t len_bytes = major == 1 ? 2 : 4;
    const std::size_t hlen = dict.size() + 1;  // + '\n'
    const std::size_t pad = kAlign - ((kMagicLen + 2 + len_bytes + hlen) % kAlign);
    const std::size_t total = hlen + pad;
    if (major == 1 && total > 0xffff) continue;
    std::string out(reinterpret_cast<const char*>(kMagic), kMagicLen);
    out += static_cast<char>(major);
    out += '\0';
    for (std::size_t i = 0; i < len_bytes; ++i) out += static_cast<char>((total >> (8 * i)) & 0xff);
    out += dict;
    out.append(pad, ' ');
    out += '\n';
    return out;
  }
  throw Error("unreachable");
}

std::atomic<unsigned> g_tmp_counter{0};

}  // namespace

void save(const std::string& path, Type type, const std::vector<std::int64_t>& shape,
          const void* data) {
  std::uint64_t nbytes = type_size(type);
  bool zero = false;
  for (std::int64_t d : shape) {
    if (d < 0)
      throw Error(path + ": cannot save: negative dimension " + std::to_string(d) + " in shape " +
                  shape_repr(shape));
    zero = zero || d == 0;
  }
  if (zero) nbytes = 0;
  else
    for (std::int64_t d : shape)
      if (__builtin_mul_overflow(nbytes, static_cast<std::uint64_t>(d), &nbytes))
        throw Error(path + ": cannot save: shape " + shape_repr(shape) + " is too large");
  if (nbytes > 0 && data == nullptr) throw Error(path + ": cannot save: no data (null pointer)");

  const std::string header = make_header(type, shape);
  // Unique per process and per call, so concurrent saves of one path never share a temporary.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(g_tmp_counter.fetch_add(1));

  errno = 0;
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot save: cannot create " + tmp + ": " + sys_error());

  auto fail = [&](const std::string& what) {
    const std::string err = sys_error();
    if (f) std::fclose(f);
    f = nullptr;
    std::remove(tmp.c_str());
    throw Error(path + ": cannot save: " + what + (err.empty() ? "" : ": " + err));
  };

  errno = 0;
  if (std::fwrite(header.data(), 1, header.size(), f) != header.size()) fail("write error");
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t left = nbytes;
  while (left > 0) {
    const std::size_t chunk =
        left < (std::uint64_t{1} << 30) ? static_cast<std::size_t>(left) : (std::size_t{1} << 30);
    if (std::fwrite(p, 1, chunk, f) != chunk) fail("write error");
    p += chunk;
    left -= chunk;
  }
  if (std::fflush(f) != 0) fail("write error");
  errno = 0;
  const int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) fail("write error on close");
  errno = 0;
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " over it");
}

void save(const std::string& path, const Array& a) {
  std::uint64_t n = 0;
  try {
    n = static_cast<std::uint64_t>(a.numel());
  } catch (const Error& e) {
    throw Error(path + ": cannot save: " + e.what());
  }
  std::uint64_t need = 0;
  if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(type_size(a.type)), &need) ||
      need != a.bytes.size())
    throw Error(path + ": cannot save: " + to_string(a.type) + " array of shape " +
                shape_repr(a.shape) + " needs " + bytes_str(need) + " but holds " +
                bytes_str(a.bytes.size()));
  save(path, a.type, a.shape, a.bytes.data());
}

}  // namespace blasst::npy
