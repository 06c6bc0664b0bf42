// Messages between terminals and HQ (docs/protocol.md). Each message body is a cereal
// portable-binary archive of one struct below, framed by transport/frame.h with the
// message type; a reply has the request's type | kReplyBit.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "codec.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync::protocol {

enum class MsgType : std::uint8_t {
  hello = 1,
  rts_create = 2,
  rts_edit = 3,
  rts_add_address = 4,
  rts_issue_loyalty_card = 5,
  search = 6,
  push = 7,
  pull = 8,
};
inline constexpr std::uint8_t kReplyBit = 0x80;
inline constexpr std::uint8_t reply_type(MsgType t) {
  return static_cast<std::uint8_t>(static_cast<std::uint8_t>(t) | kReplyBit);
}

template <class Ar>
void log_record(Ar& ar, LogRecord& r) {
  codec::integer(ar, r.seq);
  codec::guid(ar, r.op_id);
  codec::guid(ar, r.entity);
  codec::enumeration(ar, r.kind, OpKind::loyalty_card_issued);
  if constexpr (codec::loading<Ar>()) {
    if (static_cast<int>(r.kind) < 1) throw codec::DecodeError("operation kind out of range");
  }
  codec::integer(ar, r.hlc.value);
  codec::text(ar, r.node_id);
  // Payloads are opaque here; their own decoder checks them when applied.
  std::uint64_t n = r.payload.size();
  codec::size(ar, n, 1024 * 1024);
  if constexpr (codec::loading<Ar>()) r.payload.resize(static_cast<std::size_t>(n));
  if (n > 0) ar(cereal::binary_data(r.payload.data(), static_cast<std::size_t>(n)));
}

// The start of every sync (and a reachability probe, with no node): HQ's epoch, how
// far HQ holds the node's log, and HQ's clock.
// `acked_op`: the op id of the node's newest row HQ acknowledged (nil: none), which HQ
// says whether it holds.
struct Hello {
  std::string node;
  Guid acked_op;
  std::int64_t acked_seq = 0;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::guid(ar, acked_op);
    codec::integer(ar, acked_seq);
  }
};
struct HelloReply {
  std::string epoch;
  std::int64_t push_cursor = 0;
  std::uint64_t hq_hlc = 0;
  bool holds_acked = true;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, epoch);
    codec::integer(ar, push_cursor);
    codec::integer(ar, hq_hlc);
    codec::boolean(ar, holds_acked);
  }
};

// Real-time requests name a request id: the op id the terminal logs the write under.
// HQ carries out a request id once.
struct RtsCreate {
  std::string node;
  Guid request;
  Customer customer;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::guid(ar, request);
    codec::customer(ar, customer);
  }
};
struct RtsEdit {
  std::string node;
  Guid request;
  Guid customer;
  std::int64_t base_version = 0;
  std::vector<FieldChange> changes;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::guid(ar, request);
    codec::guid(ar, customer);
    codec::integer(ar, base_version);
    codec::list(ar, changes, [](Ar& a, FieldChange& c) { codec::field_change(a, c); });
  }
};
struct RtsAddAddress {
  std::string node;
  Guid request;
  Guid customer;
  Address address;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::guid(ar, request);
    codec::guid(ar, customer);
    codec::address(ar, address);
  }
};
struct RtsIssueLoyaltyCard {
  std::string node;
  Guid request;
  Guid customer;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::guid(ar, request);
    codec::guid(ar, customer);
  }
};
// `filtered`: the terminal excludes other stores' customers (D5).
struct Search {
  std::string node;
  std::string text;
  bool filtered = false;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::text(ar, text);
    codec::boolean(ar, filtered);
  }
};
// At most Headquarters::kMaxSearchResults customers; `truncated`: more matched.
struct SearchReply {
  std::vector<Customer> customers;
  bool truncated = false;
  template <class Ar> void io(Ar& ar) {
    codec::list(ar, customers, [](Ar& a, Customer& c) { codec::customer(a, c); });
    codec::boolean(ar, truncated);
  }
};
// The answer to a real-time request: the customer as HQ has it, HQ's clock, and the
// loyalty card the request issued ("" for other requests).
struct RtsReply {
  Customer customer;
  std::uint64_t hq_hlc = 0;
  std::string card_number;
  template <class Ar> void io(Ar& ar) {
    codec::customer(ar, customer);
    codec::integer(ar, hq_hlc);
    codec::text(ar, card_number);
  }
};

