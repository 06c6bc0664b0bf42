#include "tillsync/capture.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace tillsync {
namespace {

using tillsync::testing::TempDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Guid guid_with(std::uint8_t fill) {
  Guid g;
  g.bytes.fill(fill);
  g.bytes[15] = static_cast<std::uint8_t>(fill ^ 0x5A);
  return g;
}

LogRecord record(std::int64_t seq, OpKind kind, std::string payload) {
  LogRecord r;
  r.seq = seq;
  r.op_id = guid_with(static_cast<std::uint8_t>(seq));
  r.entity = guid_with(static_cast<std::uint8_t>(0x80 + seq));
  r.kind = kind;
  r.hlc = Hlc::make(1'700'000'000'000 + static_cast<std::uint64_t>(seq),
                    static_cast<std::uint16_t>(seq));
  r.node_id = "S001/T01";
  r.payload = std::move(payload);
  return r;
}

std::vector<LogRecord> sample_records() {
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  return {
      record(1, OpKind::customer_create, binary),
      record(2, OpKind::customer_update, std::string("\0\x01\xff\r\n\x1a", 6)),
      record(3, OpKind::address_add, ""),
      record(4, OpKind::address_remove, std::string(70'000, 'x')),
      record(5, OpKind::contact_add, "contact"),
      record(6, OpKind::contact_remove, "bye"),
  };
}

CaptureHeader sample_header(std::int64_t first_seq = 1) {
  CaptureHeader h;
  h.node_id = "S001/T01";
  h.first_seq = first_seq;
  h.created_at_ms = 1'700'000'123'456;
  return h;
}

void write_capture(const std::string& path, const CaptureHeader& header,
                   const std::vector<LogRecord>& records) {
  Result<CaptureWriter> w = CaptureWriter::create(path, header);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  for (const LogRecord& r : records) ASSERT_TRUE(w->append(r).ok());
  EXPECT_EQ(w->records(), static_cast<std::int64_t>(records.size()));
  Status finished = w->finish();
  ASSERT_TRUE(finished.ok()) << finished.to_string();
}

// Reads the whole file; returns the first error, or OK with every record in `out`.
Status read_all(const std::string& path, std::vector<LogRecord>* out = nullptr) {
  Result<CaptureReader> reader = CaptureReader::open(path);
  if (!reader.ok()) return reader.status();
  for (;;) {
    Result<std::optional<LogRecord>> next = reader->next();
    if (!next.ok()) return next.status();
    if (!next->has_value()) return Status::Ok();
    if (out != nullptr) out->push_back(**next);
  }
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// Header length for sample_header(): magic 8, version 2, node-id length 2 + 8 bytes,
// first_seq 8, created_at 8, CRC 4.
constexpr std::size_t kSampleHeaderLength = 8 + 2 + 2 + 8 + 8 + 8 + 4;

// ---------------------------------------------------------------------------------
// CRC32C

TEST(Crc32c, MatchesTheStandardCheckValue) { EXPECT_EQ(crc32c("123456789"), 0xE3069283u); }

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
}

TEST(Crc32c, ChainsOverSplitInput) {
  const std::string data = "The quick brown fox jumps over the lazy dog";
  for (std::size_t cut = 0; cut <= data.size(); ++cut) {
    const std::string_view v(data);
    EXPECT_EQ(crc32c(v.substr(cut), crc32c(v.substr(0, cut))), crc32c(data)) << cut;
  }
}

TEST(Crc32c, DetectsASingleBitFlip) {
  std::string data = "tillsync capture record";
  const std::uint32_t before = crc32c(data);
  data[5] = static_cast<char>(data[5] ^ 0x10);
  EXPECT_NE(crc32c(data), before);
}

// ---------------------------------------------------------------------------------
// Round trips

TEST(Capture, RoundTripsRecordsAndHeader) {
  TempDir dir;
  const std::string path = dir.file("log.tslog");
  const std::vector<LogRecord> records = sample_records();
  write_capture(path, sample_header(), records);

  Result<CaptureReader> reader = CaptureReader::open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().format_version, kCaptureFormatVersion);
  EXPECT_EQ(reader->header().node_id, "S001/T01");
  EXPECT_EQ(reader->header().first_seq, 1);
  EXPECT_EQ(reader->header().created_at_ms, 1'700'000'123'456);
  EXPECT_EQ(reader->offset(), kSampleHeaderLength);

  for (const LogRecord& expected : records) {
    Result<std::optional<LogRecord>> got = reader->next();
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ(**got, expected);
  }
  Result<std::optional<LogRecord>> end = reader->next();
  ASSERT_TRUE(end.ok()) << end.status().to_string();
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ(reader->records_read(), static_cast<std::int64_t>(records.size()));
  // The end stays the end.
  end = reader->next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

TEST(Capture, RoundTripsExtremeFieldValues) {
  TempDir dir;
  const std::string path = dir.file("extreme.tslog");
  LogRecord r = record(1, OpKind::customer_create, "p");
  r.seq = INT64_MAX;
  r.hlc.value = UINT64_MAX;
  r.node_id = std::string(255, 'n');
  LogRecord empty_node = record(2, OpKind::contact_add, "q");
  empty_node.node_id.clear();
  empty_node.seq = -1;
  CaptureHeader h = sample_header(INT64_MIN);
  h.node_id = std::string(255, 'h');
  h.created_at_ms = -5;
  write_capture(path, h, {r, empty_node});

  std::vector<LogRecord> got;
  ASSERT_TRUE(read_all(path, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], r);
  EXPECT_EQ(got[1], empty_node);
  Result<CaptureReader> reader = CaptureReader::open(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader->header().node_id, h.node_id);
  EXPECT_EQ(reader->header().first_seq, INT64_MIN);
  EXPECT_EQ(reader->header().created_at_ms, -5);
}

TEST(Capture, EmptyCaptureHasOnlyHeaderAndEnd) {
  TempDir dir;
  const std::string path = dir.file("empty.tslog");
  write_capture(path, sample_header(0), {});
  Result<CaptureReader> reader = CaptureReader::open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().first_seq, 0);
  Result<std::optional<LogRecord>> next = reader->next();
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(reader->records_read(), 0);
}

TEST(Capture, LayoutMatchesTheDocumentedFormat) {
  TempDir dir;
  const std::string path = dir.file("layout.tslog");
  write_capture(path, sample_header(7), {record(7, OpKind::address_add, "PAY")});
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), kSampleHeaderLength + 8 + (55 + 8 + 3) + 16);
  EXPECT_EQ(bytes.substr(0, 8), std::string("TSLOG\r\n\x1a", 8));
  EXPECT_EQ(bytes.substr(8, 2), std::string("\x01\x00", 2));   // version 1, LE
  EXPECT_EQ(bytes.substr(10, 2), std::string("\x08\x00", 2));  // node-id length
  EXPECT_EQ(bytes.substr(12, 8), "S001/T01");
  EXPECT_EQ(bytes.substr(20, 8), std::string("\x07\0\0\0\0\0\0\0", 8));  // first_seq
  const std::size_t body_at = kSampleHeaderLength + 8;
  EXPECT_EQ(bytes.substr(kSampleHeaderLength, 4), std::string("\x42\0\0\0", 4));  // 66
  EXPECT_EQ(bytes[body_at + 8 + 32], '\x03');  // kind after seq, op_id, entity
  EXPECT_EQ(bytes.substr(body_at + 66 - 3, 3), "PAY");
  EXPECT_EQ(bytes.substr(body_at + 66, 4), "\xff\xff\xff\xff");  // end frame marker
}

