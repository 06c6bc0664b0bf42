// Replay of capture files (engine/include/tillsync/replay.h).
//
// ReplayLiveTest runs HQ and three terminals over real loopback sockets (HQ's job parked,
// the tests run it explicitly), exports the terminals' logs as captures and replays them
// into fresh HQ databases: the result must be the live HQ's content, whatever the shuffle
// seed. ReplayCaptureTest builds captures from offline terminals and damages them: every
// bad capture is refused before anything is applied, or skipped with skip_corrupt.
#include "tillsync/replay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/cluster.h"
#include "support/temp_dir.h"
#include "tillsync/capture.h"
#include "tillsync/channel_node.h"
#include "tillsync/headquarters.h"

namespace tillsync {
namespace {

using testing::HqProcess;
using testing::new_person;
using testing::TempDir;
using testing::Terminal;
using testing::terminal_config;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Writes `records` as a finished capture whose header names `node` and `first_seq`.
void write_capture(const std::string& path, const std::string& node,
                   const std::vector<LogRecord>& records,
                   std::optional<std::int64_t> first_seq = {}) {
  CaptureHeader header;
  header.node_id = node;
  header.first_seq = first_seq.value_or(records.empty() ? 0 : records.front().seq);
  header.created_at_ms = 1'700'000'000'000;
  auto writer = CaptureWriter::create(path, header);
  ASSERT_TRUE(writer.ok()) << writer.status().to_string();
  for (const LogRecord& r : records) ASSERT_TRUE(writer->append(r).ok());
  Status finished = writer->finish();
  ASSERT_TRUE(finished.ok()) << finished.to_string();
}

// A terminal's whole log, read in small batches as an exporter does.
std::vector<LogRecord> whole_log(ChannelNode& node) {
  std::vector<LogRecord> all;
  for (;;) {
    auto batch = node.read_log(all.empty() ? 0 : all.back().seq, 7);
    EXPECT_TRUE(batch.ok()) << batch.status().to_string();
    if (!batch.ok() || batch->empty()) return all;
    all.insert(all.end(), batch->begin(), batch->end());
  }
}

// Exports a terminal's log to `path`, streaming batch by batch into the writer.
std::int64_t export_terminal(ChannelNode& node, const std::string& path) {
  auto first = node.read_log(0, 7);
  EXPECT_TRUE(first.ok());
  CaptureHeader header;
  header.node_id = node.node_id();
  header.first_seq = first->empty() ? 0 : first->front().seq;
  header.created_at_ms = 1'700'000'000'000;
  auto writer = CaptureWriter::create(path, header);
  EXPECT_TRUE(writer.ok()) << writer.status().to_string();
  std::vector<LogRecord> batch = std::move(first).value();
  while (!batch.empty()) {
    for (const LogRecord& r : batch) EXPECT_TRUE(writer->append(r).ok());
    batch = node.read_log(batch.back().seq, 7).value();
  }
  EXPECT_TRUE(writer->finish().ok());
  return writer->records();
}

// What HQ received from `node`, exported the way `hq export-log` does.
void export_received(HqStore& store, const std::string& node, const std::string& path) {
  std::vector<LogRecord> all;
  for (;;) {
    auto batch = store.received(node, all.empty() ? 0 : all.back().seq, 5);
    ASSERT_TRUE(batch.ok()) << batch.status().to_string();
    if (batch->empty()) break;
    all.insert(all.end(), batch->begin(), batch->end());
  }
  write_capture(path, node, all);
}

std::vector<LogRecord> read_capture(const std::string& path) {
  auto reader = CaptureReader::open(path);
  EXPECT_TRUE(reader.ok()) << reader.status().to_string();
  std::vector<LogRecord> out;
  for (;;) {
    auto r = reader->next();
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok() || !*r) return out;
    out.push_back(std::move(**r));
  }
}

// Byte offset of each record frame; the last element is the end frame's offset.
std::vector<std::uint64_t> frame_offsets(const std::string& path) {
  auto reader = CaptureReader::open(path);
  EXPECT_TRUE(reader.ok());
  std::vector<std::uint64_t> out;
  for (;;) {
    out.push_back(reader->offset());
    auto r = reader->next();
    if (!r.ok() || !*r) return out;
  }
}

Address address(const std::string& street) {
  return {{}, "", street, "Springfield", "IL", "62701", "US"};
}

std::string file_name(const std::string& node) {
  std::string name = node;
  std::replace(name.begin(), name.end(), '/', '-');
  return name + ".tslog";
}

// ---------------------------------------------------------------------------------

class ReplayLiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HqServiceOptions o;
    o.job_interval_ms = 3'600'000;  // parked: the test runs the job
    hq = std::make_unique<HqProcess>(dir.file("live-hq.db"), o);
    hq->start();
    const std::pair<std::string, std::string> ids[] = {
        {"S001", "T01"}, {"S001", "T02"}, {"S002", "T01"}};
    std::uint64_t seed = 11;
    for (const auto& [store, terminal] : ids) {
      terminals.push_back(std::make_unique<Terminal>(
          dir.file(store + "-" + terminal + ".db"),
          terminal_config(store, terminal, hq->endpoint(), testing::kAsyncEverything), seed++));
    }
  }

  ChannelNode& t(std::size_t i) { return terminals[i]->node(); }

  void sync_all() {
    for (int round = 0; round < 2; ++round) {
      for (auto& term : terminals) {
        auto s = term->sync();
        ASSERT_TRUE(s.ok()) << s.status().to_string();
      }
      auto job = hq->inspect()->run_sync_job();
      ASSERT_TRUE(job.ok()) << job.status().to_string();
    }
    for (auto& term : terminals) ASSERT_TRUE(term->sync().ok());
  }

  Guid create(std::size_t i, const std::string& first, const std::string& last,
              const std::string& email = "", std::optional<Address> addr = std::nullopt) {
    NewCustomer c = new_person(first, last);
    c.email = email;
    if (addr) c.addresses.push_back(*addr);
    auto out = t(i).create_customer(c);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(out->mode, CreationMode::async);
    return out.ok() ? out->customer.guid : Guid{};
  }

  void edit(std::size_t i, const Guid& g, Field f, const std::string& value) {
    auto out = t(i).edit_customer(g.to_string(), {{f, value}});
    ASSERT_TRUE(out.ok()) << out.status().to_string();
  }

  void add_address(std::size_t i, const Guid& g, const std::string& street) {
    auto out = t(i).add_address(g.to_string(), address(street));
    ASSERT_TRUE(out.ok()) << out.status().to_string();
  }

  // Creates, own and cross-terminal edits, addresses, a concurrent edit of one field,
  // in three rounds of sync and conversion. Everything goes through the logs.
  void live_run() {
    std::vector<Guid> c;
    for (std::size_t i = 0; i < terminals.size(); ++i) {
      for (int k = 0; k < 4; ++k) {
        const std::string name = "N" + std::to_string(i) + std::to_string(k);
        c.push_back(
            create(i, "First" + name, "Last" + name, k % 2 == 0 ? "p" + name + "@example.com" : "",
                   k == 1 ? std::optional<Address>(address(name + " Main St")) : std::nullopt));
      }
    }
    edit(0, c[0], Field::phone,
         "+1 555 0100");  // still pending: an async edit of an async customer
    ASSERT_NO_FATAL_FAILURE(sync_all());

    edit(1, c[0], Field::email, "moved@example.com");  // T02 edits T01's customer
    add_address(2, c[5], "2 Cross Rd");                // S002 adds to S001/T02's customer
    edit(0, c[2], Field::title, "Dr");                 // concurrent edits of one field:
    edit(2, c[2], Field::title, "Prof");               //   both offline, newest wins
    add_address(0, c[0], "3 Own Way");
    c.push_back(create(1, "Late", "Comer", "late@example.com"));
    ASSERT_NO_FATAL_FAILURE(sync_all());

    edit(0, c[9], Field::last_name, "Renamed");  // T01 edits S002's customer
    {
      // T01 removes the address S002 added to S001/T02's customer; T02 adds a contact.
      auto shown = t(0).find(c[5].to_string());
      ASSERT_TRUE(shown.ok()) << shown.status().to_string();
      auto added = std::find_if(shown->addresses.begin(), shown->addresses.end(),
                                [](const Address& a) { return a.street == "2 Cross Rd"; });
      ASSERT_NE(added, shown->addresses.end());
      auto removed = t(0).remove_address(c[5].to_string(), added->guid);
      ASSERT_TRUE(removed.ok()) << removed.status().to_string();
      auto contact = t(1).add_contact(c[0].to_string(), ContactKind::phone, "+1 555 0199");
      ASSERT_TRUE(contact.ok()) << contact.status().to_string();
    }
    edit(2, c[12], Field::phone, "+44 20 7946 0000");
    c.push_back(create(2, "Last", "One"));
    ASSERT_NO_FATAL_FAILURE(sync_all());

    live_digest = hq->inspect()->digest().value();
    ASSERT_EQ(live_digest.customers, c.size());
    ASSERT_TRUE(hq->inspect()->sync_status(SyncStatus::failed)->empty());
    for (std::size_t i = 0; i < terminals.size(); ++i) {
      ASSERT_EQ(t(i).digest()->hex, live_digest.hex) << "terminal " << i << " did not converge";
    }
  }

  std::vector<std::string> export_terminals() {
    std::vector<std::string> files;
    for (std::size_t i = 0; i < terminals.size(); ++i) {
      files.push_back(dir.file(file_name(t(i).node_id())));
      log_records += export_terminal(t(i), files.back());
    }
    return files;
  }

  // Replays into a new HQ database `name`; the HQ stays open in `replayed`.
  ReplaySummary replay(const std::vector<std::string>& files, const std::string& name,
                       const ReplayOptions& options = {}) {
    auto fresh = Headquarters::init(dir.file(name), "C");
    EXPECT_TRUE(fresh.ok()) << fresh.status().to_string();
    replayed = std::move(fresh).value();
    auto summary = replay_captures(files, *replayed, options);
    EXPECT_TRUE(summary.ok()) << summary.status().to_string();
    return summary.ok() ? *summary : ReplaySummary{};
  }

  TempDir dir;
  std::unique_ptr<HqProcess> hq;
  std::vector<std::unique_ptr<Terminal>> terminals;
  ContentDigest live_digest;
  std::int64_t log_records = 0;
  std::unique_ptr<Headquarters> replayed;
};

