// safetensors reader/writer, hostile files, sharded checkpoints, and a bounded fuzz test.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/half.h"
#include "orchestration/checkpoint/safetensors.h"

#include "test_util.h"

namespace fulgur {
namespace {

using nlohmann::json;

using test::TempDir;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A tensor of `dtype` whose element i holds a value derived from (seed, i).
Tensor patterned(DType dtype, std::vector<int64_t> shape, int seed) {
  Tensor t = Tensor::empty(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = static_cast<float>(seed) + 0.25f * static_cast<float>(i) - 3.0f;
    switch (dtype) {
      case DType::f32: t.data<float>()[i] = v; break;
      case DType::bf16: t.data<uint16_t>()[i] = kernels::f32_to_bf16(v); break;
      case DType::f16: t.data<uint16_t>()[i] = kernels::f32_to_f16(v); break;
      case DType::i8: t.data<int8_t>()[i] = static_cast<int8_t>(seed * 7 + i - 60); break;
      case DType::i32: t.data<int32_t>()[i] = seed * 100000 + static_cast<int32_t>(i) - 7; break;
      case DType::i64: t.data<int64_t>()[i] = (int64_t{seed} << 40) - i; break;
    }
  }
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// Raw file bytes: 8-byte length + header (space-padded to a multiple of 8 when `pad`) + data.
std::string raw_file(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) out[static_cast<size_t>(b)] = static_cast<char>((n >> (8 * b)) & 0xff);
  return out + header + data;
}

NamedTensors small_set() {
  return {{"model.norm.weight", patterned(DType::f32, {2, 3}, 1)},
          {"b.bf16", patterned(DType::bf16, {5}, 2)},
          {"c.i64", patterned(DType::i64, {2}, 3)}};
}

void expect_error(const Expected<SafetensorsFile>& r, Errc code, std::initializer_list<std::string> needles) {
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  for (const std::string& n : needles) {
    EXPECT_NE(r.error().message().find(n), std::string::npos) << "'" << n << "' not in: " << r.error().message();
  }
}

// ---- round trips ----------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  NamedTensors in = {
      {"f32", patterned(DType::f32, {3, 4}, 1)},  {"bf16", patterned(DType::bf16, {7}, 2)},
      {"f16", patterned(DType::f16, {2, 1, 3}, 3)}, {"i8", patterned(DType::i8, {5}, 4)},
      {"i32", patterned(DType::i32, {3}, 5)},     {"i64", patterned(DType::i64, {2, 2}, 6)},
      {"scalar", patterned(DType::f32, {}, 7)},   {"empty", patterned(DType::bf16, {0, 3}, 8)},
  };
  const SafetensorsMetadata meta = {{"format", "pt"}, {"note", "ünïcödé"}};
  ASSERT_TRUE(write_safetensors(dir.file("x.safetensors"), in, meta).is_ok());
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors.tmp")));

  auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  ASSERT_TRUE(f.has_value()) << f.error().to_string();
  EXPECT_EQ(f->file_name(), "x.safetensors");
  EXPECT_EQ(f->metadata(), meta);
  EXPECT_EQ(f->entries().size(), in.size());
  for (const auto& [name, t] : in) {
    auto got = f->tensor(name);
    ASSERT_TRUE(got.has_value()) << name << ": " << got.error().to_string();
    EXPECT_TRUE(same_bytes(*got, t)) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got->raw()) % dtype_size(t.dtype()), 0u) << name;
  }
  // Zero copy: the view points into the mapping, the same bytes every time.
  EXPECT_EQ(f->tensor("f32")->raw(), f->tensor("f32")->raw());
  EXPECT_NE(f->tensor("f32")->owner(), nullptr);
  // The in-memory serialisation is the file.
  auto bytes = serialize_safetensors(in, meta);
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ(*bytes, read_bytes(dir.file("x.safetensors")));
  EXPECT_EQ(f->tensor("missing").error().code(), Errc::not_found);
}