TEST(Capture, FileIsCreatedOwnerOnly) {
  TempDir dir;
  const std::string path = dir.file("private.tslog");
  write_capture(path, sample_header(), sample_records());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Capture, OverwritingAWorldReadableFileMakesItOwnerOnly) {
  TempDir dir;
  const std::string path = dir.file("reused.tslog");
  write_bytes(path, "old contents");
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  write_capture(path, sample_header(), {record(1, OpKind::customer_create, "x")});
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(read_all(path).ok());
}

TEST(Capture, WriterRejectsOversizedInput) {
  TempDir dir;
  CaptureHeader h = sample_header();
  h.node_id = std::string(256, 'n');
  EXPECT_EQ(CaptureWriter::create(dir.file("a.tslog"), h).status().code(), Code::invalid_input);

  Result<CaptureWriter> w = CaptureWriter::create(dir.file("b.tslog"), sample_header());
  ASSERT_TRUE(w.ok());
  LogRecord long_node = record(1, OpKind::customer_create, "x");
  long_node.node_id = std::string(256, 'n');
  EXPECT_EQ(w->append(long_node).code(), Code::invalid_input);
  LogRecord huge = record(1, OpKind::customer_create, std::string(16u * 1024 * 1024, 'h'));
  EXPECT_EQ(w->append(huge).code(), Code::invalid_input);
  // Rejected records leave the writer usable.
  EXPECT_TRUE(w->append(record(1, OpKind::customer_create, "ok")).ok());
  EXPECT_TRUE(w->finish().ok());
  EXPECT_FALSE(w->append(record(2, OpKind::customer_create, "late")).ok());
  std::vector<LogRecord> got;
  ASSERT_TRUE(read_all(dir.file("b.tslog"), &got).ok());
  EXPECT_EQ(got.size(), 1u);
}

