#include "tillsync/capture.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace tillsync {
namespace {

// "TSLOG" plus the PNG trick: CR LF catches text-mode line-ending conversion and ^Z
// stops a stray `type` on Windows from dumping binary to the console.
constexpr std::string_view kMagic{"TSLOG\r\n\x1a", 8};

// Node ids are "STORE/TERMINAL"; 255 bytes is generous and bounds what a reader
// accepts before it has verified anything.
constexpr std::size_t kMaxNodeIdLength = 255;

// A record body above this is treated as corruption, never as an allocation request.
constexpr std::uint32_t kMaxBodyLength = 16u * 1024 * 1024;

// Fixed part of a record body: seq, op_id, entity, kind, hlc, node-id length,
// payload length. The node id and payload bytes come on top.
constexpr std::size_t kBodyFixedLength = 8 + 16 + 16 + 1 + 8 + 2 + 4;

// The end frame's length field. It can never be a body length (it exceeds
// kMaxBodyLength), so a reader tells the end frame from a record by it alone.
constexpr std::uint32_t kEndMarker = 0xFFFFFFFFu;
constexpr std::size_t kFrameHeaderLength = 4 + 4;   // body length, body CRC
constexpr std::size_t kEndFrameLength = 4 + 8 + 4;  // marker, record count, CRC

// Reflected Castagnoli polynomial (0x1EDC6F41 bit-reversed).
constexpr std::uint32_t kCrc32cPolynomial = 0x82F63B78u;

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ kCrc32cPolynomial : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr auto kCrcTable = make_crc_table();

// Little-endian encoding, independent of the host's byte order.
template <typename T>
void put_le(std::string& out, T value) {
  auto v = static_cast<std::uint64_t>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out += static_cast<char>(v & 0xFFu);
    v >>= 8;
  }
}

template <typename T>
T get_le(std::string_view bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) {
    v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  }
  return static_cast<T>(v);
}

// Consumes fields from a record body whose total size is already known; a read past
// the end marks the cursor failed instead of touching memory.
class BodyCursor {
 public:
  explicit BodyCursor(std::string_view bytes) : rest_(bytes) {}
  template <typename T>
  T take_le() {
    return get_le<T>(take(sizeof(T)));
  }
  std::string_view take(std::size_t n) {
    if (failed_ || n > rest_.size()) {
      failed_ = true;
      return std::string_view(kZeros.data(), std::min(n, kZeros.size()));
    }
    std::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }
  bool failed() const { return failed_; }
  std::size_t remaining() const { return rest_.size(); }

 private:
  std::string_view rest_;
  bool failed_ = false;
  // Backing for the values returned after a failed take(); callers check failed()
  // before using anything.
  static constexpr std::array<char, 16> kZeros{};
};

std::string errno_text(int err) { return std::strerror(err); }

Status io_error(std::string_view what, const std::string& path, int err) {
  return Status::Internal(std::string(what) + " '" + path + "': " + errno_text(err));
}

std::string encode_header(const CaptureHeader& header) {
  std::string out(kMagic);
  put_le(out, header.format_version);
  put_le(out, static_cast<std::uint16_t>(header.node_id.size()));
  out += header.node_id;
  put_le(out, header.first_seq);
  put_le(out, header.created_at_ms);
  put_le(out, crc32c(out));
  return out;
}

std::string encode_body(const LogRecord& r) {
  std::string body;
  body.reserve(kBodyFixedLength + r.node_id.size() + r.payload.size());
  put_le(body, r.seq);
  body += r.op_id.raw();
  body += r.entity.raw();
  put_le(body, static_cast<std::uint8_t>(r.kind));
  put_le(body, r.hlc.value);
  put_le(body, static_cast<std::uint16_t>(r.node_id.size()));
  body += r.node_id;
  put_le(body, static_cast<std::uint32_t>(r.payload.size()));
  body += r.payload;
  return body;
}

std::string encode_end_frame(std::int64_t records) {
  std::string out;
  put_le(out, kEndMarker);
  put_le(out, static_cast<std::uint64_t>(records));
  put_le(out, crc32c(out));
  return out;
}

bool write_all(std::FILE* f, std::string_view bytes) {
  return std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
}

// Makes the new directory entry durable too: fsync of the file alone does not
// guarantee the file exists after a power cut. Some filesystems refuse fsync on a
// directory (EINVAL); the data itself is already safe then, so that is not an error.
Status sync_parent_directory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open directory of", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) return io_error("cannot sync directory of", path, err);
  return Status::Ok();
}

}  // namespace