TEST_F(ReplayLiveTest, ReplayOfTerminalCapturesGivesTheLiveHqDigest) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  const auto files = export_terminals();
  ASSERT_GT(log_records, 15);

  const ReplaySummary s = replay(files, "replay.db");
  EXPECT_EQ(s.digest, live_digest.hex);
  EXPECT_EQ(s.customers, static_cast<std::int64_t>(live_digest.customers));
  EXPECT_EQ(s.records, log_records);
  EXPECT_EQ(s.created, s.customers);  // every customer came from an async create
  EXPECT_EQ(s.updated, log_records - s.created);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.duplicates, 0);
  EXPECT_GE(s.conflicts, 1);  // the concurrent title edits
  EXPECT_TRUE(s.issues.empty());
  ASSERT_EQ(s.nodes.size(), 3u);
  EXPECT_EQ(s.nodes[0].node_id, "S001/T01");
  EXPECT_EQ(s.nodes[0].files, 1);
  EXPECT_EQ(s.nodes[0].first_seq, 1);
  EXPECT_EQ(s.nodes[0].last_seq, s.nodes[0].records);

  // The replayed HQ itself: same content, every async customer converted.
  EXPECT_EQ(replayed->digest()->hex, live_digest.hex);
  EXPECT_EQ(replayed->customers("")->size(), live_digest.customers);
  EXPECT_EQ(replayed->sync_status(SyncStatus::converted)->size(), live_digest.customers);
  EXPECT_EQ(replayed->conflicts()->size(), static_cast<std::size_t>(s.conflicts));
}