TEST(Safetensors, ViewsOutliveTheFileObject) {
  TempDir dir;
  NamedTensors in = small_set();
  ASSERT_TRUE(write_safetensors(dir.file("m.safetensors"), in).is_ok());
  Tensor kept;
  {
    auto f = SafetensorsFile::open(dir.file("m.safetensors"));
    ASSERT_TRUE(f.has_value());
    kept = *f->tensor("model.norm.weight");
  }
  EXPECT_TRUE(same_bytes(kept, in[0].second));
}

TEST(Safetensors, HeaderIsPaddedAndDataAligned) {
  NamedTensors in = {{"odd", patterned(DType::i8, {3}, 1)},
                     {"half", patterned(DType::bf16, {3}, 2)},
                     {"wide", patterned(DType::i64, {1}, 3)},
                     {"single", patterned(DType::f32, {3}, 4)}};
  auto bytes = serialize_safetensors(in);
  ASSERT_TRUE(bytes.has_value());
  uint64_t n = 0;
  std::memcpy(&n, bytes->data(), 8);  // little-endian host
  EXPECT_EQ((8 + n) % 8, 0u);
  json header = json::parse(bytes->substr(8, n));
  for (auto& [name, e] : header.items()) {
    const uint64_t begin = e["data_offsets"][0];
    EXPECT_EQ(begin % dtype_size(*dtype_from_safetensors(e["dtype"].get<std::string>())), 0u) << name;
  }
  auto f = SafetensorsFile::from_bytes(*bytes, "mem.safetensors");
  ASSERT_TRUE(f.has_value());
  for (const auto& [name, t] : in) EXPECT_TRUE(same_bytes(*f->tensor(name), t)) << name;
}

TEST(Safetensors, EmptyHeaderIsValid) {
  auto f = SafetensorsFile::from_bytes(raw_file("{}", ""), "empty.safetensors");
  ASSERT_TRUE(f.has_value()) << f.error().to_string();
  EXPECT_TRUE(f->entries().empty());
}

TEST(Safetensors, UnalignedDataIsCopiedToAlignedMemory) {
  // bf16 [1] at [0, 2), then f32 [2] at [2, 10): the f32 data is 2 bytes off alignment.
  std::string data(10, '\0');
  const uint16_t h = kernels::f32_to_bf16(1.5f);
  std::memcpy(&data[0], &h, 2);
  const float vals[2] = {3.25f, -7.5f};
  std::memcpy(&data[2], vals, 8);
  const std::string header =
      R"({"h":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  auto f = SafetensorsFile::from_bytes(raw_file(header, data), "unaligned.safetensors");
  ASSERT_TRUE(f.has_value()) << f.error().to_string();
  auto w = f->tensor("w");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->raw()) % 4, 0u);
  EXPECT_EQ(w->data<float>()[0], 3.25f);
  EXPECT_EQ(w->data<float>()[1], -7.5f);
}

TEST(Safetensors, WriterRejectsBadNames) {
  TempDir dir;
  const Tensor t = patterned(DType::f32, {2}, 1);
  EXPECT_EQ(write_safetensors(dir.file("a"), {{"x", t}, {"x", t}}).code(), Errc::invalid_argument);
  EXPECT_EQ(write_safetensors(dir.file("a"), {{"__metadata__", t}}).code(), Errc::invalid_argument);
  EXPECT_EQ(write_safetensors(dir.file("a"), {{"", t}}).code(), Errc::invalid_argument);
  EXPECT_EQ(write_safetensors(dir.file("a"), {{"bad\xff", t}}).code(), Errc::invalid_argument);
  EXPECT_EQ(write_safetensors(dir.file("a"), {{"x", t}}, {{"k", "\xc0\x80"}}).code(), Errc::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir.file("a")));
  EXPECT_EQ(write_safetensors(dir.file("no/such/dir/a"), {{"x", t}}).code(), Errc::io_error);
}

// ---- hostile files --------------------------------------------------------------------------