// Standard CRC32C: the register starts at and is finally XORed with 0xFFFFFFFF. Both
// inversions happen inside this call, so the returned value can be passed back as `crc`
// to continue over more bytes: crc32c(b, crc32c(a)) == crc32c(a + b).
std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc) {
  std::uint32_t c = ~crc;
  for (char ch : bytes) {
    c = kCrcTable[(c ^ static_cast<unsigned char>(ch)) & 0xFFu] ^ (c >> 8);
  }
  return ~c;
}

// ---------------------------------------------------------------------------------
// CaptureWriter

Result<CaptureWriter> CaptureWriter::create(const std::string& path, const CaptureHeader& header) {
  if (header.node_id.size() > kMaxNodeIdLength) {
    return Status::InvalidInput("node_id", "node_id: " + std::to_string(header.node_id.size()) +
                                               " bytes is too long for a capture file (at most " +
                                               std::to_string(kMaxNodeIdLength) + ")");
  }
  if (header.format_version != kCaptureFormatVersion) {
    return Status::UnsupportedVersion("this build writes capture format version " +
                                      std::to_string(kCaptureFormatVersion) + ", not " +
                                      std::to_string(header.format_version));
  }
  // Capture files hold customer data: owner-only from the first byte. fchmod covers an
  // existing file, whose mode O_CREAT would keep.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create capture file", path, errno);
  if (::fchmod(fd, 0600) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot restrict permissions of", path, err);
  }
  std::FILE* f = ::fdopen(fd, "wb");
  if (f == nullptr) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot open capture file", path, err);
  }
  CaptureWriter writer(f, path);
  if (!write_all(f, encode_header(header))) {
    return io_error("cannot write capture file", path, errno);
  }
  return writer;
}

CaptureWriter::CaptureWriter(CaptureWriter&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)),
      path_(std::move(other.path_)),
      records_(std::exchange(other.records_, 0)) {}

CaptureWriter& CaptureWriter::operator=(CaptureWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    file_ = std::exchange(other.file_, nullptr);
    path_ = std::move(other.path_);
    records_ = std::exchange(other.records_, 0);
  }
  return *this;
}

CaptureWriter::~CaptureWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

Status CaptureWriter::append(const LogRecord& record) {
  if (file_ == nullptr) {
    return Status::Internal("capture file '" + path_ + "' is already finished or failed");
  }
  if (record.node_id.size() > kMaxNodeIdLength) {
    return Status::InvalidInput("node_id", "node_id: " + std::to_string(record.node_id.size()) +
                                               " bytes is too long for a capture file (at most " +
                                               std::to_string(kMaxNodeIdLength) + ")");
  }
  const std::size_t body_length = kBodyFixedLength + record.node_id.size() + record.payload.size();
  if (body_length > kMaxBodyLength) {
    return Status::InvalidInput("payload", "payload: record seq " + std::to_string(record.seq) +
                                               " is " + std::to_string(body_length) +
                                               " bytes, above the capture limit of " +
                                               std::to_string(kMaxBodyLength));
  }
  const std::string body = encode_body(record);
  std::string frame;
  frame.reserve(kFrameHeaderLength + body.size());
  put_le(frame, static_cast<std::uint32_t>(body.size()));
  put_le(frame, crc32c(body));
  frame += body;
  if (!write_all(file_, frame)) {
    // A partial frame is on disk now; appending more would bury it mid-file, so the
    // writer stops here and the reader will report the file as truncated.
    const int err = errno;
    std::fclose(std::exchange(file_, nullptr));
    return io_error("cannot write capture file", path_, err);
  }
  ++records_;
  return Status::Ok();
}

Status CaptureWriter::finish() {
  if (file_ == nullptr) {
    return Status::Internal("capture file '" + path_ + "' is already finished or failed");
  }
  std::FILE* f = std::exchange(file_, nullptr);
  const bool written = write_all(f, encode_end_frame(records_)) && std::fflush(f) == 0;
  int err = errno;
  const bool synced = written && ::fsync(::fileno(f)) == 0;
  if (written && !synced) err = errno;
  const bool closed = std::fclose(f) == 0;
  if (!written || !synced) return io_error("cannot write capture file", path_, err);
  if (!closed) return io_error("cannot close capture file", path_, errno);
  return sync_parent_directory(path_);
}