TEST_F(ReplayLiveTest, HqSideExportEqualsTheTerminalsCaptureAndReplaysTheSame) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  const auto files = export_terminals();

  std::vector<std::string> from_hq;
  auto inspect = hq->inspect();
  for (std::size_t i = 0; i < terminals.size(); ++i) {
    from_hq.push_back(dir.file("hq-" + file_name(t(i).node_id())));
    ASSERT_NO_FATAL_FAILURE(export_received(inspect->store(), t(i).node_id(), from_hq.back()));
    EXPECT_EQ(read_capture(from_hq.back()), read_capture(files[i])) << t(i).node_id();
  }
  EXPECT_EQ(read_capture(files[1]), whole_log(t(1)));

  const ReplaySummary s = replay(from_hq, "from-hq.db");
  EXPECT_EQ(s.digest, live_digest.hex);
  EXPECT_EQ(s.failed, 0);
}

TEST_F(ReplayLiveTest, ShuffleSeedsGiveEqualDigests) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  const auto files = export_terminals();
  const ReplaySummary plain = replay(files, "plain.db");
  EXPECT_EQ(plain.digest, live_digest.hex);
  for (std::uint64_t seed : {1u, 2u, 3u, 42u, 7777u}) {
    ReplayOptions o;
    o.shuffle_seed = seed;
    const ReplaySummary s = replay(files, "seed-" + std::to_string(seed) + ".db", o);
    EXPECT_EQ(s.digest, plain.digest) << "seed " << seed;
    EXPECT_EQ(s.customers, plain.customers) << "seed " << seed;
    EXPECT_EQ(s.records, plain.records) << "seed " << seed;
    EXPECT_EQ(s.failed, 0) << "seed " << seed;
    EXPECT_EQ(s.created, plain.created) << "seed " << seed;
  }
}

