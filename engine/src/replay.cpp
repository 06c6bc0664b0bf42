#include "tillsync/replay.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "tillsync/capture.h"
#include "tillsync/operations.h"

namespace tillsync {
namespace {

// Records pushed per node and turn when no shuffle seed is given.
constexpr std::size_t kRoundRobinChunk = 256;
// Upper bound of the random chunk size under a shuffle seed.
constexpr std::size_t kMaxShuffleChunk = 64;
// The progress callback is called at most once per this many bytes (and at the end).
constexpr std::uint64_t kProgressStep = 256 * 1024;

// The capture layout (docs/capture-format.md), as far as the salvage scanner below needs
// it to find intact frames after damage. Normal reading goes through CaptureReader.
constexpr std::uint32_t kEndMarker = 0xFFFFFFFFu;
constexpr std::uint32_t kMinBodyLength = 55;
constexpr std::uint32_t kMaxBodyLength = 16u * 1024 * 1024;
constexpr std::uint64_t kFrameHeaderLength = 8;
constexpr std::uint64_t kEndFrameLength = 16;
constexpr std::size_t kBodyNodeOffset = 49;  // node_id_length inside a record body

template <typename T>
T get_le(std::string_view bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return static_cast<T>(v);
}

std::string where(std::uint64_t offset, std::int64_t record) {
  return " at byte offset " + std::to_string(offset) + ", record " + std::to_string(record);
}

std::string corrupt_prefix(const std::string& path) {
  return "corrupt capture file '" + path + "': ";
}

bool is_capture_error(const Status& s) {
  return s.code() == Code::corrupt_log || s.code() == Code::unsupported_version;
}

// File-header errors of CaptureReader::open() name no record; say where they are, so
// every capture error carries a byte offset and a record number.
Status header_error(const Status& s) {
  if (!is_capture_error(s) || s.message().find("byte offset") != std::string::npos) return s;
  const int offset = s.code() == Code::unsupported_version ? 8 : 0;
  return Status(s.code(), s.message() + " (file header at byte offset " + std::to_string(offset) +
                              ", before record 1)");
}

std::uint64_t size_of(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<std::uint64_t>(size);
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// ---------------------------------------------------------------------------------
// Salvage: with skip_corrupt, reading goes on after a frame CaptureReader refused. The
// reader never moves past a bad frame, so from there the file is read here: the bad
// frame is skipped by its length when that leads to an intact frame, otherwise the
// scanner looks for the next offset where an intact frame of the file's node starts.

struct RawFrame {
  enum class Kind { record, end, bad } kind = Kind::bad;
  std::uint64_t size = 0;
  LogRecord record;
  std::string problem;  // for bad frames
};

std::optional<LogRecord> decode_body(std::string_view body) {
  if (body.size() < kMinBodyLength) return std::nullopt;
  LogRecord r;
  r.seq = get_le<std::int64_t>(body.substr(0, 8));
  auto op = Guid::from_raw(body.substr(8, 16));
  auto entity = Guid::from_raw(body.substr(24, 16));
  auto kind = op_kind_from_int(static_cast<unsigned char>(body[40]));
  if (!op || !entity || !kind) return std::nullopt;
  r.op_id = *op;
  r.entity = *entity;
  r.kind = *kind;
  r.hlc.value = get_le<std::uint64_t>(body.substr(41, 8));
  const std::size_t node_length = get_le<std::uint16_t>(body.substr(kBodyNodeOffset, 2));
  if (51 + node_length + 4 > body.size()) return std::nullopt;
  r.node_id = std::string(body.substr(51, node_length));
  const std::size_t payload_length = get_le<std::uint32_t>(body.substr(51 + node_length, 4));
  if (55 + node_length + payload_length != body.size()) return std::nullopt;
  r.payload = std::string(body.substr(55 + node_length));
  return r;
}

class Salvager {
 public:
  Salvager(FilePtr file, std::uint64_t size, std::string node_id)
      : file_(std::move(file)), size_(size), node_id_(std::move(node_id)) {}

  // The frame starting at `pos`, checked in full (lengths, CRC, body layout).
  RawFrame at(std::uint64_t pos) {
    RawFrame out;
    if (pos >= size_) {
      out.problem = "file ends without its end frame";
      return out;
    }
    const std::string head = read(pos, kFrameHeaderLength);
    if (head.size() >= 4 && get_le<std::uint32_t>(head) == kEndMarker) {
      const std::string end = read(pos, kEndFrameLength);
      if (end.size() == kEndFrameLength &&
          get_le<std::uint32_t>(std::string_view(end).substr(12)) ==
              crc32c(std::string_view(end).substr(0, 12))) {
        out.kind = RawFrame::Kind::end;
        out.size = kEndFrameLength;
      } else {
        out.problem = "damaged end frame";
      }
      return out;
    }
    if (head.size() < kFrameHeaderLength) {
      out.problem = "truncated record frame";
      return out;
    }
    const auto length = get_le<std::uint32_t>(head);
    if (length < kMinBodyLength || length > kMaxBodyLength) {
      out.problem = "damaged record length " + std::to_string(length);
      return out;
    }
    if (pos + kFrameHeaderLength + length > size_) {
      out.problem = "truncated record";
      return out;
    }
    const std::string body = read(pos + kFrameHeaderLength, length);
    if (body.size() != length ||
        crc32c(body) != get_le<std::uint32_t>(std::string_view(head).substr(4))) {
      out.problem = "record checksum mismatch";
      return out;
    }
    auto record = decode_body(body);
    if (!record) {
      out.problem = "malformed record body";
      return out;
    }
    out.kind = RawFrame::Kind::record;
    out.size = kFrameHeaderLength + length;
    out.record = std::move(*record);
    return out;
  }

  // Where reading continues after the bad frame at `bad`: the frame its length points
  // to when that one is intact, else the next intact frame found by scanning; nullopt
  // when nothing intact follows.
  std::optional<std::uint64_t> past(std::uint64_t bad) {
    if (at(bad).kind == RawFrame::Kind::end) return bad;
    const std::string head = read(bad, kFrameHeaderLength);
    if (head.size() == kFrameHeaderLength) {
      const auto length = get_le<std::uint32_t>(head);
      const std::uint64_t next = bad + kFrameHeaderLength + length;
      if (length >= kMinBodyLength && length <= kMaxBodyLength && next <= size_ &&
          at(next).kind != RawFrame::Kind::bad) {
        return next;
      }
    }
    return scan(bad + 1);
  }

 private:
  std::string read(std::uint64_t pos, std::uint64_t n) {
    std::string buf(static_cast<std::size_t>(std::min(n, size_ > pos ? size_ - pos : 0)), '\0');
    if (buf.empty()) return buf;
    if (::fseeko(file_.get(), static_cast<off_t>(pos), SEEK_SET) != 0) return {};
    buf.resize(std::fread(buf.data(), 1, buf.size(), file_.get()));
    return buf;
  }

  // A cheap test of the bytes at the start of `v` before the full check: an end frame
  // with a valid CRC, or a frame header whose body names this file's node and whose
  // inner lengths add up.
  bool plausible(std::string_view v, std::uint64_t pos) const {
    if (v.size() >= 4 && get_le<std::uint32_t>(v) == kEndMarker) {
      return v.size() >= kEndFrameLength &&
             get_le<std::uint32_t>(v.substr(12)) == crc32c(v.substr(0, 12));
    }
    if (v.size() < kFrameHeaderLength + 51) return false;
    const auto length = get_le<std::uint32_t>(v);
    if (length < kMinBodyLength || length > kMaxBodyLength ||
        pos + kFrameHeaderLength + length > size_) {
      return false;
    }
    const std::string_view body = v.substr(kFrameHeaderLength);
    const std::size_t node_length = get_le<std::uint16_t>(body.substr(kBodyNodeOffset, 2));
    if (node_length != node_id_.size() || body.size() < 51 + node_length + 4) return false;
    if (body.substr(51, node_length) != node_id_) return false;
    const std::size_t payload_length = get_le<std::uint32_t>(body.substr(51 + node_length, 4));
    return 55 + node_length + payload_length == length;
  }

  std::optional<std::uint64_t> scan(std::uint64_t from) {
    constexpr std::uint64_t kWindow = 64 * 1024;
    const std::uint64_t look = kFrameHeaderLength + 51 + 255 + 4;
    for (std::uint64_t base = from; base < size_; base += kWindow) {
      const std::string buf = read(base, kWindow + look);
      const std::string_view v(buf);
      for (std::uint64_t i = 0; i < kWindow && i < v.size(); ++i) {
        if (plausible(v.substr(static_cast<std::size_t>(i)), base + i) &&
            at(base + i).kind != RawFrame::Kind::bad) {
          return base + i;
        }
      }
    }
    return std::nullopt;
  }

  FilePtr file_;
  std::uint64_t size_;
  std::string node_id_;
};

// ---------------------------------------------------------------------------------
// One capture file read record by record with every check of verify_captures: framing
// (CaptureReader), node id, sequence continuity, payload decoding. With skip_corrupt a
// bad record is reported to `issues` and skipped.

class CaptureSource {
 public:
  static Result<CaptureSource> open(const std::string& path, bool skip_corrupt,
                                    std::vector<ReplayIssue>* issues) {
    auto reader = CaptureReader::open(path);
    if (!reader.ok()) return header_error(reader.status());
    if (reader->header().node_id.empty()) {
      return Status::CorruptLog(corrupt_prefix(path) +
                                "the file header names no node (byte offset 10, before record 1)");
    }
    return CaptureSource(path, std::move(reader).value(), skip_corrupt, issues);
  }

  const CaptureHeader& header() const { return reader_.header(); }
  const std::string& path() const { return path_; }
  // Offset of the first record frame (the header's length).
  std::uint64_t data_offset() const { return data_offset_; }
  // Bytes of the file consumed so far.
  std::uint64_t position() const {
    if (done_) return size_;
    if (salvager_) return pos_.value_or(size_);
    return reader_.offset();
  }
  std::uint64_t size() const { return size_; }

  // The next intact record that passes the checks; nullopt at the end of the file.
  Result<std::optional<LogRecord>> next() {
    for (;;) {
      TS_ASSIGN_OR_RETURN(std::optional<Framed> f, next_frame());
      if (!f) return std::optional<LogRecord>{};
      LogRecord& r = f->record;
      Status s = check(*f);
      if (s.ok()) {
        expected_ = r.seq + 1;
        skipped_since_good_ = false;
        return std::optional<LogRecord>{std::move(r)};
      }
      if (!skip_) return s;
      report(f->offset, f->number, std::move(s));
    }
  }

 private:
  struct Framed {
    LogRecord record;
    std::uint64_t offset = 0;
    std::int64_t number = 0;
  };

  CaptureSource(std::string path, CaptureReader reader, bool skip, std::vector<ReplayIssue>* issues)
      : path_(std::move(path)),
        reader_(std::move(reader)),
        skip_(skip),
        issues_(issues),
        size_(size_of(path_)),
        data_offset_(reader_.offset()),
        expected_(reader_.header().first_seq) {}

  void report(std::uint64_t offset, std::int64_t number, Status s) {
    skipped_since_good_ = true;
    if (issues_ != nullptr) issues_->push_back({path_, offset, number, std::move(s)});
  }

  Result<std::optional<Framed>> next_frame() {
    if (done_) return std::optional<Framed>{};
    if (!salvager_) {
      const std::uint64_t start = reader_.offset();
      const std::int64_t number = reader_.records_read() + 1;
      auto r = reader_.next();
      if (r.ok()) {
        if (!*r) {
          done_ = true;
          return std::optional<Framed>{};
        }
        return std::optional<Framed>{Framed{std::move(**r), start, number}};
      }
      if (!skip_ || !is_capture_error(r.status())) return r.status();
      report(start, number, r.status());
      std::FILE* raw = std::fopen(path_.c_str(), "rb");
      if (raw == nullptr) return Status::Internal("cannot reopen capture file '" + path_ + "'");
      salvager_.emplace(FilePtr(raw), size_, header().node_id);
      pos_ = salvager_->past(start);
      number_ = number + 1;
    }
    for (;;) {
      if (!pos_) {
        done_ = true;
        return std::optional<Framed>{};
      }
      RawFrame f = salvager_->at(*pos_);
      if (f.kind == RawFrame::Kind::end) {
        done_ = true;
        return std::optional<Framed>{};
      }
      if (f.kind == RawFrame::Kind::record) {
        Framed out{std::move(f.record), *pos_, number_++};
        *pos_ += f.size;
        return std::optional<Framed>{std::move(out)};
      }
      report(*pos_, number_,
             Status::CorruptLog(corrupt_prefix(path_) + f.problem + where(*pos_, number_)));
      ++number_;
      pos_ = *pos_ >= size_ ? std::nullopt : salvager_->past(*pos_);
    }
  }

  // The checks that need more than one frame or the decoded payload. A seq gap is an
  // error; under skip_corrupt it is reported (unless skipped records explain it) and
  // the record is kept.
  Status check(const Framed& f) {
    const LogRecord& r = f.record;
    const std::string at = where(f.offset, f.number);
    if (r.node_id != header().node_id) {
      return Status::CorruptLog(corrupt_prefix(path_) + "record of node '" + r.node_id +
                                "' in a capture of node '" + header().node_id + "'" + at);
    }
    if (r.seq < 1 || r.seq < expected_) {
      return Status::CorruptLog(corrupt_prefix(path_) + "sequence out of order: expected seq " +
                                std::to_string(expected_) + ", found seq " + std::to_string(r.seq) +
                                at);
    }
    // An erasure redacts payloads (empty): the record keeps its place in the log.
    if (!r.payload.empty()) TS_RETURN_IF_ERROR(check_payload(r, at));
    if (r.seq > expected_) {
      Status gap = Status::CorruptLog(
          corrupt_prefix(path_) + "sequence gap: expected seq " + std::to_string(expected_) +
          ", found seq " + std::to_string(r.seq) + " (seqs " + std::to_string(expected_) + ".." +
          std::to_string(r.seq - 1) + " are missing)" + at);
      if (!skip_) return gap;
      if (!skipped_since_good_ && issues_ != nullptr) {
        issues_->push_back({path_, f.offset, f.number, std::move(gap)});
      }
    }
    return Status::Ok();
  }

  Status check_payload(const LogRecord& r, const std::string& at) const {
    auto payload = decode_payload(r.kind, r.payload);
    if (!payload.ok()) {
      return Status(payload.status().code(), corrupt_prefix(path_) + "record payload of seq " +
                                                 std::to_string(r.seq) + " does not decode (" +
                                                 payload.status().message() + ")" + at);
    }
    if (entity_of(*payload) != r.entity) {
      return Status::CorruptLog(corrupt_prefix(path_) + "record seq " + std::to_string(r.seq) +
                                " names customer " + r.entity.to_string() +
                                " but its payload is about " + entity_of(*payload).to_string() +
                                at);
    }
    return Status::Ok();
  }

  std::string path_;
  CaptureReader reader_;
  bool skip_ = false;
  std::vector<ReplayIssue>* issues_ = nullptr;
  std::uint64_t size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::int64_t expected_ = 0;
  bool skipped_since_good_ = false;
  bool done_ = false;
  std::optional<Salvager> salvager_;
  std::optional<std::uint64_t> pos_;  // salvage: next frame offset
  std::int64_t number_ = 0;           // salvage: number of the next frame
};

// ---------------------------------------------------------------------------------

class Progress {
 public:
  Progress(const ReplayOptions& options, std::uint64_t total)
      : fn_(options.progress), total_(total) {}
  void report(std::uint64_t done) {
    if (!fn_) return;
    done = std::min(done, total_);
    if (done < last_ + kProgressStep && done != total_) return;
    if (done == total_ && reported_end_) return;
    reported_end_ = done == total_;
    last_ = done;
    fn_(done, total_);
  }
  std::uint64_t total() const { return total_; }

 private:
  std::function<void(std::uint64_t, std::uint64_t)> fn_;
  std::uint64_t total_;
  std::uint64_t last_ = 0;
  bool reported_end_ = false;
};

// What the verification pass learned about one file.
struct FileInfo {
  std::string path;
  std::size_t order = 0;  // position on the command line
  bool usable = false;    // false: skipped as a whole under skip_corrupt
  std::string node_id;
  std::int64_t header_first_seq = 0;
  std::uint64_t size = 0;
  std::uint64_t data_offset = 0;
  std::int64_t records = 0;  // intact records
  std::int64_t first_seq = 0, last_seq = 0;
};

Result<std::vector<FileInfo>> verify_files(const std::vector<std::string>& files,
                                           const ReplayOptions& options,
                                           std::vector<ReplayIssue>& issues, Progress& progress) {
  std::vector<FileInfo> infos;
  std::uint64_t done_before = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    FileInfo info;
    info.path = files[i];
    info.order = i;
    info.size = size_of(files[i]);
    auto source = CaptureSource::open(files[i], options.skip_corrupt, &issues);
    if (!source.ok()) {
      if (!options.skip_corrupt || !is_capture_error(source.status())) return source.status();
      issues.push_back({files[i], 0, 0, source.status()});
    } else {
      info.usable = true;
      info.node_id = source->header().node_id;
      info.header_first_seq = source->header().first_seq;
      info.data_offset = source->data_offset();
      for (;;) {
        TS_ASSIGN_OR_RETURN(std::optional<LogRecord> r, source->next());
        if (!r) break;
        if (info.records == 0) info.first_seq = r->seq;
        info.last_seq = r->seq;
        ++info.records;
        progress.report(done_before + source->position());
      }
    }
    done_before += info.size;
    progress.report(done_before);
    infos.push_back(std::move(info));
  }
  return infos;
}

std::vector<ReplayNode> nodes_of(const std::vector<FileInfo>& infos) {
  std::map<std::string, ReplayNode> nodes;
  for (const FileInfo& f : infos) {
    if (!f.usable) continue;
    ReplayNode& n = nodes[f.node_id];
    n.node_id = f.node_id;
    ++n.files;
    if (f.records == 0) continue;
    n.first_seq = n.records == 0 ? f.first_seq : std::min(n.first_seq, f.first_seq);
    n.last_seq = std::max(n.last_seq, f.last_seq);
    n.records += f.records;
  }
  std::vector<ReplayNode> out;
  for (auto& [id, n] : nodes) out.push_back(std::move(n));
  return out;
}

// ---------------------------------------------------------------------------------
// The replay proper.

// One node's records, drawn from its captures in order into a small buffer.
struct NodeStream {
  std::string node_id;
  std::vector<const FileInfo*> segments;  // by first seq
  std::size_t next_segment = 0;
  std::optional<CaptureSource> source;
  std::uint64_t bytes_done = 0;  // of finished segments
  std::deque<LogRecord> buffer;
  std::int64_t last_seq = 0;       // highest capture seq taken (overlaps are skipped)
  std::int64_t next_push_seq = 1;  // skip_corrupt: the dense seq HQ gets next
  std::int64_t hq_cursor = 0;      // what the target HQ had from the node before the replay
  std::int64_t pushed_to = -1;     // the last seq pushed (-1: none yet)
  bool exhausted = false;
  ReplayNode stats;
};

// Whether the next record of a node may go to HQ now.
enum class Gate {
  go,         // yes
  needs_job,  // its customer's create is staged from another node: run the job first
  wait,       // another node may still deliver its customer's create
};

class Replayer {
 public:
  Replayer(Headquarters& hq, const ReplayOptions& options, Progress& progress,
           std::uint64_t progress_base, ReplaySummary& summary)
      : hq_(hq),
        options_(options),
        progress_(progress),
        progress_base_(progress_base),
        summary_(summary),
        chunk_(options.shuffle_seed ? kMaxShuffleChunk : kRoundRobinChunk) {}

