// A tiny JSON object writer for events and status (no parsing).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tlswall::logging {

// Escapes s as a JSON string body (no quotes). Bytes that are not valid
// UTF-8 are written as \u00XX of the byte so the output is always valid.
std::string json_escape(std::string_view s);

class JsonObject {
 public:
  JsonObject& add(std::string_view key, std::string_view value);
  JsonObject& add(std::string_view key, const char* value) {
    return add(key, std::string_view(value));
  }
  JsonObject& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  JsonObject& add(std::string_view key, int64_t value);
  JsonObject& add(std::string_view key, uint64_t value);
  JsonObject& add(std::string_view key, int value) { return add(key, static_cast<int64_t>(value)); }
  JsonObject& add(std::string_view key, unsigned value) {
    return add(key, static_cast<uint64_t>(value));
  }
  JsonObject& add(std::string_view key, double value);
  JsonObject& add_bool(std::string_view key, bool value);
  // `json` must already be valid JSON (an object, array, ...).
  JsonObject& add_raw(std::string_view key, std::string_view json);
  std::string str() const { return body_ + "}"; }

 private:
  void key(std::string_view k);
  std::string body_ = "{";
  bool first_ = true;
};

class JsonArray {
 public:
  JsonArray& add_raw(std::string_view json);
  JsonArray& add(std::string_view s);
  std::string str() const { return body_ + "]"; }

 private:
  std::string body_ = "[";
  bool first_ = true;
};

}  // namespace tlswall::logging