TEST_F(ReplayLiveTest, UntilSeqStopsEachNodeEarly) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  const auto files = export_terminals();
  ReplayOptions o;
  o.until_seq = 2;
  const ReplaySummary s = replay(files, "until.db", o);
  EXPECT_EQ(s.records, 6);  // seqs 1 and 2 of each of the three nodes
  EXPECT_EQ(s.customers, 6);
  EXPECT_LT(s.customers, static_cast<std::int64_t>(live_digest.customers));
  EXPECT_NE(s.digest, live_digest.hex);
  for (const ReplayNode& n : s.nodes) {
    EXPECT_EQ(n.first_seq, 1) << n.node_id;
    EXPECT_EQ(n.last_seq, 2) << n.node_id;
    auto received = replayed->store().received(n.node_id, 0, 100);
    ASSERT_TRUE(received.ok());
    ASSERT_EQ(received->size(), 2u);
    EXPECT_EQ(received->back().seq, 2);
  }
}

TEST_F(ReplayLiveTest, SplitAndOverlappingCapturesOfOneNodeReplayAsOne) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  auto files = export_terminals();
  const std::vector<LogRecord> log = whole_log(t(0));
  ASSERT_GT(log.size(), 6u);
  // T01's log as two segments sharing seqs 4..5, given in the "wrong" order.
  const std::vector<LogRecord> head(log.begin(), log.begin() + 5);
  const std::vector<LogRecord> tail(log.begin() + 3, log.end());
  ASSERT_NO_FATAL_FAILURE(write_capture(dir.file("t01-tail.tslog"), "S001/T01", tail));
  ASSERT_NO_FATAL_FAILURE(write_capture(dir.file("t01-head.tslog"), "S001/T01", head));
  files[0] = dir.file("t01-tail.tslog");
  files.push_back(dir.file("t01-head.tslog"));

  const ReplaySummary s = replay(files, "split.db");
  EXPECT_EQ(s.digest, live_digest.hex);
  EXPECT_EQ(s.records, log_records);  // the overlap is delivered once
  EXPECT_EQ(s.failed, 0);
  ASSERT_EQ(s.nodes.size(), 3u);
  EXPECT_EQ(s.nodes[0].files, 2);
  EXPECT_EQ(s.nodes[0].records, static_cast<std::int64_t>(log.size()));
}

TEST_F(ReplayLiveTest, ReplayingTheSameCapturesAgainIntoTheSameHqChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(live_run());
  const auto files = export_terminals();
  const ReplaySummary first = replay(files, "again.db");
  auto again = replay_captures(files, *replayed, {});
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->digest, first.digest);
  EXPECT_EQ(again->customers, first.customers);
  EXPECT_EQ(again->created, 0);  // HQ dedups every record it already has
  EXPECT_EQ(again->updated, 0);
  EXPECT_EQ(again->failed, 0);
}

// ---------------------------------------------------------------------------------

class ReplayCaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Offline terminals (no HQ): creations fall back to async (D4) and are logged.
    a = offline_terminal("S001", "T01", 21);
    b = offline_terminal("S002", "T01", 22);
    for (int i = 0; i < 6; ++i) {
      auto out = a->create_customer(new_person("A" + std::to_string(i), "Alpha"));
      ASSERT_TRUE(out.ok()) << out.status().to_string();
      a_guids.push_back(out->customer.guid);
    }
    ASSERT_TRUE(a->edit_customer(a_guids[0].to_string(), {{Field::email, "a0@example.com"}}).ok());
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(b->create_customer(new_person("B" + std::to_string(i), "Beta")).ok());
    a_log = whole_log(*a);
    ASSERT_EQ(a_log.size(), 7u);
    good = dir.file("a.tslog");
    ASSERT_EQ(export_terminal(*a, good), 7);
    other = dir.file("b.tslog");
    ASSERT_EQ(export_terminal(*b, other), 3);
    offsets = frame_offsets(good);
    ASSERT_EQ(offsets.size(), 8u);
  }

  std::unique_ptr<ChannelNode> offline_terminal(const std::string& store, const std::string& id,
                                                std::uint64_t seed) {
    NodeConfig config;
    config.store_id = store;
    config.terminal_id = id;
    config.profile = testing::kAsyncEverything;
    ChannelNodeOptions o;
    o.seed = seed;
    auto node = ChannelNode::create(dir.file(store + "-" + id + ".db"), config, o);
    EXPECT_TRUE(node.ok()) << node.status().to_string();
    return std::move(node).value();
  }

  std::unique_ptr<Headquarters> fresh_hq(const std::string& name) {
    auto hq = Headquarters::init(dir.file(name), "C");
    EXPECT_TRUE(hq.ok()) << hq.status().to_string();
    return std::move(hq).value();
  }

  // A copy of the good capture with `edit` applied to its bytes.
  std::string damaged(const std::string& name, const std::function<void(std::string&)>& edit) {
    std::string bytes = read_bytes(good);
    edit(bytes);
    const std::string path = dir.file(name);
    write_bytes(path, bytes);
    return path;
  }

  // Replay (and verify) refuse `files` with `code` and a message naming the byte
  // offset and record number, and the fresh HQ stays empty.
  void expect_refused(const std::vector<std::string>& files, Code code, std::uint64_t offset,
                      std::int64_t record, const std::string& text) {
    auto hq = fresh_hq("refused-" + std::to_string(++refusals) + ".db");
    auto r = replay_captures(files, *hq, {});
    ASSERT_FALSE(r.ok()) << "replay accepted a bad capture";
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    const std::string& m = r.status().message();
    EXPECT_NE(m.find("byte offset " + std::to_string(offset)), std::string::npos) << m;
    EXPECT_NE(m.find("record " + std::to_string(record)), std::string::npos) << m;
    EXPECT_NE(m.find(text), std::string::npos) << m;
    EXPECT_EQ(hq->customers("")->size(), 0u);
    EXPECT_TRUE(hq->sync_status(std::nullopt)->empty());
    EXPECT_TRUE(hq->store().received("S001/T01", 0, 10)->empty());
    EXPECT_TRUE(hq->store().received("S002/T01", 0, 10)->empty());

    auto v = verify_captures(files, {});
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.status().code(), code);
    EXPECT_EQ(v.status().message(), m);
  }

  TempDir dir;
  std::unique_ptr<ChannelNode> a, b;
  std::vector<Guid> a_guids;
  std::vector<LogRecord> a_log;
  std::string good, other;
  std::vector<std::uint64_t> offsets;  // record frames of `good`, then its end frame
  int refusals = 0;
};

TEST_F(ReplayCaptureTest, VerifyCountsRecordsAndWritesNothing) {
  const std::string before = read_bytes(good);
  std::vector<std::filesystem::path> listing_before(std::filesystem::directory_iterator(dir.path()),
                                                    {});
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  ReplayOptions o;
  o.progress = [&](std::uint64_t done, std::uint64_t total) { calls.emplace_back(done, total); };
  auto v = verify_captures({good, other}, o);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->records, 10);
  EXPECT_TRUE(v->issues.empty());
  EXPECT_TRUE(v->digest.empty());
  EXPECT_EQ(v->customers, 0);
  ASSERT_EQ(v->nodes.size(), 2u);
  EXPECT_EQ(v->nodes[0].node_id, "S001/T01");
  EXPECT_EQ(v->nodes[0].records, 7);
  EXPECT_EQ(v->nodes[0].first_seq, 1);
  EXPECT_EQ(v->nodes[0].last_seq, 7);
  EXPECT_EQ(v->nodes[1].records, 3);

  EXPECT_EQ(read_bytes(good), before);
  std::vector<std::filesystem::path> listing_after(std::filesystem::directory_iterator(dir.path()),
                                                   {});
  EXPECT_EQ(listing_after.size(), listing_before.size());

  const std::uint64_t total = std::filesystem::file_size(good) + std::filesystem::file_size(other);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(total, total));
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);
}