  Status run(std::vector<NodeStream> nodes) {
    nodes_ = std::move(nodes);
    if (options_.shuffle_seed) {
      TS_RETURN_IF_ERROR(run_shuffled(*options_.shuffle_seed));
    } else {
      TS_RETURN_IF_ERROR(run_round_robin());
    }
    TS_RETURN_IF_ERROR(run_job());
    for (NodeStream& n : nodes_) summary_.nodes.push_back(n.stats);
    return Status::Ok();
  }

 private:
  Status fill_all() {
    for (NodeStream& n : nodes_) TS_RETURN_IF_ERROR(fill(n));
    return Status::Ok();
  }

  Status fill(NodeStream& n) {
    std::vector<ReplayIssue> ignored;  // already reported by the verification pass
    while (n.buffer.size() < chunk_ && !n.exhausted) {
      if (!n.source) {
        if (n.next_segment == n.segments.size()) {
          n.exhausted = true;
          break;
        }
        TS_ASSIGN_OR_RETURN(auto source, CaptureSource::open(n.segments[n.next_segment]->path,
                                                             options_.skip_corrupt, &ignored));
        n.source.emplace(std::move(source));
      }
      TS_ASSIGN_OR_RETURN(std::optional<LogRecord> r, n.source->next());
      if (!r) {
        n.bytes_done += n.source->size();
        n.source.reset();
        ++n.next_segment;
        continue;
      }
      if (options_.until_seq && r->seq > *options_.until_seq) {
        n.exhausted = true;
        n.source.reset();
        for (; n.next_segment < n.segments.size(); ++n.next_segment) {
          n.bytes_done += n.segments[n.next_segment]->size;
        }
        break;
      }
      if (r->seq <= n.last_seq) continue;  // an overlapping capture repeats it
      n.last_seq = r->seq;
      n.buffer.push_back(std::move(*r));
    }
    return Status::Ok();
  }