TEST(Capture, CreateFailsInAMissingDirectory) {
  TempDir dir;
  Result<CaptureWriter> w = CaptureWriter::create(dir.file("no/such/dir.tslog"), sample_header());
  EXPECT_FALSE(w.ok());
}

TEST(Capture, OpeningAMissingFileIsNotFound) {
  TempDir dir;
  EXPECT_EQ(CaptureReader::open(dir.file("missing.tslog")).status().code(), Code::not_found);
}

// ---------------------------------------------------------------------------------
// Corruption

class CaptureCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("c.tslog");
    write_capture(path_, sample_header(), sample_records());
    bytes_ = read_bytes(path_);
    // Record frame offsets, computed from the format: 8-byte frame header + body.
    std::size_t at = kSampleHeaderLength;
    for (const LogRecord& r : sample_records()) {
      frames_.push_back(at);
      at += 8 + 55 + r.node_id.size() + r.payload.size();
    }
    end_frame_ = at;
    ASSERT_EQ(bytes_.size(), end_frame_ + 16);
  }

  Status read_modified(std::string_view bytes) {
    write_bytes(path_, bytes);
    return read_all(path_);
  }

  TempDir dir_;
  std::string path_;
  std::string bytes_;
  std::vector<std::size_t> frames_;
  std::size_t end_frame_ = 0;
};

TEST_F(CaptureCorruption, EveryTruncationIsReported) {
  // Every proper prefix of the file fails: inside the header, inside a record frame,
  // at a record boundary (no end frame), and inside the end frame.
  std::vector<std::size_t> cuts = {0,
                                   1,
                                   7,
                                   8,
                                   9,
                                   11,
                                   15,
                                   kSampleHeaderLength - 1,
                                   kSampleHeaderLength,
                                   kSampleHeaderLength + 3,
                                   kSampleHeaderLength + 8,
                                   kSampleHeaderLength + 20,
                                   frames_[1],
                                   frames_[3] + 100,
                                   frames_[5],
                                   end_frame_,
                                   end_frame_ + 4,
                                   bytes_.size() - 1};
  for (std::size_t cut : cuts) {
    Status s = read_modified(std::string_view(bytes_).substr(0, cut));
    EXPECT_EQ(s.code(), Code::corrupt_log) << "cut at " << cut << ": " << s.to_string();
    EXPECT_TRUE(contains(s.message(), "at byte offset")) << s.message();
  }
}

TEST_F(CaptureCorruption, TruncatedHeaderNamesItsOffset) {
  Status s = read_modified(std::string_view(bytes_).substr(0, 15));
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "truncated file header at byte offset 15")) << s.message();
}

TEST_F(CaptureCorruption, TruncatedRecordNamesOffsetAndRecordNumber) {
  Status s = read_modified(std::string_view(bytes_).substr(0, frames_[3] + 100));
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "truncated record")) << s.message();
  EXPECT_TRUE(contains(s.message(), "at byte offset " + std::to_string(frames_[3]) + ", record 4"))
      << s.message();
}

