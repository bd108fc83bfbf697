// safetensors files: a zero-copy reader over a read-only memory map, an atomic writer, and
// sharded checkpoints (`model.safetensors.index.json`).
//
// File layout (https://github.com/huggingface/safetensors, "Format"):
//   bytes [0, 8)          : N, little-endian uint64 — length of the JSON header
//   bytes [8, 8 + N)      : JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]},
//                           "__metadata__": {string: string}} (may be padded with spaces)
//   bytes [8 + N, size)   : data section; data_offsets are relative to its start
//
// Every error names the file (its base name) and, where there is one, the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "devices/status.h"
#include "devices/tensor.h"

namespace fulgur {

// Largest header we accept (same limit as the reference Rust implementation).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor record of a header, validated against the file.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // [d0, d1, ...], row-major
  uint64_t begin = 0;          // byte offsets into the data section, end - begin == numel * dtype_size
  uint64_t end = 0;
};

// One opened safetensors file. Cheap to copy (the mapping is shared); tensors returned by
// tensor() keep the mapping alive on their own. The mapping is PROT_READ: tensor views are
// read-only memory — writing through one faults.
class SafetensorsFile {
 public:
  // Maps `path` read-only and validates the header and every entry.
  static Expected<SafetensorsFile> open(const std::string& path);
  // Parses a file image held in memory (tests, fuzzing). `origin` names it in errors.
  static Expected<SafetensorsFile> from_bytes(std::string bytes, std::string origin);

  const std::string& path() const { return path_; }
  const std::string& file_name() const { return file_name_; }  // base name, used in messages
  uint64_t file_size() const { return size_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // In order of data offset.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const SafetensorsEntry* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // A view of the tensor's bytes (no copy), owned by the mapping. When the data is not aligned
  // to its dtype size the bytes are copied into an owned, aligned buffer instead.
  Expected<Tensor> tensor(std::string_view name) const;
  Expected<Tensor> tensor(const SafetensorsEntry& entry) const;  // entry from entries()/find()

 private:
  static Expected<SafetensorsFile> parse(const uint8_t* base, uint64_t size, std::shared_ptr<void> owner,
                                         std::string path);

  std::string path_;
  std::string file_name_;
  const uint8_t* data_ = nullptr;  // start of the data section
  uint64_t size_ = 0;
  std::shared_ptr<void> owner_;    // the mapping (or the in-memory image)
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;  // name -> index into entries_
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using SafetensorsMetadata = std::map<std::string, std::string>;

// The bytes of a complete safetensors file: header padded with spaces to a multiple of 8,
// tensor data ordered by descending dtype size (so every tensor is aligned to its dtype),
// non-contiguous tensors materialised. Names must be unique, non-empty, not "__metadata__".
Expected<std::string> serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});

// Writes serialize_safetensors() to `path + ".tmp"`, fsyncs, then renames onto `path`.
Status write_safetensors(const std::string& path, const NamedTensors& tensors,
                         const SafetensorsMetadata& metadata = {});

// Writes `bytes` to `path + ".tmp"`, fsyncs, renames onto `path` (used for index and config files).
Status write_file_atomically(const std::string& path, std::string_view bytes);

// ---- sharded checkpoints ------------------------------------------------------------------

inline constexpr const char* kSafetensorsSingleFile = "model.safetensors";
inline constexpr const char* kSafetensorsIndexFile = "model.safetensors.index.json";

// model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file name}}.
struct ShardIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  int64_t total_size = -1;                         // metadata.total_size when given
  // The distinct shard file names, sorted.
  std::vector<std::string> shard_files() const;
};

// Parses an index. Shard names must be plain file names (no '/' and not "." or "..").
Expected<ShardIndex> parse_shard_index(std::string_view json_text, std::string_view origin = kSafetensorsIndexFile);
std::string shard_index_to_json(const ShardIndex& index);

// "model-00002-of-00003.safetensors" (1-based i).
std::string shard_file_name(int i, int n);

// Splits `tensors` in order into shards of at most `max_shard_bytes` of tensor data each (a
// single larger tensor gets a shard of its own), writes `dir/model-0000i-of-0000N.safetensors`
// and `dir/model.safetensors.index.json`. Returns the shard file names. `dir` must exist.
Expected<std::vector<std::string>> write_sharded_safetensors(const std::string& dir, const NamedTensors& tensors,
                                                             uint64_t max_shard_bytes,
                                                             const SafetensorsMetadata& metadata = {});

// ---- a checkpoint directory ---------------------------------------------------------------

// Receives one human-readable line per shard opened.
using ProgressCallback = std::function<void(const std::string& line)>;
// Writes each line to stderr.
ProgressCallback stderr_progress();

// The safetensors files of one checkpoint: `dir/model.safetensors` (preferred when present, as
// transformers does), else `dir/model.safetensors.index.json` and its shards. `dir` may also
// name a single .safetensors file. With an index, every shard it names must exist, hold every
// tensor mapped to it, and hold no tensor mapped elsewhere or not mapped at all.
class CheckpointFiles {
 public:
  static Expected<CheckpointFiles> open(const std::string& dir, const ProgressCallback& progress = stderr_progress());

  const std::string& dir() const { return dir_; }
  bool sharded() const { return sharded_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Every tensor name, sorted.
  std::vector<std::string> tensor_names() const;

  struct Located {
    const SafetensorsFile* file = nullptr;
    const SafetensorsEntry* entry = nullptr;
  };
  // nullptr members when the checkpoint has no such tensor.
  Located find(std::string_view name) const;
  // The file a tensor is (or, when missing, would be) in, for messages: its shard, else
  // "model.safetensors" / "model.safetensors.index.json".
  std::string file_for(std::string_view name) const;
  // A view of the tensor, or Errc::not_found naming it and the file it should be in.
  Expected<Tensor> tensor(std::string_view name) const;

 private:
  std::string dir_;
  bool sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> by_name_;  // -> (file, entry)
};

}  // namespace fulgur
