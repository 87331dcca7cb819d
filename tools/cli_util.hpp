// Small pieces of the command line: flag parsing, number parsing and a JSON writer.
#pragma once

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "blasst/npy.hpp"
#include "blasst/types.hpp"

namespace blasst::cli {

// A usage error (unknown flag, missing value or required flag): exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

struct Flag {
  const char* name;  // without the leading "--"
  const char* value; // metavariable, or nullptr for a boolean flag
  const char* help;
};

class Args {
 public:
  // Parses argv[first..argc). "--help" sets help(). Throws UsageError.
  Args(int argc, char** argv, int first, const std::vector<Flag>& flags);
  bool help() const { return help_; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  const std::string& required(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback) const;
  long long get_int(const std::string& name, long long fallback) const;
  double get_double(const std::string& name, double fallback) const;

 private:
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

std::string usage_text(const std::string& synopsis, const std::vector<Flag>& flags);

// Minimal JSON output with stable formatting.
class Json {
 public:
  Json& begin_object();
  Json& end_object();
  Json& key(const std::string& k);
  Json& value(const std::string& s);
  Json& value(const char* s) { return value(std::string(s)); }
  Json& value(double d);
  Json& value(std::int64_t i);
  Json& value(int i) { return value(static_cast<std::int64_t>(i)); }
  Json& value(bool b);
  template <class T> Json& array(const std::vector<T>& v) {
    open('[');
    for (const T& x : v) value(x);
    return close(']');
  }
  Json& begin_array() { return open('['); }
  Json& end_array() { return close(']'); }
  std::string str() const { return out_.str() + "\n"; }

 private:
  Json& open(char c);
  Json& close(char c);
  void separate();
  std::ostringstream out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

// .npy inputs of the subcommands: rank checks, dtype checks and int conversions with messages
// that name the flag.
std::string shape_str(const std::vector<std::int64_t>& s);
npy::Array load_tensor(const std::string& flag, const std::string& path, std::size_t rank_a, std::size_t rank_b = 0);
DType float_dtype(const std::string& flag, const npy::Array& a);
void require_int32(const std::string& flag, const npy::Array& a);
int as_int(const std::string& what, std::int64_t v);

// --threads N (between 1 and 4096), when given, sets the CPU engine's worker threads. Throws Error.
void apply_threads(const Args& a);

// Writes text to path atomically (temporary file, then rename). Throws Error.
void write_text_atomic(const std::string& path, const std::string& text);

// Throws Error (naming the flag) unless path's folder exists, so a run fails before it computes.
void check_output_path(const std::string& flag, const std::string& path);

// All-or-nothing output files: each is written under a temporary name beside its final path;
// commit() renames them all into place. Whatever was not committed is removed on destruction.
class StagedFiles {
 public:
  StagedFiles() = default;
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles();
  std::string stage(const std::string& final_path);  // the temporary path to write
  void commit();

 private:
  std::vector<std::pair<std::string, std::string>> files_;  // (temporary, final)
};

}  // namespace blasst::cli