// ---------------------------------------------------------------------------------
// CaptureReader

namespace {

// Reads up to `n` bytes; fewer only at end of file (or on a read error, which the
// caller reports the same way: the frame is not all there).
std::size_t read_some(std::FILE* f, char* data, std::size_t n) { return std::fread(data, 1, n, f); }

std::string corrupt_prefix(const std::string& path) {
  return "corrupt capture file '" + path + "': ";
}

}  // namespace

Result<CaptureReader> CaptureReader::open(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound("capture file '" + path + "' does not exist");
    return io_error("cannot open capture file", path, err);
  }
  CaptureReader reader(f, path);

  // Appends the next `n` bytes to header_bytes, or reports where the file ends.
  std::string header_bytes;
  const auto take = [&](std::size_t n) -> Status {
    std::string buf(n, '\0');
    const std::size_t got = read_some(f, buf.data(), n);
    header_bytes.append(buf, 0, got);
    if (got != n) {
      return Status::CorruptLog(corrupt_prefix(path) + "truncated file header at byte offset " +
                                std::to_string(header_bytes.size()) + " (the file ends there)");
    }
    return Status::Ok();
  };

  // Magic and version are the only bytes every format version keeps in place, so they
  // are judged before anything whose meaning depends on the version.
  // A short file that matches the magic so far (also an empty one) is a capture cut
  // off early; anything else is some other file.
  const Status magic_read = take(kMagic.size());
  if (header_bytes != kMagic.substr(0, header_bytes.size())) {
    return Status::CorruptLog("'" + path + "' is not a tillsync capture file (wrong magic bytes)");
  }
  TS_RETURN_IF_ERROR(magic_read);

  TS_RETURN_IF_ERROR(take(2));
  const auto version = get_le<std::uint16_t>(std::string_view(header_bytes).substr(8));
  if (version > kCaptureFormatVersion) {
    return Status::UnsupportedVersion("capture file '" + path + "' has format version " +
                                      std::to_string(version) + "; this build reads up to " +
                                      std::to_string(kCaptureFormatVersion));
  }
  if (version == 0) {
    return Status::CorruptLog(corrupt_prefix(path) +
                              "invalid format version 0 in the file header at byte offset 8");
  }

  TS_RETURN_IF_ERROR(take(2));
  const auto node_length = get_le<std::uint16_t>(std::string_view(header_bytes).substr(10));
  if (node_length > kMaxNodeIdLength) {
    return Status::CorruptLog(corrupt_prefix(path) + "node id length " +
                              std::to_string(node_length) +
                              " exceeds 255 in the file header at byte offset 10");
  }
  TS_RETURN_IF_ERROR(take(node_length));
  TS_RETURN_IF_ERROR(take(8 + 8));
  const std::size_t crc_offset = header_bytes.size();
  TS_RETURN_IF_ERROR(take(4));

  const std::string_view hb(header_bytes);
  const auto stored_crc = get_le<std::uint32_t>(hb.substr(crc_offset));
  const std::uint32_t actual_crc = crc32c(hb.substr(0, crc_offset));
  if (stored_crc != actual_crc) {
    return Status::CorruptLog(corrupt_prefix(path) +
                              "file header checksum mismatch at byte offset " +
                              std::to_string(crc_offset));
  }

  reader.header_.format_version = version;
  reader.header_.node_id = std::string(hb.substr(12, node_length));
  reader.header_.first_seq = get_le<std::int64_t>(hb.substr(12 + node_length));
  reader.header_.created_at_ms = get_le<std::int64_t>(hb.substr(20 + node_length));
  reader.offset_ = header_bytes.size();
  return reader;
}

CaptureReader::CaptureReader(CaptureReader&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)),
      path_(std::move(other.path_)),
      header_(std::move(other.header_)),
      offset_(std::exchange(other.offset_, 0)),
      records_(std::exchange(other.records_, 0)) {}

CaptureReader& CaptureReader::operator=(CaptureReader&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    file_ = std::exchange(other.file_, nullptr);
    path_ = std::move(other.path_);
    header_ = std::move(other.header_);
    offset_ = std::exchange(other.offset_, 0);
    records_ = std::exchange(other.records_, 0);
  }
  return *this;
}

CaptureReader::~CaptureReader() {
  if (file_ != nullptr) std::fclose(file_);
}

