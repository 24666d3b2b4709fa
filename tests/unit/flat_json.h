// A strict little JSON reader for test assertions (tests only).
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace tlswall::test_support {

// A strict little JSON reader for assertions: flattens a document into
// "path" -> value, where path joins object keys and array indices with '.'
// and a value is a literal (7, true, null), a decoded string in quotes, or
// "{}" / "[]" for an empty container. Fails on any syntax error and on a
// key repeated within one object.
class FlatJson {
 public:
  static bool Parse(std::string_view text, std::map<std::string, std::string>* out,
                    std::string* error) {
    FlatJson p(text, out);
    p.Ws();
    const bool ok = p.Value("") && (p.Ws(), p.i_ == p.s_.size());
    if (!ok) *error = "JSON error near offset " + std::to_string(p.i_) + ": " + p.why_;
    return ok;
  }

 private:
  FlatJson(std::string_view s, std::map<std::string, std::string>* out) : s_(s), out_(*out) {}

  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void Ws() {
    while (Peek() == ' ' || Peek() == '\n' || Peek() == '\t' || Peek() == '\r') ++i_;
  }
  bool Fail(const char* why) {
    why_ = why;
    return false;
  }
  static std::string Join(const std::string& path, const std::string& k) {
    return path.empty() ? k : path + "." + k;
  }
  bool Put(const std::string& path, const std::string& v) {
    return out_.emplace(path, v).second || Fail("duplicate path");
  }

  bool String(std::string* v) {
    if (Peek() != '"') return Fail("expected string");
    ++i_;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("raw control character in string");
      if (c != '\\') {
        *v += c;
        continue;
      }
      const char e = Peek();
      ++i_;
      switch (e) {
        case '"':
          *v += '"';
          break;
        case '\\':
          *v += '\\';
          break;
        case '/':
          *v += '/';
          break;
        case 'b':
          *v += '\b';
          break;
        case 'f':
          *v += '\f';
          break;
        case 'n':
          *v += '\n';
          break;
        case 'r':
          *v += '\r';
          break;
        case 't':
          *v += '\t';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) return Fail("short \\u escape");
          const std::string hex(s_.substr(i_, 4));
          if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            return Fail("bad \\u escape");
          }
          const unsigned cp = static_cast<unsigned>(std::strtoul(hex.c_str(), nullptr, 16));
          i_ += 4;
          if (cp < 0x80) {
            *v += static_cast<char>(cp);
          } else if (cp < 0x800) {
            *v += static_cast<char>(0xc0 | (cp >> 6));
            *v += static_cast<char>(0x80 | (cp & 0x3f));
          } else {
            *v += static_cast<char>(0xe0 | (cp >> 12));
            *v += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            *v += static_cast<char>(0x80 | (cp & 0x3f));
          }
          break;
        }
        default:
          return Fail("bad escape");
      }
    }
    return Fail("unterminated string");
  }

  bool Value(const std::string& path) {
    const char c = Peek();
    if (c == '{' || c == '[') {
      const bool obj = c == '{';
      ++i_;
      Ws();
      if (Peek() == (obj ? '}' : ']')) {
        ++i_;
        return Put(path, obj ? "{}" : "[]");
      }
      std::set<std::string> keys;
      for (size_t n = 0;; ++n) {
        Ws();
        std::string k = std::to_string(n);
        if (obj) {
          k.clear();
          if (!String(&k)) return false;
          if (!keys.insert(k).second) return Fail("duplicate key");
          Ws();
          if (Peek() != ':') return Fail("expected ':'");
          ++i_;
          Ws();
        }
        if (!Value(Join(path, k))) return false;
        Ws();
        if (Peek() == ',') {
          ++i_;
          continue;
        }
        if (Peek() == (obj ? '}' : ']')) {
          ++i_;
          return true;
        }
        return Fail("expected ',' or end of container");
      }
    }
    if (c == '"') {
      std::string v;
      return String(&v) && Put(path, "\"" + v + "\"");
    }
    const size_t start = i_;
    while (std::isalnum(static_cast<unsigned char>(Peek())) || Peek() == '-' || Peek() == '+' ||
           Peek() == '.') {
      ++i_;
    }
    const std::string lit(s_.substr(start, i_ - start));
    if (lit == "true" || lit == "false" || lit == "null") return Put(path, lit);
    if (lit.empty()) return Fail("expected a value");
    char* end = nullptr;
    std::strtod(lit.c_str(), &end);
    if (*end != '\0' || lit[0] == '+' || lit[0] == '.') return Fail("bad number");
    return Put(path, lit);
  }

  std::string_view s_;
  std::map<std::string, std::string>& out_;
  size_t i_ = 0;
  std::string why_;
};

}  // namespace tlswall::test_support
