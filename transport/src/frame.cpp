#include "tillsync/transport/frame.h"

#include <cstring>

namespace tillsync::transport {
namespace {

constexpr char kMagic[4] = {'T', 'S', 'Y', 'N'};

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_u64(std::string_view in) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

}  // namespace

std::string encode_frame(std::uint8_t type, std::uint64_t request_id, std::string_view body) {
  std::string out;
  out.reserve(kFrameHeaderSize + body.size());
  out.append(kMagic, sizeof kMagic);
  out.push_back(static_cast<char>(kProtocolVersion));
  out.push_back(static_cast<char>(type));
  out.push_back('\0');
  out.push_back('\0');
  put_u64(out, request_id);
  out.append(body);
  return out;
}

Result<Frame> decode_frame(std::string_view bytes, Frame* header_out) {
  if (bytes.size() < kFrameHeaderSize)
    return Status::InvalidInput("frame", "frame shorter than its 16-byte header");
  if (bytes.size() > kMaxMessageSize)
    return Status::InvalidInput("frame", "frame larger than the message size limit");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    return Status::InvalidInput("frame", "bad frame magic");
  if (bytes[6] != '\0' || bytes[7] != '\0')
    return Status::InvalidInput("frame", "reserved frame bytes are not zero");
  Frame f;
  f.version = static_cast<std::uint8_t>(bytes[4]);
  f.type = static_cast<std::uint8_t>(bytes[5]);
  f.request_id = get_u64(bytes.substr(8, 8));
  if (header_out != nullptr) *header_out = f;
  if (f.version != kProtocolVersion)
    return Status::UnsupportedVersion("protocol version " + std::to_string(f.version) +
                                      " is not supported (this build speaks " +
                                      std::to_string(kProtocolVersion) + ")");
  f.body.assign(bytes.substr(kFrameHeaderSize));
  return f;
}

}  // namespace tillsync::transport
