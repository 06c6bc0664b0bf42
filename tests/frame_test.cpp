// Message framing: the 16-byte header, round trips, and rejection of malformed input.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "tillsync/status.h"
#include "tillsync/transport/frame.h"

namespace tillsync::transport {
namespace {

#define EXPECT_INVALID(result)                                                      \
  do {                                                                              \
    const auto& r_ = (result);                                                      \
    ASSERT_FALSE(r_.ok());                                                          \
    EXPECT_EQ(r_.status().code_name(), "invalid_input") << r_.status().to_string(); \
    EXPECT_EQ(r_.status().field(), "frame");                                        \
  } while (0)

TEST(FrameEncode, HeaderLayout) {
  const std::string bytes = encode_frame(0x2A, 0x0102030405060708ULL, "body");
  ASSERT_EQ(bytes.size(), kFrameHeaderSize + 4);
  EXPECT_EQ(bytes.substr(0, 4), "TSYN");
  EXPECT_EQ(static_cast<std::uint8_t>(bytes[4]), kProtocolVersion);
  EXPECT_EQ(static_cast<std::uint8_t>(bytes[5]), 0x2A);
  EXPECT_EQ(bytes[6], '\0');
  EXPECT_EQ(bytes[7], '\0');
  // Request id little-endian.
  EXPECT_EQ(bytes.substr(8, 8), std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8));
  EXPECT_EQ(bytes.substr(16), "body");
}

TEST(FrameDecode, RoundTrip) {
  std::mt19937_64 rng(17);
  for (int i = 0; i < 200; ++i) {
    std::string body(rng() % 300, '\0');
    for (char& c : body) c = static_cast<char>(rng() & 0xFF);
    const auto type = static_cast<std::uint8_t>(rng() & 0xFF);
    const std::uint64_t id = rng();
    auto f = decode_frame(encode_frame(type, id, body));
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ(f->version, kProtocolVersion);
    EXPECT_EQ(f->type, type);
    EXPECT_EQ(f->request_id, id);
    EXPECT_EQ(f->body, body);
  }
}

TEST(FrameDecode, EmptyBodyAndExtremeIds) {
  for (std::uint64_t id : {std::uint64_t{0}, ~std::uint64_t{0}, std::uint64_t{1} << 63}) {
    auto f = decode_frame(encode_frame(255, id, ""));
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ(f->request_id, id);
    EXPECT_EQ(f->type, 255);
    EXPECT_TRUE(f->body.empty());
  }
}

TEST(FrameDecode, HeaderOutIsFilledForAGoodFrame) {
  Frame header;
  auto f = decode_frame(encode_frame(3, 99, "x"), &header);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(header.type, 3);
  EXPECT_EQ(header.request_id, 99U);
}

TEST(FrameDecode, ShortInputIsInvalid) {
  const std::string whole = encode_frame(1, 2, "");
  for (std::size_t n = 0; n < kFrameHeaderSize; ++n) {
    SCOPED_TRACE(n);
    EXPECT_INVALID(decode_frame(whole.substr(0, n)));
  }
  EXPECT_TRUE(decode_frame(whole).ok());
}

TEST(FrameDecode, BadMagicIsInvalid) {
  for (std::size_t i = 0; i < 4; ++i) {
    std::string bytes = encode_frame(1, 2, "body");
    bytes[i] = static_cast<char>(bytes[i] ^ 0x20);  // "tSYN", "TsYN", ...
    SCOPED_TRACE(bytes.substr(0, 4));
    EXPECT_INVALID(decode_frame(bytes));
  }
  EXPECT_INVALID(decode_frame(std::string(64, '\0')));
}

TEST(FrameDecode, ReservedBytesMustBeZero) {
  for (std::size_t i : {6U, 7U}) {
    for (char v : {'\x01', '\x80', '\xff'}) {
      std::string bytes = encode_frame(1, 2, "body");
      bytes[i] = v;
      Frame header;
      header.type = 77;
      auto f = decode_frame(bytes, &header);
      EXPECT_INVALID(f);
      EXPECT_EQ(header.type, 77) << "garbage must not be reported as a header";
    }
  }
}

TEST(FrameDecode, UnsupportedVersionStillReportsTheHeader) {
  std::string bytes = encode_frame(9, 0xABCDEF, "future body");
  bytes[4] = static_cast<char>(kProtocolVersion + 1);
  Frame header;
  auto f = decode_frame(bytes, &header);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code_name(), "unsupported_version") << f.status().to_string();
  EXPECT_NE(f.status().message().find(std::to_string(kProtocolVersion + 1)), std::string::npos)
      << f.status().message();
  // The receiver can still answer the request it cannot read.
  EXPECT_EQ(header.version, kProtocolVersion + 1);
  EXPECT_EQ(header.type, 9);
  EXPECT_EQ(header.request_id, 0xABCDEFU);

  bytes[4] = '\0';
  EXPECT_EQ(decode_frame(bytes).status().code_name(), "unsupported_version");
  // Without header_out the call is just as safe.
  bytes[4] = '\xff';
  EXPECT_EQ(decode_frame(bytes, nullptr).status().code_name(), "unsupported_version");
}

TEST(FrameDecode, OversizedInputIsInvalid) {
  const std::string at_limit =
      encode_frame(1, 2, std::string(kMaxMessageSize - kFrameHeaderSize, 'a'));
  ASSERT_EQ(at_limit.size(), kMaxMessageSize);
  auto ok = decode_frame(at_limit);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->body.size(), kMaxMessageSize - kFrameHeaderSize);

  const std::string over = at_limit + "b";
  EXPECT_INVALID(decode_frame(over));
}

// Under the sanitizer build this also proves the decoder never reads out of bounds.
TEST(FrameDecode, RandomBytesAreRejectedCleanly) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 5000; ++i) {
    std::string bytes(rng() % 40, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
    if (i % 2 == 0 && bytes.size() >= 8) bytes.replace(0, 4, "TSYN");  // get past the magic
    Frame header;
    auto f = decode_frame(bytes, &header);
    if (f.ok()) {
      EXPECT_EQ(f->body.size(), bytes.size() - kFrameHeaderSize);
    } else {
      EXPECT_TRUE(f.status().code_name() == "invalid_input" ||
                  f.status().code_name() == "unsupported_version")
          << f.status().to_string();
    }
  }
}

}  // namespace
}  // namespace tillsync::transport