TEST_F(ReplayCaptureTest, ReplayOfAGoodCaptureAppliesEverything) {
  auto hq = fresh_hq("good.db");
  std::uint64_t last_done = 0, last_total = 0;
  ReplayOptions o;
  o.progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  };
  auto s = replay_captures({good, other}, *hq, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->records, 10);
  EXPECT_EQ(s->customers, 9);
  EXPECT_EQ(s->created, 9);
  EXPECT_EQ(s->updated, 1);
  EXPECT_EQ(s->failed, 0);
  EXPECT_EQ(s->digest, hq->digest()->hex);
  // Both passes (verification, application) are counted.
  EXPECT_EQ(last_total, 2 * (std::filesystem::file_size(good) + std::filesystem::file_size(other)));
  EXPECT_EQ(last_done, last_total);
  auto found = hq->customers("a0@example.com");
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].guid, a_guids[0]);
}

TEST_F(ReplayCaptureTest, TruncatedFileIsCorruptAndAppliesNothing) {
  const std::uint64_t cut = offsets[3] + 20;  // inside record 4
  const auto path = damaged("truncated.tslog", [&](std::string& bytes) { bytes.resize(cut); });
  expect_refused({other, path}, Code::corrupt_log, offsets[3], 4, "truncated record");
}

TEST_F(ReplayCaptureTest, FileCutBetweenRecordsIsCorrupt) {
  const auto path = damaged("cut.tslog", [&](std::string& bytes) { bytes.resize(offsets[5]); });
  expect_refused({path}, Code::corrupt_log, offsets[5], 6, "without its end frame");
}

TEST_F(ReplayCaptureTest, FlippedBitIsCorruptAndAppliesNothing) {
  const auto path =
      damaged("flipped.tslog", [&](std::string& bytes) { bytes[offsets[2] + 30] ^= 0x04; });
  expect_refused({other, path}, Code::corrupt_log, offsets[2], 3, "checksum mismatch");
}

TEST_F(ReplayCaptureTest, WrongMagicIsCorrupt) {
  const auto path = damaged("magic.tslog", [](std::string& bytes) { bytes[0] = 'X'; });
  expect_refused({other, path}, Code::corrupt_log, 0, 1, "not a tillsync capture file");
}

TEST_F(ReplayCaptureTest, NewerFormatVersionIsUnsupported) {
  const auto path = damaged("v2.tslog", [](std::string& bytes) {
    bytes[8] = static_cast<char>(kCaptureFormatVersion + 1);
    bytes[9] = 0;
  });
  expect_refused({path, other}, Code::unsupported_version, 8, 1, "format version 2");
}

