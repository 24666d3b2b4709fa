// The Scribe protocol, as in facebookarchive/scribe if/scribe.thrift, without
// the fb303 base service (tlswall neither calls nor serves fb303). Framed
// transport, binary protocol. Flume's ScribeSource, Fluentd's in_scribe and
// Zipkin's collector speak the same.

namespace cpp scribe.thrift

enum ResultCode {
  OK,
  TRY_LATER
}

struct LogEntry {
  1:  string category,
  2:  string message
}

service scribe {
  ResultCode Log(1: list<LogEntry> messages);
}
