// The Thrift form of an event (tlswall_event.thrift, generated into the
// build tree) and its wire encodings: TBinaryProtocol bytes, base64 text
// (what the Scribe sink sends with format = "thrift").
#pragma once

#include <string>
#include <string_view>

#include "logging/event.h"
#include "tlswall_event_types.h"

namespace tlswall::logging {

schema::Event to_thrift(const Event& e, const std::string& host, const std::string& agent_version);

// TBinaryProtocol (strict) serialization.
std::string serialize_binary(const schema::Event& e);
// False if `bytes` is not one well-formed schema::Event.
bool parse_binary(std::string_view bytes, schema::Event* out);

std::string base64_encode(std::string_view bytes);
// False on characters outside the standard alphabet or bad padding.
bool base64_decode(std::string_view text, std::string* out);

}  // namespace tlswall::logging