// `prev`: the seq of the node's log row just before records[0] (nothing of the node's
// log lies between prev and records[0].seq).
struct Push {
  std::string node;
  std::int64_t prev = 0;
  Guid prev_op;  // the op id of the node's row at `prev` (nil: none, or not known)
  std::vector<LogRecord> records;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::integer(ar, prev);
    codec::guid(ar, prev_op);
    codec::list(ar, records, [](Ar& a, LogRecord& r) { log_record(a, r); });
  }
};
struct PushAck {
  std::string epoch;
  std::int64_t acked_seq = 0;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, epoch);
    codec::integer(ar, acked_seq);
  }
};

// `after_mark`: the mark HQ gave with the cursor `after` (0 for after = 0).
struct Pull {
  std::string node;
  std::int64_t after = 0;
  std::uint64_t after_mark = 0;
  std::uint32_t limit = 0;
  bool filtered = false;
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, node);
    codec::integer(ar, after);
    codec::integer(ar, after_mark);
    codec::integer(ar, limit);
    codec::boolean(ar, filtered);
  }
};
// `reset`: `after` is not a position of HQ's feed (HQ restored from an older backup):
// nothing else is in the reply, and the node pulls again from 0. `compacted` (with
// reset): `after` lies in the part of the feed HQ compacted; the node pulls from 0.
// `erased`: customers HQ erased (right to erasure).
struct PullReply {
  std::string epoch;
  bool reset = false;
  std::int64_t cursor = 0;
  std::uint64_t cursor_mark = 0;
  std::uint64_t hq_hlc = 0;
  std::vector<Customer> customers;
  std::vector<std::pair<Guid, Guid>> aliases;
  bool more = false;
  std::vector<std::pair<Guid, std::string>> merged_elsewhere;
  bool compacted = false;
  std::vector<Guid> erased;  // customers HQ erased: the node deletes its copies
  std::vector<std::pair<Guid, std::string>> alias_accounts;  // (alias, its old account number)
  template <class Ar> void io(Ar& ar) {
    codec::text(ar, epoch);
    codec::boolean(ar, reset);
    codec::integer(ar, cursor);
    codec::integer(ar, cursor_mark);
    codec::integer(ar, hq_hlc);
    codec::list(ar, customers, [](Ar& a, Customer& c) { codec::customer(a, c); });
    codec::list(ar, aliases, [](Ar& a, std::pair<Guid, Guid>& p) {
      codec::guid(a, p.first);
      codec::guid(a, p.second);
    });
    codec::boolean(ar, more);
    codec::list(ar, merged_elsewhere, [](Ar& a, std::pair<Guid, std::string>& p) {
      codec::guid(a, p.first);
      codec::text(a, p.second);
    });
    codec::boolean(ar, compacted);
    codec::list(ar, erased, [](Ar& a, Guid& g) { codec::guid(a, g); });
    codec::list(ar, alias_accounts, [](Ar& a, std::pair<Guid, std::string>& p) {
      codec::guid(a, p.first);
      codec::text(a, p.second);
    });
  }
};

template <class Msg>
std::string encode(Msg msg) {
  std::ostringstream os(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(os);
    msg.io(ar);
  }
  return std::move(os).str();
}

// invalid_input for any malformed body: a peer sent something we cannot read.
template <class Msg>
Result<Msg> decode(std::string_view bytes) {
  Msg msg;
  std::istringstream is(std::string(bytes), std::ios::binary);
  try {
    cereal::PortableBinaryInputArchive ar(is);
    msg.io(ar);
  } catch (const std::exception& e) {
    return Status::InvalidInput("message", std::string("malformed message body: ") + e.what());
  }
  if (is.peek() != std::char_traits<char>::eof())
    return Status::InvalidInput("message", "malformed message body: trailing bytes");
  return msg;
}

}  // namespace tillsync::protocol