TEST_F(CaptureCorruption, CutAtARecordBoundaryIsStillReported) {
  Status s = read_modified(std::string_view(bytes_).substr(0, frames_[2]));
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "end frame")) << s.message();
  EXPECT_TRUE(contains(s.message(), "at byte offset " + std::to_string(frames_[2]) + ", record 3"))
      << s.message();
}

TEST_F(CaptureCorruption, RecordsBeforeTheDamageAreStillDelivered) {
  write_bytes(path_, std::string_view(bytes_).substr(0, frames_[2] + 30));
  Result<CaptureReader> reader = CaptureReader::open(path_);
  ASSERT_TRUE(reader.ok());
  const std::vector<LogRecord> expected = sample_records();
  for (std::size_t i = 0; i < 2; ++i) {
    Result<std::optional<LogRecord>> r = reader->next();
    ASSERT_TRUE(r.ok() && r->has_value());
    EXPECT_EQ(**r, expected[i]);
  }
  Result<std::optional<LogRecord>> bad = reader->next();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(reader->records_read(), 2);
  EXPECT_EQ(reader->offset(), frames_[2]);
  // Asking again gives the same answer rather than decoding from mid-frame.
  Result<std::optional<LogRecord>> again = reader->next();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().message(), bad.status().message());
}

TEST_F(CaptureCorruption, FlippedBitInEachRecordIsACrcMismatch) {
  for (std::size_t i = 0; i < frames_.size(); ++i) {
    std::string damaged = bytes_;
    const std::size_t at = frames_[i] + 8 + 20;  // inside the body's op_id
    damaged[at] = static_cast<char>(damaged[at] ^ 0x04);
    Status s = read_modified(damaged);
    EXPECT_EQ(s.code(), Code::corrupt_log);
    EXPECT_TRUE(contains(s.message(), "checksum mismatch")) << s.message();
    EXPECT_TRUE(contains(s.message(), "at byte offset " + std::to_string(frames_[i]) + ", record " +
                                          std::to_string(i + 1)))
        << s.message();
  }
}

TEST_F(CaptureCorruption, FlippedBitInTheStoredCrcIsDetected) {
  std::string damaged = bytes_;
  damaged[frames_[0] + 5] = static_cast<char>(damaged[frames_[0] + 5] ^ 0x80);
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "record 1")) << s.message();
}

TEST_F(CaptureCorruption, FlippedBitInTheHeaderIsDetected) {
  std::string damaged = bytes_;
  damaged[14] = static_cast<char>(damaged[14] ^ 0x01);  // inside the node id
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "file header checksum mismatch at byte offset " +
                                        std::to_string(kSampleHeaderLength - 4)))
      << s.message();
}

TEST_F(CaptureCorruption, OverlongHeaderNodeIdIsRejected) {
  std::string damaged = bytes_;
  damaged.replace(10, 2, std::string("\x00\x01", 2));  // 256
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "node id length 256")) << s.message();
  EXPECT_TRUE(contains(s.message(), "at byte offset 10")) << s.message();
}

TEST_F(CaptureCorruption, HugeLengthIsRejectedWithoutAllocating) {
  std::string damaged = bytes_;
  damaged.replace(frames_[1], 4, std::string("\xfe\xff\xff\x7f", 4));
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "exceeds")) << s.message();
  EXPECT_TRUE(contains(s.message(), "record 2")) << s.message();

  damaged.replace(frames_[1], 4, std::string("\x01\x00\x00\x01", 4));  // 16 MiB + 1
  s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "exceeds")) << s.message();
}

TEST_F(CaptureCorruption, TooShortBodyIsRejected) {
  std::string damaged = bytes_;
  damaged.replace(frames_[0], 4, std::string("\x10\0\0\0", 4));
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "below the minimum")) << s.message();
}

