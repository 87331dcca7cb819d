#include "cli_util.hpp"

#include "blasst/cpu/engine.hpp"
#include "blasst/npy.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <unistd.h>

namespace blasst::cli {

Args::Args(int argc, char** argv, int first, const std::vector<Flag>& flags) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + a + "'");
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const Flag* f = nullptr;
    for (const Flag& x : flags)
      if (name == x.name) f = &x;
    if (!f) throw UsageError("unknown flag '--" + name + "' (see --help)");
    if (values_.count(name)) throw UsageError("flag '--" + name + "' given twice");
    if (f->value == nullptr) {
      if (inline_value) throw UsageError("flag '--" + name + "' takes no value");
      values_[name] = "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) throw UsageError("flag '--" + name + "' needs a value " + f->value);
      value = argv[++i];
    }
    values_[name] = value;
  }
}

const std::string& Args::required(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) throw UsageError("missing required flag '--" + name + "' (see --help)");
  return it->second;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

long long Args::get_int(const std::string& name, long long fallback) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const char* s = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + name + " expects an integer, got '" + it->second + "'");
  return v;
}

double Args::get_double(const std::string& name, double fallback) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const char* s = it->second.c_str();
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (end == s || *end != '\0') throw UsageError("--" + name + " expects a number, got '" + it->second + "'");
  if (!std::isfinite(v)) throw Error("--" + name + " must be finite, got '" + it->second + "'");
  return v;
}

std::string usage_text(const std::string& synopsis, const std::vector<Flag>& flags) {
  std::ostringstream o;
  o << "usage: " << synopsis << "\n\nflags:\n";
  for (const Flag& f : flags) {
    std::string left = std::string("  --") + f.name + (f.value ? std::string(" ") + f.value : "");
    o << std::left << std::setw(30) << left << " " << f.help << "\n";
  }
  o << std::left << std::setw(30) << "  --help" << " " << "show this help\n";
  return o.str();
}

void Json::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ << ", ";
    first_.back() = false;
  }
}
Json& Json::open(char c) {
  separate();
  out_ << c;
  first_.push_back(true);
  return *this;
}
Json& Json::close(char c) {
  first_.pop_back();
  out_ << c;
  return *this;
}
Json& Json::begin_object() { return open('{'); }
Json& Json::end_object() { return close('}'); }
Json& Json::key(const std::string& k) {
  value(k);
  out_ << ": ";
  after_key_ = true;
  return *this;
}
Json& Json::value(const std::string& s) {
  separate();
  out_ << '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out_ << '\\' << c;
    else if (static_cast<unsigned char>(c) < 0x20) out_ << "\\u" << std::hex << std::setw(4) << std::setfill('0') << int(c) << std::dec << std::setfill(' ');
    else out_ << c;
  }
  out_ << '"';
  return *this;
}
Json& Json::value(double d) {
  separate();
  if (!std::isfinite(d)) {
    out_ << "null";
  } else {
    std::ostringstream t;
    t << std::setprecision(std::numeric_limits<double>::max_digits10) << d;
    out_ << t.str();
  }
  return *this;
}
Json& Json::value(std::int64_t i) {
  separate();
  out_ << i;
  return *this;
}
Json& Json::value(bool b) {
  separate();
  out_ << (b ? "true" : "false");
  return *this;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(path + ": cannot open for writing");
    f << text;
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      throw Error(path + ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the temporary file into place");
  }
}

void check_output_path(const std::string& flag, const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw Error("--" + flag + " " + path + ": folder '" + parent.string() + "' does not exist");
  if (std::filesystem::is_directory(path, ec)) throw Error("--" + flag + " " + path + ": is a folder");
}

StagedFiles::~StagedFiles() {
  for (const auto& f : files_) std::remove(f.first.c_str());
}

std::string StagedFiles::stage(const std::string& final_path) {
  files_.emplace_back(final_path + ".partial." + std::to_string(::getpid()), final_path);
  return files_.back().first;
}

void StagedFiles::commit() {
  for (const auto& f : files_)
    if (std::rename(f.first.c_str(), f.second.c_str()) != 0)
      throw Error(f.second + ": cannot move the finished file into place");
  files_.clear();
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

npy::Array load_tensor(const std::string& flag, const std::string& path, std::size_t rank_a, std::size_t rank_b) {
  npy::Array a = npy::load(path);
  if (a.shape.size() != rank_a && a.shape.size() != rank_b)
    throw Error("--" + flag + " " + path + ": expected a " + std::to_string(rank_a) + "-D array" +
                (rank_b ? " (or " + std::to_string(rank_b) + "-D)" : "") + ", got shape " +
                shape_str(a.shape));
  return a;
}

DType float_dtype(const std::string& flag, const npy::Array& a) {
  if (a.type == npy::Type::f32) return DType::f32;
  if (a.type == npy::Type::f16) return DType::f16;
  throw Error("--" + flag + ": expected float32 or float16, got " + npy::to_string(a.type));
}

void require_int32(const std::string& flag, const npy::Array& a) {
  if (a.type != npy::Type::i32) throw Error("--" + flag + ": expected int32, got " + npy::to_string(a.type));
}

int as_int(const std::string& what, std::int64_t v) {
  if (v > 0x7fffffff) throw Error(what + " is too large (" + std::to_string(v) + ")");
  return static_cast<int>(v);
}

void apply_threads(const Args& a) {
  if (!a.has("threads")) return;
  const long long n = a.get_int("threads", 0);
  if (n < 1 || n > 4096) throw Error("--threads must be between 1 and 4096");
  cpu::set_num_threads(static_cast<int>(n));
}

}  // namespace blasst::cli
