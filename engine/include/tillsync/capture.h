// Capture files (.tslog): a node's change log exported for support engineers.
// The byte layout is documented in docs/capture-format.md.
//
// CaptureWriter streams records to a file created with mode 0600; CaptureReader
// streams them back, one record in memory at a time, verifying framing and CRC32C.
// Errors: corrupt_log (with byte offset and record number in the message) for any
// malformed, truncated or checksum-failing input; unsupported_version for a newer
// format. Neither class is thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

inline constexpr std::uint16_t kCaptureFormatVersion = 1;

struct CaptureHeader {
  std::uint16_t format_version = kCaptureFormatVersion;
  std::string node_id;
  std::int64_t first_seq = 0;  // seq of the first record (0 when the file is empty)
  std::int64_t created_at_ms = 0;
};

// CRC32C (Castagnoli), as used in record frames.
std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0);

class CaptureWriter {
 public:
  static Result<CaptureWriter> create(const std::string& path, const CaptureHeader& header);
  CaptureWriter(CaptureWriter&&) noexcept;
  CaptureWriter& operator=(CaptureWriter&&) noexcept;
  ~CaptureWriter();  // closes; an unfinished file is left as written so far

  Status append(const LogRecord& record);
  // Flushes and fsyncs. Required for a complete file.
  Status finish();
  std::int64_t records() const { return records_; }

 private:
  CaptureWriter(std::FILE* f, std::string path) : file_(f), path_(std::move(path)) {}
  std::FILE* file_ = nullptr;
  std::string path_;
  std::int64_t records_ = 0;
};

class CaptureReader {
 public:
  static Result<CaptureReader> open(const std::string& path);
  CaptureReader(CaptureReader&&) noexcept;
  CaptureReader& operator=(CaptureReader&&) noexcept;
  ~CaptureReader();

  const CaptureHeader& header() const { return header_; }
  // The next record, nullopt at a clean end of file.
  Result<std::optional<LogRecord>> next();
  std::uint64_t offset() const { return offset_; }
  std::int64_t records_read() const { return records_; }

 private:
  CaptureReader(std::FILE* f, std::string path) : file_(f), path_(std::move(path)) {}
  std::FILE* file_ = nullptr;
  std::string path_;
  CaptureHeader header_;
  std::uint64_t offset_ = 0;
  std::int64_t records_ = 0;
};

}  // namespace tillsync
