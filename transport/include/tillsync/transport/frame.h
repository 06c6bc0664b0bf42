// Message framing shared by HQ and terminals.
//
// Every message is one ZeroMQ frame: a fixed 16-byte header followed by the body.
//   offset 0  4 bytes  magic "TSYN"
//   offset 4  1 byte   protocol version (kProtocolVersion)
//   offset 5  1 byte   message type (opaque to this layer)
//   offset 6  2 bytes  reserved, zero
//   offset 8  8 bytes  request id, little-endian (echoed in the reply)
//   offset 16 ...      body
// decode_frame() never reads past the input and never allocates more than its size.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tillsync/status.h"

namespace tillsync::transport {

// 2: hello (HQ's push cursor and clock), push with `prev`, pull with feed marks.
inline constexpr std::uint8_t kProtocolVersion = 2;
inline constexpr std::size_t kFrameHeaderSize = 16;
// Largest message accepted by sockets (ZMQ_MAXMSGSIZE) and by decode_frame().
inline constexpr std::size_t kMaxMessageSize = 16 * 1024 * 1024;

struct Frame {
  std::uint8_t version = kProtocolVersion;
  std::uint8_t type = 0;
  std::uint64_t request_id = 0;
  std::string body;
};

std::string encode_frame(std::uint8_t type, std::uint64_t request_id, std::string_view body);

// invalid_input for garbage (bad magic, short or oversized input, reserved bits set);
// unsupported_version when only the version is unknown (the header is still returned
// through `header_out` so the receiver can answer with the request id).
Result<Frame> decode_frame(std::string_view bytes, Frame* header_out = nullptr);

}  // namespace tillsync::transport