TEST_F(ReplayCaptureTest, GapInSequenceNumbersIsCorrupt) {
  std::vector<LogRecord> gapped = a_log;
  gapped.erase(gapped.begin() + 2);  // seq 3 is missing
  const std::string path = dir.file("gap.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(path, "S001/T01", gapped));
  const auto at = frame_offsets(path);
  expect_refused({other, path}, Code::corrupt_log, at[2], 3, "expected seq 3, found seq 4");
}

TEST_F(ReplayCaptureTest, FirstRecordMustBeTheHeadersFirstSeq) {
  const std::string path = dir.file("first.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(path, "S001/T01", a_log, 2));
  expect_refused({path}, Code::corrupt_log, offsets[0], 1, "expected seq 2, found seq 1");
}

TEST_F(ReplayCaptureTest, NodeIdMismatchIsCorrupt) {
  const std::string path = dir.file("mismatch.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(path, "S001/T09", a_log));
  const auto at = frame_offsets(path);
  expect_refused({path}, Code::corrupt_log, at[0], 1, "in a capture of node 'S001/T09'");
}

TEST_F(ReplayCaptureTest, PayloadThatDoesNotDecodeIsCorrupt) {
  std::vector<LogRecord> bad = a_log;
  bad[3].payload = "\x01\x00garbage";
  const std::string path = dir.file("payload.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(path, "S001/T01", bad));
  const auto at = frame_offsets(path);
  expect_refused({path}, Code::corrupt_log, at[3], 4, "does not decode");
}

TEST_F(ReplayCaptureTest, GapBetweenCapturesOfOneNodeIsCorrupt) {
  const std::string first = dir.file("part1.tslog"), second = dir.file("part2.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(first, "S001/T01", {a_log.begin(), a_log.begin() + 2}));
  ASSERT_NO_FATAL_FAILURE(write_capture(second, "S001/T01", {a_log.begin() + 4, a_log.end()}));
  // Each file is intact on its own.
  ASSERT_TRUE(verify_captures({first, second}, {}).ok());
  auto hq = fresh_hq("segments.db");
  auto r = replay_captures({second, first}, *hq, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::corrupt_log);
  EXPECT_NE(r.status().message().find("seqs 3..4 missing"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("record 1"), std::string::npos) << r.status().message();
  EXPECT_EQ(hq->customers("")->size(), 0u);
  EXPECT_TRUE(hq->sync_status(std::nullopt)->empty());
}

// A capture that starts after seq 1 is where the node's log started when it was
// exported (its log retention compacted the rest after HQ had it): no gap, into an HQ
// that has nothing from the node. It is a gap when HQ has part of the node's log and
// the capture does not continue it; and a hole inside a capture is still a gap.
TEST_F(ReplayCaptureTest, CaptureStartingAfterSeqOneIsNoGapUnlessHqHasAnEarlierPart) {
  const std::string late = dir.file("late.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(late, "S001/T01", {a_log.begin() + 3, a_log.end()}));
  auto v = verify_captures({late}, {});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  ASSERT_EQ(v->nodes.size(), 1u);
  EXPECT_EQ(v->nodes[0].first_seq, 4);
  auto compacted = fresh_hq("compacted.db");
  auto r = replay_captures({late}, *compacted, {});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->records, 4);
  EXPECT_EQ(r->customers, 3);  // A3..A5; A0's edit waits for a create the capture lacks
  EXPECT_EQ(r->failed, 0);
  EXPECT_EQ(compacted->store().received("S001/T01", 0, 10)->size(), 4u);

  auto partial = fresh_hq("partial.db");
  const std::string early = dir.file("early.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(early, "S001/T01", {a_log.begin(), a_log.begin() + 2}));
  ASSERT_TRUE(replay_captures({early}, *partial, {}).ok());
  auto gap = replay_captures({late}, *partial, {});
  ASSERT_FALSE(gap.ok());
  EXPECT_EQ(gap.status().code(), Code::corrupt_log);
  EXPECT_NE(gap.status().message().find("HQ has seqs up to 2 from node S001/T01"), std::string::npos)
      << gap.status().message();
  EXPECT_NE(gap.status().message().find("seq 3 missing"), std::string::npos) << gap.status().message();
  EXPECT_EQ(partial->customers("")->size(), 2u);

  // The same capture continues an HQ that has seqs 1..3 from the node.
  const std::string first_three = dir.file("first-three.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(first_three, "S001/T01", {a_log.begin(), a_log.begin() + 3}));
  auto full = fresh_hq("full.db");
  ASSERT_TRUE(replay_captures({first_three}, *full, {}).ok());
  auto s = replay_captures({late}, *full, {});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->customers, 6);

  // Starting after seq 1 with a hole inside: the hole is a gap, as ever.
  std::vector<LogRecord> holed(a_log.begin() + 2, a_log.end());
  holed.erase(holed.begin() + 2);  // seq 5
  const std::string with_hole = dir.file("holed.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(with_hole, "S001/T01", holed));
  for (auto result : {verify_captures({with_hole}, {}), replay_captures({with_hole}, *fresh_hq("holed.db"), {})}) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), Code::corrupt_log);
    EXPECT_NE(result.status().message().find("sequence gap: expected seq 5, found seq 6"), std::string::npos)
        << result.status().message();
  }
}

TEST_F(ReplayCaptureTest, SkipCorruptGoesPastAFlippedBitAndReportsIt) {
  const auto path =
      damaged("flipped.tslog", [&](std::string& bytes) { bytes[offsets[2] + 30] ^= 0x04; });
  auto hq = fresh_hq("skip.db");
  ReplayOptions o;
  o.skip_corrupt = true;
  auto s = replay_captures({path, other}, *hq, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ(s->issues.size(), 1u);
  EXPECT_EQ(s->issues[0].file, path);
  EXPECT_EQ(s->issues[0].offset, offsets[2]);
  EXPECT_EQ(s->issues[0].record, 3);
  EXPECT_EQ(s->issues[0].status.code(), Code::corrupt_log);
  EXPECT_NE(s->issues[0].status.message().find("checksum mismatch"), std::string::npos);
  EXPECT_EQ(s->records, 9);  // 6 of A's 7 records, B's 3
  EXPECT_EQ(s->customers, 8);
  EXPECT_EQ(s->failed, 0);
  EXPECT_TRUE(hq->customers(a_guids[2].to_string())->empty());  // the skipped create
  EXPECT_EQ(hq->customers("a0@example.com")->size(), 1u);       // the edit after it applied

  // HQ refuses gaps, so the pushed seqs were renumbered densely.
  auto received = hq->store().received("S001/T01", 0, 100).value();
  ASSERT_EQ(received.size(), 6u);
  for (std::size_t i = 0; i < received.size(); ++i) {
    EXPECT_EQ(received[i].seq, static_cast<std::int64_t>(i + 1));
  }
  EXPECT_EQ(received[2].op_id, a_log[3].op_id);

  // verify reports the same issue and counts the intact records.
  auto v = verify_captures({path, other}, o);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->records, 9);
  ASSERT_EQ(v->issues.size(), 1u);
  EXPECT_EQ(v->issues[0].offset, offsets[2]);
}

TEST_F(ReplayCaptureTest, SkipCorruptFindsTheNextRecordAfterADamagedLength) {
  const auto path = damaged("length.tslog", [&](std::string& bytes) {
    bytes[offsets[1] + 3] = '\x7f';  // record 2's length becomes absurd
  });
  ReplayOptions o;
  o.skip_corrupt = true;
  auto v = verify_captures({path}, o);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  ASSERT_EQ(v->issues.size(), 1u);
  EXPECT_EQ(v->issues[0].offset, offsets[1]);
  EXPECT_EQ(v->issues[0].record, 2);
  EXPECT_EQ(v->records, 6);
  ASSERT_EQ(v->nodes.size(), 1u);
  EXPECT_EQ(v->nodes[0].last_seq, 7);
}

TEST_F(ReplayCaptureTest, SkipCorruptKeepsTheIntactPrefixOfATruncatedFile) {
  const auto path =
      damaged("truncated.tslog", [&](std::string& bytes) { bytes.resize(offsets[4] + 10); });
  auto hq = fresh_hq("prefix.db");
  ReplayOptions o;
  o.skip_corrupt = true;
  auto s = replay_captures({path}, *hq, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ(s->issues.size(), 1u);
  EXPECT_EQ(s->issues[0].offset, offsets[4]);
  EXPECT_EQ(s->issues[0].record, 5);
  EXPECT_EQ(s->records, 4);
  EXPECT_EQ(s->customers, 4);
}

TEST_F(ReplayCaptureTest, SkipCorruptSkipsAFileWhoseHeaderIsUnusable) {
  const auto magic = damaged("magic.tslog", [](std::string& bytes) { bytes[1] = '?'; });
  auto hq = fresh_hq("unusable.db");
  ReplayOptions o;
  o.skip_corrupt = true;
  auto s = replay_captures({magic, other}, *hq, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ(s->issues.size(), 1u);
  EXPECT_EQ(s->issues[0].file, magic);
  EXPECT_EQ(s->issues[0].record, 0);
  EXPECT_EQ(s->issues[0].status.code(), Code::corrupt_log);
  EXPECT_EQ(s->customers, 3);
}

TEST_F(ReplayCaptureTest, SkipCorruptReportsAGapAndAppliesAcrossIt) {
  std::vector<LogRecord> gapped = a_log;
  gapped.erase(gapped.begin() + 2);
  const std::string path = dir.file("gap.tslog");
  ASSERT_NO_FATAL_FAILURE(write_capture(path, "S001/T01", gapped));
  auto hq = fresh_hq("gap.db");
  ReplayOptions o;
  o.skip_corrupt = true;
  auto s = replay_captures({path}, *hq, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ(s->issues.size(), 1u);
  EXPECT_NE(s->issues[0].status.message().find("seqs 3..3 are missing"), std::string::npos)
      << s->issues[0].status.message();
  EXPECT_EQ(s->records, 6);
  EXPECT_EQ(s->customers, 5);
}

TEST_F(ReplayCaptureTest, MissingFileIsNotFound) {
  auto hq = fresh_hq("missing.db");
  auto r = replay_captures({good, dir.file("nope.tslog")}, *hq, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::not_found);
  EXPECT_EQ(hq->customers("")->size(), 0u);
}

}  // namespace
}  // namespace tillsync