  void report_progress() {
    std::uint64_t done = progress_base_;
    for (const NodeStream& n : nodes_) done += n.bytes_done + (n.source ? n.source->position() : 0);
    progress_.report(done);
  }

  // True when no other node can still deliver a record older (by HLC) than `hlc`: its
  // next record is not older, and a node's records only get newer.
  bool oldest(std::size_t node, Hlc hlc) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (i != node && !nodes_[i].buffer.empty() && nodes_[i].buffer.front().hlc < hlc)
        return false;
    }
    return true;
  }

  // An operation on a customer is never delivered before the customer's create: live,
  // a terminal only edits another terminal's customer after HQ has converted it and
  // the terminal has pulled it, so HQ never sees that order. Creates happen before
  // everything that depends on them in HLC order, which resolves the remaining case.
  Result<Gate> gate(std::size_t node, const LogRecord& r,
                    const std::unordered_set<Guid>& chunk_creates,
                    std::unique_ptr<HqTransaction>& lookup) {
    if (r.kind == OpKind::customer_create || chunk_creates.contains(r.entity)) return Gate::go;
    if (auto it = pending_creates_.find(r.entity); it != pending_creates_.end()) {
      return it->second == node ? Gate::go : Gate::needs_job;
    }
    if (oldest(node, r.hlc)) return Gate::go;
    if (!lookup) {
      TS_ASSIGN_OR_RETURN(lookup, hq_.store().begin());
    }
    TS_ASSIGN_OR_RETURN(auto customer, lookup->customer(r.entity));
    return customer ? Gate::go : Gate::wait;
  }