Result<std::optional<LogRecord>> CaptureReader::next() {
  if (file_ == nullptr) return Status::Internal("capture reader has no open file");

  const std::uint64_t start = offset_;
  const std::int64_t number = records_ + 1;
  const auto corrupt = [&](const std::string& problem) {
    // Rewind to the frame's start: the reader never moves past a bad frame, so asking
    // again reports the same error instead of decoding from the middle of garbage.
    ::fseeko(file_, static_cast<off_t>(start), SEEK_SET);
    return Status::CorruptLog(corrupt_prefix(path_) + problem + " at byte offset " +
                              std::to_string(start) + ", record " + std::to_string(number));
  };

  std::array<char, kFrameHeaderLength> frame{};
  const std::size_t got = read_some(file_, frame.data(), frame.size());
  if (got == 0) {
    return corrupt("file ends without its end frame (truncated, or the writer never finished)");
  }
  const std::string_view fv(frame.data(), got);
  if (got >= 4 && get_le<std::uint32_t>(fv) == kEndMarker) {
    // The end frame is shorter than a record frame header plus body; read its rest.
    std::array<char, kEndFrameLength> end{};
    std::memcpy(end.data(), frame.data(), got);
    const std::size_t more = read_some(file_, end.data() + got, end.size() - got);
    if (got + more != end.size()) return corrupt("truncated end frame");
    const std::string_view ev(end.data(), end.size());
    if (get_le<std::uint32_t>(ev.substr(12)) != crc32c(ev.substr(0, 12))) {
      return corrupt("end frame checksum mismatch");
    }
    const auto count = get_le<std::uint64_t>(ev.substr(4));
    if (count != static_cast<std::uint64_t>(records_)) {
      return corrupt("end frame counts " + std::to_string(count) + " records but " +
                     std::to_string(records_) + " precede it");
    }
    char extra = 0;
    if (read_some(file_, &extra, 1) != 0) return corrupt("unexpected bytes after the end frame");
    ::fseeko(file_, static_cast<off_t>(start), SEEK_SET);  // a repeated call ends again
    return std::optional<LogRecord>{};
  }
  if (got != frame.size()) return corrupt("truncated record frame");

  const auto body_length = get_le<std::uint32_t>(fv);
  const auto stored_crc = get_le<std::uint32_t>(fv.substr(4));
  if (body_length > kMaxBodyLength) {
    return corrupt("record length " + std::to_string(body_length) + " exceeds the " +
                   std::to_string(kMaxBodyLength) + "-byte limit");
  }
  if (body_length < kBodyFixedLength) {
    return corrupt("record length " + std::to_string(body_length) + " is below the minimum of " +
                   std::to_string(kBodyFixedLength));
  }
  std::string body(body_length, '\0');
  const std::size_t body_got = read_some(file_, body.data(), body.size());
  if (body_got != body.size()) {
    return corrupt("truncated record (" + std::to_string(body_got) + " of " +
                   std::to_string(body_length) + " body bytes present)");
  }
  if (crc32c(body) != stored_crc) return corrupt("record checksum mismatch");

  // The checksum matched, so a disagreement below means the writer produced it:
  // still reported as corruption, never trusted.
  BodyCursor cur(body);
  LogRecord r;
  r.seq = cur.take_le<std::int64_t>();
  r.op_id = *Guid::from_raw(cur.take(16));
  r.entity = *Guid::from_raw(cur.take(16));
  const auto kind_value = cur.take_le<std::uint8_t>();
  r.hlc.value = cur.take_le<std::uint64_t>();
  const auto node_length = cur.take_le<std::uint16_t>();
  if (node_length > kMaxNodeIdLength || std::size_t{node_length} + 4 > cur.remaining()) {
    return corrupt("node id length " + std::to_string(node_length) +
                   " does not fit the record length " + std::to_string(body_length));
  }
  r.node_id = std::string(cur.take(node_length));
  const auto payload_length = cur.take_le<std::uint32_t>();
  if (cur.failed() || payload_length != cur.remaining()) {
    return corrupt("payload length " + std::to_string(payload_length) +
                   " does not match the record length " + std::to_string(body_length));
  }
  r.payload = std::string(cur.take(payload_length));
  const std::optional<OpKind> kind = op_kind_from_int(kind_value);
  if (!kind) return corrupt("unknown operation kind " + std::to_string(kind_value));
  r.kind = *kind;

  offset_ = start + kFrameHeaderLength + body_length;
  ++records_;
  return std::optional<LogRecord>{std::move(r)};
}

}  // namespace tillsync