TEST(SafetensorsHostile, TruncatedAtEveryByte) {
  TempDir dir;
  auto bytes = serialize_safetensors(small_set(), {{"format", "pt"}});
  ASSERT_TRUE(bytes.has_value());
  const std::string path = dir.file("model-00001-of-00002.safetensors");
  for (size_t len = 0; len < bytes->size(); ++len) {
    write_bytes(path, bytes->substr(0, len));
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.has_value()) << "truncated to " << len << " bytes was accepted";
    EXPECT_EQ(f.error().code(), Errc::invalid_checkpoint) << len << ": " << f.error().to_string();
    EXPECT_EQ(f.error().message().rfind("model-00001-of-00002.safetensors: ", 0), 0u) << f.error().message();
  }
  write_bytes(path, *bytes);
  EXPECT_TRUE(SafetensorsFile::open(path).has_value());
}

TEST(SafetensorsHostile, TruncatedDataNamesTheTensor) {
  auto bytes = serialize_safetensors({{"model.norm.weight", patterned(DType::f32, {4}, 1)}});
  ASSERT_TRUE(bytes.has_value());
  auto f = SafetensorsFile::from_bytes(bytes->substr(0, bytes->size() - 1), "model-00001-of-00002.safetensors");
  expect_error(f, Errc::invalid_checkpoint,
               {"model-00001-of-00002.safetensors: tensor 'model.norm.weight': data_offsets [0, 16] exceed",
                "file size"});
}

TEST(SafetensorsHostile, HugeHeaderLength) {
  auto bytes = serialize_safetensors(small_set());
  ASSERT_TRUE(bytes.has_value());
  std::string s = *bytes;
  for (int b = 0; b < 8; ++b) s[static_cast<size_t>(b)] = '\xff';
  expect_error(SafetensorsFile::from_bytes(s, "h.safetensors"), Errc::invalid_checkpoint, {"h.safetensors", "header length"});
  const uint64_t just_over = s.size() - 8 + 1;
  for (int b = 0; b < 8; ++b) s[static_cast<size_t>(b)] = static_cast<char>((just_over >> (8 * b)) & 0xff);
  expect_error(SafetensorsFile::from_bytes(s, "h.safetensors"), Errc::invalid_checkpoint, {"exceeds the file size"});
}

TEST(SafetensorsHostile, HeaderNotJson) {
  TempDir dir;
  write_bytes(dir.file("bad.safetensors"), raw_file("this is not json", "abcd"));
  expect_error(SafetensorsFile::open(dir.file("bad.safetensors")), Errc::invalid_checkpoint,
               {"bad.safetensors", "not valid JSON"});
  expect_error(SafetensorsFile::from_bytes(raw_file("[1, 2]", ""), "arr.safetensors"), Errc::invalid_checkpoint,
               {"arr.safetensors", "JSON object"});
  expect_error(SafetensorsFile::from_bytes(raw_file("{\"a\": 1}", ""), "e.safetensors"), Errc::invalid_checkpoint,
               {"tensor 'a'", "object"});
  // Nesting far deeper than any real header must fail cleanly, not overflow the stack.
  expect_error(SafetensorsFile::from_bytes(raw_file("{\"a\":" + std::string(100000, '['), ""), "d.safetensors"),
               Errc::invalid_checkpoint, {"d.safetensors"});
}

TEST(SafetensorsHostile, OverlappingOffsets) {
  const std::string header =
      R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_error(SafetensorsFile::from_bytes(raw_file(header, std::string(12, '\0')), "o.safetensors"),
               Errc::invalid_checkpoint, {"o.safetensors", "'second'", "overlap", "'first'"});
  // Identical ranges overlap too; zero-size tensors overlap nothing.
  const std::string same =
      R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})";
  expect_error(SafetensorsFile::from_bytes(raw_file(same, std::string(4, '\0')), "o.safetensors"),
               Errc::invalid_checkpoint, {"overlap"});
  const std::string empty_inside =
      R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})";
  EXPECT_TRUE(SafetensorsFile::from_bytes(raw_file(empty_inside, std::string(4, '\0')), "o").has_value());
}

TEST(SafetensorsHostile, WrongByteCount) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  expect_error(SafetensorsFile::from_bytes(raw_file(header, std::string(8, '\0')), "c.safetensors"),
               Errc::invalid_checkpoint, {"c.safetensors: tensor 'w'", "hold 8 bytes", "[3] F32 needs 12"});
}