  struct Chunk {
    std::size_t count = 0;
    Gate head = Gate::go;
  };

  // How many of the node's next records (at most `max`) may go to HQ now.
  Result<Chunk> plan(std::size_t node, std::size_t max) {
    const NodeStream& n = nodes_[node];
    std::unordered_set<Guid> creates;
    std::unique_ptr<HqTransaction> lookup;  // read only: rolled back when it goes away
    Chunk c;
    for (const LogRecord& r : n.buffer) {
      if (c.count == max) break;
      TS_ASSIGN_OR_RETURN(Gate g, gate(node, r, creates, lookup));
      if (g != Gate::go) {
        if (c.count == 0) c.head = g;
        break;
      }
      if (r.kind == OpKind::customer_create) creates.insert(r.entity);
      ++c.count;
    }
    return c;
  }

  Status push(std::size_t node, std::size_t count) {
    NodeStream& n = nodes_[node];
    std::vector<LogRecord> batch;
    batch.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      LogRecord r = std::move(n.buffer.front());
      n.buffer.pop_front();
      if (n.stats.records == 0) n.stats.first_seq = r.seq;
      n.stats.last_seq = r.seq;
      ++n.stats.records;
      if (options_.skip_corrupt) r.seq = n.next_push_seq++;
      if (r.kind == OpKind::customer_create) pending_creates_.emplace(r.entity, node);
      batch.push_back(std::move(r));
    }
    // Streams are verified dense from HQ's cursor (or renumbered so), or start after
    // it where the node's log started (compacted before it was captured): the first
    // batch continues HQ's cursor (`prev`: the node holds nothing between), each later
    // one the batch before it.
    const std::int64_t prev = n.pushed_to >= 0 ? n.pushed_to : std::min(batch.front().seq - 1, n.hq_cursor);
    n.pushed_to = batch.back().seq;
    TS_ASSIGN_OR_RETURN(PushResult pushed, hq_.push(n.node_id, prev, Guid{}, batch));
    if (pushed.gap || pushed.acked_seq < batch.back().seq) {
      return Status::Internal("HQ acknowledged node " + n.node_id + " only up to seq " +
                              std::to_string(pushed.acked_seq) + " after a push ending at seq " +
                              std::to_string(batch.back().seq));
    }
    summary_.records += static_cast<std::int64_t>(count);
    TS_RETURN_IF_ERROR(fill(n));
    report_progress();
    return Status::Ok();
  }

  // One full pass of the customer sync job: everything staged is applied or failed.
  Status run_job() {
    for (;;) {
      TS_ASSIGN_OR_RETURN(JobReport report, hq_.run_sync_job());
      summary_.created += static_cast<std::int64_t>(report.converted);
      summary_.updated += static_cast<std::int64_t>(report.applied - report.converted);
      summary_.failed += static_cast<std::int64_t>(report.failed);
      if (report.remaining == 0) break;
      if (report.applied + report.failed == 0) {
        return Status::Internal(
            "HQ's customer sync job leaves operations staged without "
            "applying any; the replay stops");
      }
    }
    pending_creates_.clear();
    return Status::Ok();
  }

  // Never needed when the captures keep HLC order; a guarantee of progress whatever
  // the files say: the node whose next record is oldest goes next.
  Status push_oldest() {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].buffer.empty()) continue;
      if (!best || nodes_[i].buffer.front().hlc < nodes_[*best].buffer.front().hlc) best = i;
    }
    return best ? push(*best, 1) : Status::Ok();
  }

  Status run_round_robin() {
    for (;;) {
      TS_RETURN_IF_ERROR(fill_all());
      bool any = false, pushed = false;
      for (std::size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i].buffer.empty()) continue;
        any = true;
        TS_ASSIGN_OR_RETURN(Chunk c, plan(i, chunk_));
        if (c.count == 0 && c.head == Gate::needs_job) {
          TS_RETURN_IF_ERROR(run_job());
          TS_ASSIGN_OR_RETURN(c, plan(i, chunk_));
        }
        if (c.count == 0) continue;
        TS_RETURN_IF_ERROR(push(i, c.count));
        pushed = true;
      }
      if (!any) return Status::Ok();
      if (!pushed) TS_RETURN_IF_ERROR(push_oldest());
      TS_RETURN_IF_ERROR(run_job());
    }
  }

  Status run_shuffled(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution run_job_now(0.5);
    for (;;) {
      TS_RETURN_IF_ERROR(fill_all());
      std::vector<std::size_t> ready;
      bool any = false, job_helps = false;
      for (std::size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i].buffer.empty()) continue;
        any = true;
        TS_ASSIGN_OR_RETURN(Chunk c, plan(i, 1));
        if (c.count > 0) ready.push_back(i);
        if (c.head == Gate::needs_job) job_helps = true;
      }
      if (!any) return Status::Ok();
      if (ready.empty()) {
        if (job_helps) {
          TS_RETURN_IF_ERROR(run_job());
        } else {
          TS_RETURN_IF_ERROR(push_oldest());
        }
        continue;
      }
      const std::size_t node =
          ready[std::uniform_int_distribution<std::size_t>(0, ready.size() - 1)(rng)];
      const std::size_t want = std::uniform_int_distribution<std::size_t>(1, kMaxShuffleChunk)(rng);
      TS_ASSIGN_OR_RETURN(Chunk c, plan(node, want));
      TS_RETURN_IF_ERROR(push(node, c.count));
      if (run_job_now(rng)) TS_RETURN_IF_ERROR(run_job());
    }
  }

  Headquarters& hq_;
  const ReplayOptions& options_;
  Progress& progress_;
  std::uint64_t progress_base_;
  ReplaySummary& summary_;
  std::size_t chunk_;
  std::vector<NodeStream> nodes_;
  // Creates pushed since the last job run, by customer: which node they came from.
  std::unordered_map<Guid, std::size_t> pending_creates_;
};