// Rewrites record `index`'s body through `edit` and fixes its CRC, as a buggy or
// hostile writer would: the checksum passes and the structure must still be checked.
std::string with_body_edit(std::string bytes, std::size_t frame, std::size_t body_length,
                           const std::function<void(std::string&)>& edit) {
  std::string body = bytes.substr(frame + 8, body_length);
  edit(body);
  const std::uint32_t crc = crc32c(body);
  std::string frame_header;
  for (std::uint32_t v : {static_cast<std::uint32_t>(body.size()), crc}) {
    for (int i = 0; i < 4; ++i) frame_header += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  return bytes.replace(frame, 8 + body_length, frame_header + body);
}

TEST_F(CaptureCorruption, InnerLengthsThatDisagreeWithTheBodyAreRejected) {
  const std::size_t body_length = frames_[3] - frames_[2] - 8;  // record 3: empty payload
  // Node-id length pointing past the body.
  std::string damaged =
      with_body_edit(bytes_, frames_[2], body_length, [](std::string& b) { b[49] = '\x7f'; });
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "node id length")) << s.message();
  EXPECT_TRUE(contains(s.message(), "record 3")) << s.message();

  // Payload length larger than what is left.
  damaged = with_body_edit(bytes_, frames_[2], body_length,
                           [](std::string& b) { b[b.size() - 4] = '\x01'; });
  s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "payload length 1")) << s.message();

  // Extra bytes after the payload.
  damaged = with_body_edit(bytes_, frames_[2], body_length, [](std::string& b) { b += "zz"; });
  s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "payload length 0")) << s.message();
  EXPECT_TRUE(contains(s.message(), "at byte offset " + std::to_string(frames_[2]) + ", record 3"))
      << s.message();
}

TEST_F(CaptureCorruption, UnknownOperationKindIsRejected) {
  const std::size_t body_length = frames_[1] - frames_[0] - 8;
  for (char kind : {'\0', '\x0a', '\xff'}) {
    std::string damaged =
        with_body_edit(bytes_, frames_[0], body_length, [kind](std::string& b) { b[40] = kind; });
    Status s = read_modified(damaged);
    EXPECT_EQ(s.code(), Code::corrupt_log);
    EXPECT_TRUE(contains(s.message(), "unknown operation kind")) << s.message();
    EXPECT_TRUE(contains(s.message(), "record 1")) << s.message();
  }
}

TEST_F(CaptureCorruption, EndFrameMustCountTheRecordsAndEndTheFile) {
  std::string damaged = bytes_;
  damaged[end_frame_ + 4] = '\x05';  // count without fixing the CRC
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "end frame checksum mismatch")) << s.message();

  // A whole record removed from the middle: every frame is intact, the count is not.
  std::string missing = bytes_;
  missing.erase(frames_[5], end_frame_ - frames_[5]);
  s = read_modified(missing);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "counts 6 records but 5")) << s.message();

  s = read_modified(bytes_ + "x");
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "after the end frame")) << s.message();
}

TEST_F(CaptureCorruption, WrongMagicIsNotACaptureFile) {
  for (std::string_view other : {std::string_view("SQLite format 3\0", 16),
                                 std::string_view("{\"json\":true}"), std::string_view("X")}) {
    Status s = read_modified(other);
    EXPECT_EQ(s.code(), Code::corrupt_log) << other;
    EXPECT_TRUE(contains(s.message(), "not a tillsync capture file")) << s.message();
  }
  std::string damaged = bytes_;
  damaged[0] = 't';
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "not a tillsync capture file")) << s.message();
}

TEST_F(CaptureCorruption, EmptyFileIsATruncatedHeader) {
  Status s = read_modified("");
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "truncated file header at byte offset 0")) << s.message();
}

TEST_F(CaptureCorruption, NewerFormatVersionIsUnsupported) {
  std::string newer = bytes_;
  newer[8] = static_cast<char>(kCaptureFormatVersion + 1);
  // Whatever a newer version puts after its version field is not judged.
  newer.resize(10);
  newer += "future layout";
  Status s = read_modified(newer);
  EXPECT_EQ(s.code(), Code::unsupported_version);
  EXPECT_TRUE(contains(s.message(), "version 2")) << s.message();
}

TEST_F(CaptureCorruption, VersionZeroIsCorrupt) {
  std::string damaged = bytes_;
  damaged[8] = '\0';
  Status s = read_modified(damaged);
  EXPECT_EQ(s.code(), Code::corrupt_log);
  EXPECT_TRUE(contains(s.message(), "at byte offset 8")) << s.message();
}

}  // namespace
}  // namespace tillsync