TEST(SafetensorsHostile, UnsupportedAndUnknownDtypes) {
  for (const char* dt : {"F64", "BOOL", "F8_E4M3", "U8", "garbage"}) {
    const std::string header = std::string(R"({"w":{"dtype":")") + dt + R"(","shape":[1],"data_offsets":[0,8]}})";
    expect_error(SafetensorsFile::from_bytes(raw_file(header, std::string(8, '\0')), "d.safetensors"),
                 Errc::unsupported, {"d.safetensors: tensor 'w'", dt});
  }
}

TEST(SafetensorsHostile, MalformedEntries) {
  struct Case {
    const char* entry;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"shape":[1],"data_offsets":[0,4]})", "missing 'dtype'"},
      {R"({"dtype":"F32","data_offsets":[0,4]})", "missing 'shape'"},
      {R"({"dtype":"F32","shape":[1]})", "missing 'data_offsets'"},
      {R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})", "'dtype' must be a string"},
      {R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", "non-negative"},
      {R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", "non-negative"},
      {R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", "'shape' must be an array"},
      {R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", "[begin, end]"},
      {R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})", "end before"},
      {R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", "[begin, end]"},
      {R"({"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]})", "too large"},
      {R"({"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]})", "exceed"},
  };
  for (const Case& c : cases) {
    const std::string header = std::string(R"({"t":)") + c.entry + "}";
    expect_error(SafetensorsFile::from_bytes(raw_file(header, std::string(4, '\0')), "m.safetensors"),
                 Errc::invalid_checkpoint, {"m.safetensors: tensor 't'", c.needle});
  }
  expect_error(SafetensorsFile::from_bytes(raw_file(R"({"__metadata__":{"a":1}})", ""), "m.safetensors"),
               Errc::invalid_checkpoint, {"__metadata__"});
}

TEST(SafetensorsHostile, NotAFile) {
  TempDir dir;
  EXPECT_EQ(SafetensorsFile::open(dir.file("absent.safetensors")).error().code(), Errc::not_found);
  EXPECT_EQ(SafetensorsFile::open(dir.path()).error().code(), Errc::io_error);
  write_bytes(dir.file("empty.safetensors"), "");
  expect_error(SafetensorsFile::open(dir.file("empty.safetensors")), Errc::invalid_checkpoint,
               {"empty.safetensors", "too short"});
}

// ---- sharded checkpoints --------------------------------------------------------------------

NamedTensors shard_set() {
  NamedTensors t;
  for (int i = 0; i < 7; ++i) {
    t.emplace_back("layer." + std::to_string(i) + ".weight", patterned(i % 2 ? DType::bf16 : DType::f32, {10, 10}, i));
  }
  return t;
}