std::string seq_range(std::int64_t from, std::int64_t to) {
  return from == to ? "seq " + std::to_string(from)
                    : "seqs " + std::to_string(from) + ".." + std::to_string(to);
}

// Orders each node's captures and, unless skip_corrupt renumbers anyway, checks that
// they continue what HQ has from the node without a gap. A node's first capture may
// start after seq 1 when HQ has nothing from the node: the node's log started there
// (compacted by its log retention after HQ acknowledged the earlier rows, or pruned
// at HQ), which is no gap in what the captures say.
Result<std::vector<NodeStream>> plan_nodes(const std::vector<FileInfo>& infos, Headquarters& hq,
                                           const ReplayOptions& options) {
  std::map<std::string, NodeStream> by_node;
  for (const FileInfo& f : infos) {
    if (!f.usable) continue;
    NodeStream& n = by_node[f.node_id];
    n.node_id = f.node_id;
    n.stats.node_id = f.node_id;
    ++n.stats.files;
    if (f.records > 0) {
      n.segments.push_back(&f);
    } else {
      n.bytes_done += f.size;
    }
  }
  TS_ASSIGN_OR_RETURN(auto tx, hq.store().begin());
  std::vector<NodeStream> out;
  for (auto& [id, n] : by_node) {
    std::stable_sort(
        n.segments.begin(), n.segments.end(), [](const FileInfo* a, const FileInfo* b) {
          return a->first_seq != b->first_seq ? a->first_seq < b->first_seq : a->order < b->order;
        });
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, tx->node_cursor(id));
    n.next_push_seq = cursor + 1;
    n.hq_cursor = cursor;
    if (!options.skip_corrupt) {
      std::int64_t expected = cursor + 1;
      const FileInfo* previous = nullptr;
      for (const FileInfo* f : n.segments) {
        if (options.until_seq && f->first_seq > *options.until_seq) break;
        if (f->first_seq > expected && !(previous == nullptr && cursor == 0)) {
          const std::string before =
              previous ? "the capture '" + previous->path + "' ends at seq " +
                             std::to_string(previous->last_seq)
                       : "HQ has seqs up to " + std::to_string(cursor) + " from node " + id;
          return Status::CorruptLog(
              corrupt_prefix(f->path) + "sequence gap between captures of node " + id + ": " +
              before + " and this capture starts at seq " + std::to_string(f->first_seq) + " (" +
              seq_range(expected, f->first_seq - 1) + " missing; HQ refuses gaps)" +
              where(f->data_offset, 1));
        }
        expected = std::max(expected, f->last_seq + 1);
        previous = f;
      }
    }
    out.push_back(std::move(n));
  }
  return out;
}