TEST(SafetensorsSharded, WriteAndOpen) {
  TempDir dir;
  NamedTensors in = shard_set();
  auto names = write_sharded_safetensors(dir.path(), in, 600, {{"format", "pt"}});
  ASSERT_TRUE(names.has_value()) << names.error().to_string();
  // 400-byte f32 and 200-byte bf16 tensors, at most 600 bytes per shard: f32|bf16 pairs, 4 shards.
  ASSERT_EQ(names->size(), 4u);
  EXPECT_EQ((*names)[0], "model-00001-of-00004.safetensors");
  EXPECT_EQ((*names)[3], "model-00004-of-00004.safetensors");

  auto index = parse_shard_index(read_bytes(dir.file(kSafetensorsIndexFile)));
  ASSERT_TRUE(index.has_value()) << index.error().to_string();
  EXPECT_EQ(index->weight_map.size(), in.size());
  EXPECT_EQ(index->total_size, 4 * 400 + 3 * 200);
  EXPECT_EQ(index->shard_files(), *names);

  std::vector<std::string> lines;
  auto ckpt = CheckpointFiles::open(dir.path(), [&](const std::string& l) { lines.push_back(l); });
  ASSERT_TRUE(ckpt.has_value()) << ckpt.error().to_string();
  EXPECT_TRUE(ckpt->sharded());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1].rfind("loading shard 2/4 model-00002-of-00004.safetensors (", 0), 0u) << lines[1];
  EXPECT_NE(lines[1].find(" MB)"), std::string::npos) << lines[1];
  EXPECT_EQ(ckpt->tensor_names().size(), in.size());
  for (const auto& [name, t] : in) {
    auto got = ckpt->tensor(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_TRUE(same_bytes(*got, t)) << name;
  }
  EXPECT_EQ(ckpt->file_for("layer.2.weight"), "model-00002-of-00004.safetensors");
  auto missing = ckpt->tensor("nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), Errc::not_found);
  EXPECT_NE(missing.error().message().find(kSafetensorsIndexFile), std::string::npos);
}

TEST(SafetensorsSharded, SingleFileDirectoryAndDirectPath) {
  TempDir dir;
  NamedTensors in = small_set();
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), in).is_ok());
  std::vector<std::string> lines;
  auto ckpt = CheckpointFiles::open(dir.path(), [&](const std::string& l) { lines.push_back(l); });
  ASSERT_TRUE(ckpt.has_value()) << ckpt.error().to_string();
  EXPECT_FALSE(ckpt->sharded());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rfind("loading shard 1/1 model.safetensors (0.0 MB)", 0), 0u) << lines[0];
  EXPECT_EQ(ckpt->file_for("absent"), "model.safetensors");
  auto direct = CheckpointFiles::open(dir.file(kSafetensorsSingleFile), nullptr);
  ASSERT_TRUE(direct.has_value()) << direct.error().to_string();
  EXPECT_TRUE(same_bytes(*direct->tensor("c.i64"), in[2].second));

  TempDir empty;
  auto none = CheckpointFiles::open(empty.path(), nullptr);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Errc::not_found);
}

// Writes a 2-shard checkpoint and returns its index for tampering.
ShardIndex two_shards(const TempDir& dir) {
  auto names = write_sharded_safetensors(dir.path(), shard_set(), 1300);
  EXPECT_TRUE(names.has_value());
  EXPECT_EQ(names->size(), 2u);
  return *parse_shard_index(read_bytes(dir.file(kSafetensorsIndexFile)));
}

void expect_open_error(const TempDir& dir, Errc code, std::initializer_list<std::string> needles) {
  auto r = CheckpointFiles::open(dir.path(), nullptr);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  for (const std::string& n : needles) {
    EXPECT_NE(r.error().message().find(n), std::string::npos) << "'" << n << "' not in: " << r.error().message();
  }
}

TEST(SafetensorsSharded, IndexReferencesMissingShard) {
  TempDir dir;
  two_shards(dir);
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  expect_open_error(dir, Errc::not_found, {kSafetensorsIndexFile, "model-00002-of-00002.safetensors", "does not exist"});
}

TEST(SafetensorsSharded, IndexMapsTensorToShardWithoutIt) {
  TempDir dir;
  ShardIndex index = two_shards(dir);
  index.weight_map["ghost.weight"] = "model-00001-of-00002.safetensors";
  write_bytes(dir.file(kSafetensorsIndexFile), shard_index_to_json(index));
  expect_open_error(dir, Errc::invalid_checkpoint, {"ghost.weight", "model-00001-of-00002.safetensors", "does not contain"});
}

TEST(SafetensorsSharded, ShardHoldsTensorNotInIndex) {
  TempDir dir;
  ShardIndex index = two_shards(dir);
  index.weight_map.erase("layer.0.weight");
  write_bytes(dir.file(kSafetensorsIndexFile), shard_index_to_json(index));
  expect_open_error(dir, Errc::invalid_checkpoint,
                    {"model-00001-of-00002.safetensors: tensor 'layer.0.weight'", "not listed"});
}

TEST(SafetensorsSharded, ShardHoldsTensorMappedElsewhere) {
  TempDir dir;
  ShardIndex index = two_shards(dir);
  index.weight_map["layer.0.weight"] = "model-00002-of-00002.safetensors";
  write_bytes(dir.file(kSafetensorsIndexFile), shard_index_to_json(index));
  expect_open_error(dir, Errc::invalid_checkpoint, {"'layer.0.weight'", "maps it to model-00002-of-00002.safetensors"});
}