std::uint64_t total_size(const std::vector<std::string>& files) {
  std::uint64_t total = 0;
  for (const std::string& f : files) total += size_of(f);
  return total;
}

}  // namespace

Result<ReplaySummary> verify_captures(const std::vector<std::string>& files,
                                      const ReplayOptions& options) {
  Progress progress(options, total_size(files));
  ReplaySummary summary;
  TS_ASSIGN_OR_RETURN(auto infos, verify_files(files, options, summary.issues, progress));
  for (const FileInfo& f : infos) summary.records += f.records;
  summary.nodes = nodes_of(infos);
  progress.report(progress.total());
  return summary;
}

Result<ReplaySummary> replay_captures(const std::vector<std::string>& files, Headquarters& hq,
                                      const ReplayOptions& options) {
  const std::uint64_t bytes = total_size(files);
  Progress progress(options, 2 * bytes);
  ReplaySummary summary;
  // Everything is verified before the first push: a bad capture applies nothing.
  TS_ASSIGN_OR_RETURN(auto infos, verify_files(files, options, summary.issues, progress));
  TS_ASSIGN_OR_RETURN(auto nodes, plan_nodes(infos, hq, options));
  std::uint64_t unusable = 0;
  for (const FileInfo& f : infos) {
    if (!f.usable) unusable += f.size;
  }
  TS_ASSIGN_OR_RETURN(auto conflicts_before, hq.conflicts());

  Replayer replayer(hq, options, progress, bytes + unusable, summary);
  TS_RETURN_IF_ERROR(replayer.run(std::move(nodes)));

  TS_ASSIGN_OR_RETURN(ContentDigest digest, hq.digest());
  summary.digest = digest.hex;
  summary.customers = static_cast<std::int64_t>(digest.customers);
  TS_ASSIGN_OR_RETURN(auto conflicts_after, hq.conflicts());
  summary.conflicts = static_cast<std::int64_t>(conflicts_after.size()) -
                      static_cast<std::int64_t>(conflicts_before.size());
  TS_ASSIGN_OR_RETURN(auto duplicates, hq.sync_status(SyncStatus::duplicate));
  summary.duplicates = static_cast<std::int64_t>(duplicates.size());
  progress.report(progress.total());
  return summary;
}

}  // namespace tillsync