TEST(SafetensorsSharded, HostileIndex) {
  TempDir dir;
  two_shards(dir);
  write_bytes(dir.file(kSafetensorsIndexFile), R"({"weight_map": {"a": "../../etc/passwd"}})");
  expect_open_error(dir, Errc::invalid_checkpoint, {kSafetensorsIndexFile, "'a'", "plain file name"});
  write_bytes(dir.file(kSafetensorsIndexFile), R"({"metadata": {}})");
  expect_open_error(dir, Errc::invalid_checkpoint, {"missing 'weight_map'"});
  write_bytes(dir.file(kSafetensorsIndexFile), "{not json");
  expect_open_error(dir, Errc::invalid_checkpoint, {kSafetensorsIndexFile, "not valid JSON"});
  write_bytes(dir.file(kSafetensorsIndexFile), R"({"weight_map": {"a": 3}})");
  expect_open_error(dir, Errc::invalid_checkpoint, {"'a'"});
}

TEST(SafetensorsSharded, CorruptShardIsNamed) {
  TempDir dir;
  two_shards(dir);
  const std::string path = dir.file("model-00002-of-00002.safetensors");
  std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 3));
  expect_open_error(dir, Errc::invalid_checkpoint, {"model-00002-of-00002.safetensors: tensor '", "exceed"});
}

// ---- fuzz -----------------------------------------------------------------------------------

// Every accepted entry lies inside the image's data section; read all its bytes (under
// FULGUR_SANITIZE an out-of-bounds view would be reported here).
void touch_all(const SafetensorsFile& f, const std::string& image) {
  uint64_t header_len = 0;
  std::memcpy(&header_len, image.data(), 8);
  const uint64_t data_size = image.size() - 8 - header_len;
  for (const SafetensorsEntry& e : f.entries()) {
    ASSERT_LE(e.begin, e.end);
    ASSERT_LE(e.end, data_size) << e.name;
    auto t = f.tensor(e);
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->nbytes(), e.end - e.begin);
    const auto* p = static_cast<const uint8_t*>(t->raw());
    unsigned sum = 0;
    for (size_t i = 0; i < t->nbytes(); ++i) sum += p[i];
    EXPECT_GE(sum, 0u);
  }
}

// A few thousand random mutations of a valid file, fixed seed: never a crash, never a view
// outside the file. Half of them rewrite the header text (digits, quotes, brackets) and fix up
// the length so the mutation reaches the entry validation instead of the JSON parser.
TEST(SafetensorsFuzz, MutatedFilesNeverCrash) {
  auto valid = serialize_safetensors(small_set(), {{"format", "pt"}});
  ASSERT_TRUE(valid.has_value());
  uint64_t header_len = 0;
  std::memcpy(&header_len, valid->data(), 8);
  const std::string header = valid->substr(8, header_len);
  const std::string data = valid->substr(8 + header_len);
  std::mt19937_64 rng(0x5afe7e55);
  const char tokens[] = "0123456789[],{}\":-. FBI";
  int accepted = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string image;
    if (iter % 2 == 0) {
      image = *valid;
      const int edits = 1 + static_cast<int>(rng() % 6);
      for (int e = 0; e < edits; ++e) {
        const size_t pos = rng() % image.size();
        switch (rng() % 4) {
          case 0: image[pos] = static_cast<char>(rng()); break;
          case 1: image[pos] ^= static_cast<char>(1u << (rng() % 8)); break;
          case 2: image.resize(pos); break;
          default: image.insert(pos, 1 + rng() % 16, static_cast<char>(rng())); break;
        }
        if (image.empty()) break;
      }
    } else {
      std::string h = header;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) h[rng() % h.size()] = tokens[rng() % (sizeof tokens - 1)];
      std::string d = data;
      if (rng() % 4 == 0) d.resize(rng() % (d.size() + 1));
      image = raw_file(h, d, rng() % 2 == 0);
    }
    auto f = SafetensorsFile::from_bytes(image, "fuzz.safetensors");
    if (f.has_value()) {
      ++accepted;
      touch_all(*f, image);
    } else {
      EXPECT_NE(f.error().message().find("fuzz.safetensors"), std::string::npos) << f.error().message();
    }
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace fulgur
