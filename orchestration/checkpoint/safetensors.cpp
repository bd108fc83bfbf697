#include "orchestration/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fulgur {
namespace {

using nlohmann::json;

// ---- small helpers ---------------------------------------------------------------------------

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string errno_text() { return std::strerror(errno); }

std::string offsets_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

// A read-only private mapping of a whole file; unmapped when the last owner goes away.
struct MappedFile {
  void* addr = MAP_FAILED;
  size_t length = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (addr != MAP_FAILED) munmap(addr, length);
  }
};

// Closes a file descriptor on scope exit.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) close(fd);
  }
};

// Short description of a JSON value for messages; never dumps containers (they may be deep).
std::string describe_value(const json& v) {
  if (v.is_structured()) return v.type_name();
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// ---- header validation ----------------------------------------------------------------------

// Builds messages "<file>: tensor '<name>': ...".
struct EntryContext {
  const std::string& file;
  const std::string& name;
  Status fail(Errc code, const std::string& what) const {
    return Status(code, file + ": tensor '" + name + "': " + what);
  }
};

Expected<uint64_t> non_negative_int(const json& v, const EntryContext& ctx, const char* what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return ctx.fail(Errc::invalid_checkpoint,
                  std::string(what) + " must hold non-negative integers, got " + describe_value(v));
}

Expected<std::vector<int64_t>> parse_shape(const json& v, const EntryContext& ctx) {
  if (!v.is_array()) return ctx.fail(Errc::invalid_checkpoint, "'shape' must be an array, got " + describe_value(v));
  std::vector<int64_t> shape;
  for (const json& d : v) {
    FULGUR_ASSIGN_OR_RETURN(uint64_t n, non_negative_int(d, ctx, "'shape'"));
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return ctx.fail(Errc::invalid_checkpoint, "'shape' dimension " + std::to_string(n) + " is too large");
    }
    shape.push_back(static_cast<int64_t>(n));
  }
  return shape;
}

// numel * dtype size, or an error when it does not fit in 64 bits.
Expected<uint64_t> byte_count(const std::vector<int64_t>& shape, DType dtype, const EntryContext& ctx) {
  uint64_t bytes = dtype_size(dtype);
  bool zero = false;
  for (int64_t d : shape) zero = zero || d == 0;
  if (zero) return uint64_t{0};
  for (int64_t d : shape) {
    if (bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
      return ctx.fail(Errc::invalid_checkpoint, "shape " + shape_string(shape) + " is too large");
    }
    bytes *= static_cast<uint64_t>(d);
  }
  return bytes;
}

Expected<SafetensorsEntry> parse_entry(const std::string& name, const json& v, uint64_t data_size,
                                       uint64_t file_size, const std::string& file) {
  EntryContext ctx{file, name};
  if (!v.is_object()) return ctx.fail(Errc::invalid_checkpoint, "entry must be an object, got " + describe_value(v));
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end()) return ctx.fail(Errc::invalid_checkpoint, "missing 'dtype'");
  if (!dt->is_string()) return ctx.fail(Errc::invalid_checkpoint, "'dtype' must be a string, got " + describe_value(*dt));
  auto dtype = dtype_from_safetensors(dt->get<std::string>());
  if (!dtype) {
    return ctx.fail(Errc::unsupported, "dtype '" + dt->get<std::string>() +
                                           "' is not supported (F32, BF16, F16, I8, I32, I64)");
  }
  e.dtype = *dtype;
  auto shape = v.find("shape");
  if (shape == v.end()) return ctx.fail(Errc::invalid_checkpoint, "missing 'shape'");
  FULGUR_ASSIGN_OR_RETURN(e.shape, parse_shape(*shape, ctx));
  auto offs = v.find("data_offsets");
  if (offs == v.end()) return ctx.fail(Errc::invalid_checkpoint, "missing 'data_offsets'");
  if (!offs->is_array() || offs->size() != 2) {
    return ctx.fail(Errc::invalid_checkpoint, "'data_offsets' must be [begin, end], got " + describe_value(*offs));
  }
  FULGUR_ASSIGN_OR_RETURN(e.begin, non_negative_int((*offs)[0], ctx, "'data_offsets'"));
  FULGUR_ASSIGN_OR_RETURN(e.end, non_negative_int((*offs)[1], ctx, "'data_offsets'"));
  if (e.begin > e.end) {
    return ctx.fail(Errc::invalid_checkpoint, "data_offsets " + offsets_string(e.begin, e.end) + " end before they begin");
  }
  if (e.end > data_size) {
    return ctx.fail(Errc::invalid_checkpoint, "data_offsets " + offsets_string(e.begin, e.end) +
                                                  " exceed the data section (" + std::to_string(data_size) +
                                                  " bytes; file size " + std::to_string(file_size) + ")");
  }
  FULGUR_ASSIGN_OR_RETURN(uint64_t expected, byte_count(e.shape, e.dtype, ctx));
  if (e.end - e.begin != expected) {
    return ctx.fail(Errc::invalid_checkpoint, "data_offsets " + offsets_string(e.begin, e.end) + " hold " +
                                                  std::to_string(e.end - e.begin) + " bytes but " +
                                                  shape_string(e.shape) + " " + dtype_safetensors_name(e.dtype) +
                                                  " needs " + std::to_string(expected));
  }
  return e;
}

Expected<std::map<std::string, std::string>> parse_metadata(const json& v, const std::string& file) {
  std::map<std::string, std::string> out;
  if (v.is_null()) return out;
  if (!v.is_object()) return Status(Errc::invalid_checkpoint, file + ": '__metadata__' must be an object of strings");
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return Status(Errc::invalid_checkpoint,
                    file + ": '__metadata__' value for '" + key + "' must be a string, got " + describe_value(value));
    }
    out[key] = value.get<std::string>();
  }
  return out;
}

// Non-empty tensors must not share bytes. `entries` sorted by (begin, end).
Status check_no_overlap(const std::vector<SafetensorsEntry>& entries, const std::string& file) {
  const SafetensorsEntry* furthest = nullptr;  // non-empty entry reaching furthest so far
  for (const SafetensorsEntry& e : entries) {
    if (e.begin == e.end) continue;
    if (furthest != nullptr && e.begin < furthest->end) {
      return Status(Errc::invalid_checkpoint, file + ": tensor '" + e.name + "': data_offsets " +
                                                  offsets_string(e.begin, e.end) + " overlap tensor '" +
                                                  furthest->name + "' " +
                                                  offsets_string(furthest->begin, furthest->end));
    }
    if (furthest == nullptr || e.end > furthest->end) furthest = &e;
  }
  return Status::ok();
}

Expected<json> parse_json_text(std::string_view text, const std::string& file, const char* what) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return Status(Errc::invalid_checkpoint, file + ": " + what + " is not valid JSON: " + e.what());
  }
}

// Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF): JSON strings must be valid UTF-8.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;  // continuation bytes
    uint32_t cp = 0;
    if ((c >> 5) == 0x6) {
      n = 1, cp = c & 0x1fu;
    } else if ((c >> 4) == 0xe) {
      n = 2, cp = c & 0x0fu;
    } else if ((c >> 3) == 0x1e) {
      n = 3, cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    const uint32_t min_cp = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

// ---- writing --------------------------------------------------------------------------------

using ByteSink = std::function<Status(const void* data, size_t size)>;

// Streams a tensor's elements in row-major order, materialising strided layouts in chunks.
Status emit_tensor_bytes(const Tensor& t, const ByteSink& sink) {
  if (t.numel() == 0) return Status::ok();
  if (t.is_contiguous()) return sink(t.raw(), t.nbytes());
  const size_t elem = dtype_size(t.dtype());
  std::vector<char> chunk;
  chunk.reserve(1 << 20);
  std::vector<int64_t> idx(static_cast<size_t>(t.dim()), 0);
  const char* base = static_cast<const char*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t off = 0;
    for (int d = 0; d < t.dim(); ++d) off += idx[static_cast<size_t>(d)] * t.strides()[static_cast<size_t>(d)];
    chunk.insert(chunk.end(), base + off * static_cast<int64_t>(elem), base + (off + 1) * static_cast<int64_t>(elem));
    if (chunk.size() >= (1 << 20)) {
      FULGUR_TRY(sink(chunk.data(), chunk.size()));
      chunk.clear();
    }
    for (int d = t.dim() - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < t.size(d)) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return chunk.empty() ? Status::ok() : sink(chunk.data(), chunk.size());
}

Status check_writable(const NamedTensors& tensors, const SafetensorsMetadata& metadata = {}) {
  for (const auto& [key, value] : metadata) {
    if (!valid_utf8(key) || !valid_utf8(value)) {
      return Status(Errc::invalid_argument, "safetensors: metadata entries must be valid UTF-8");
    }
  }
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || !valid_utf8(name)) {
      return Status(Errc::invalid_argument, "safetensors: invalid tensor name '" + name + "'");
    }
    if (!seen.insert(name).second) {
      return Status(Errc::invalid_argument, "safetensors: duplicate tensor name '" + name + "'");
    }
    if (t.device().kind != DeviceKind::cpu) {
      return Status(Errc::unsupported, "safetensors: tensor '" + name + "' is on " + device_name(t.device()) +
                                           "; only host tensors can be written");
    }
    if (!t.defined()) return Status(Errc::invalid_argument, "safetensors: tensor '" + name + "' has no data");
    for (int64_t d : t.shape()) {
      if (d < 0) return Status(Errc::invalid_argument, "safetensors: tensor '" + name + "' has a negative dimension");
    }
  }
  return Status::ok();
}

// Order of the data section: descending dtype size, then as given.
std::vector<size_t> data_order(const NamedTensors& tensors) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  return order;
}

// The 8-byte length plus the space-padded header.
std::string header_bytes(const NamedTensors& tensors, const std::vector<size_t>& order,
                         const SafetensorsMetadata& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    header[tensors[i].first] = {{"dtype", dtype_safetensors_name(t.dtype())},
                                {"shape", t.shape()},
                                {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int b = 0; b < 8; ++b) out[static_cast<size_t>(b)] = static_cast<char>((n >> (8 * b)) & 0xff);
  return out + text;
}

Status emit_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata, const ByteSink& sink) {
  FULGUR_TRY(check_writable(tensors, metadata));
  const std::vector<size_t> order = data_order(tensors);
  const std::string header = header_bytes(tensors, order, metadata);
  FULGUR_TRY(sink(header.data(), header.size()));
  for (size_t i : order) FULGUR_TRY(emit_tensor_bytes(tensors[i].second, sink));
  return Status::ok();
}

Status write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status(Errc::io_error, path + ": write failed: " + errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::ok();
}

// Writes through `fill` into path + ".tmp", fsyncs, renames onto `path`; removes the temporary
// file on failure.
Status write_atomically(const std::string& path, const std::function<Status(const ByteSink&)>& fill) {
  const std::string tmp = path + ".tmp";
  FdGuard fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (fd.fd < 0) return Status(Errc::io_error, tmp + ": cannot create: " + errno_text());
  Status st = fill([&](const void* data, size_t size) { return write_all(fd.fd, data, size, tmp); });
  if (st.is_ok() && ::fsync(fd.fd) != 0) st = Status(Errc::io_error, tmp + ": fsync failed: " + errno_text());
  int closed = ::close(fd.fd);
  fd.fd = -1;
  if (st.is_ok() && closed != 0) st = Status(Errc::io_error, tmp + ": close failed: " + errno_text());
  if (st.is_ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = Status(Errc::io_error, path + ": rename from " + tmp + " failed: " + errno_text());
  }
  if (!st.is_ok()) ::unlink(tmp.c_str());
  return st;
}

Expected<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Errc::not_found, path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status(Errc::io_error, path + ": read failed");
  return text.str();
}

bool is_regular_file(const std::string& path, uint64_t* size = nullptr) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (size != nullptr) *size = static_cast<uint64_t>(st.st_size);
  return true;
}

bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

// ---- SafetensorsFile ----------------------------------------------------------------------------

Expected<SafetensorsFile> SafetensorsFile::parse(const uint8_t* base, uint64_t size, std::shared_ptr<void> owner,
                                                 std::string path) {
  const std::string file = base_name(path);
  if (size < 8) {
    return Status(Errc::invalid_checkpoint,
                  file + ": file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  uint64_t header_len = 0;
  for (int b = 7; b >= 0; --b) header_len = (header_len << 8) | base[b];
  if (header_len > kSafetensorsMaxHeaderBytes) {
    return Status(Errc::invalid_checkpoint, file + ": header length " + std::to_string(header_len) +
                                                " exceeds the limit of " + std::to_string(kSafetensorsMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return Status(Errc::invalid_checkpoint, file + ": header length " + std::to_string(header_len) +
                                                " exceeds the file size " + std::to_string(size));
  }
  std::string_view text(reinterpret_cast<const char*>(base + 8), header_len);
  FULGUR_ASSIGN_OR_RETURN(json header, parse_json_text(text, file, "header"));
  if (!header.is_object()) {
    return Status(Errc::invalid_checkpoint, file + ": header must be a JSON object, got " + describe_value(header));
  }
  SafetensorsFile f;
  f.path_ = std::move(path);
  f.file_name_ = file;
  f.size_ = size;
  f.data_ = base + 8 + header_len;
  f.owner_ = std::move(owner);
  const uint64_t data_size = size - 8 - header_len;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      FULGUR_ASSIGN_OR_RETURN(f.metadata_, parse_metadata(value, file));
      continue;
    }
    FULGUR_ASSIGN_OR_RETURN(SafetensorsEntry e, parse_entry(name, value, data_size, size, file));
    f.entries_.push_back(std::move(e));
  }
  std::sort(f.entries_.begin(), f.entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  FULGUR_TRY(check_no_overlap(f.entries_, file));
  for (size_t i = 0; i < f.entries_.size(); ++i) f.by_name_.emplace(f.entries_[i].name, i);
  return f;
}

Expected<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    return Status(errno == ENOENT ? Errc::not_found : Errc::io_error, path + ": cannot open: " + errno_text());
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return Status(Errc::io_error, path + ": fstat failed: " + errno_text());
  if (!S_ISREG(st.st_mode)) return Status(Errc::io_error, path + ": not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {  // nothing to map; same message as parse()
    return Status(Errc::invalid_checkpoint, base_name(path) + ": file is " + std::to_string(size) +
                                                " bytes, too short for the 8-byte header length");
  }
  auto map = std::make_shared<MappedFile>();
  map->addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (map->addr == MAP_FAILED) return Status(Errc::io_error, path + ": mmap failed: " + errno_text());
  map->length = size;
  const auto* base = static_cast<const uint8_t*>(map->addr);
  try {
    return parse(base, size, std::move(map), path);
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, base_name(path) + ": out of memory while reading the header");
  } catch (const std::exception& e) {
    return Status(Errc::internal, base_name(path) + ": unexpected error: " + e.what());
  }
}

Expected<SafetensorsFile> SafetensorsFile::from_bytes(std::string bytes, std::string origin) {
  auto image = std::make_shared<std::string>(std::move(bytes));
  const auto* base = reinterpret_cast<const uint8_t*>(image->data());
  const uint64_t size = image->size();
  try {
    return parse(base, size, std::move(image), std::move(origin));
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, "out of memory while reading a safetensors header");
  } catch (const std::exception& e) {
    return Status(Errc::internal, std::string("unexpected error reading a safetensors header: ") + e.what());
  }
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

Expected<Tensor> SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) return Status(Errc::not_found, file_name_ + ": no tensor '" + std::string(name) + "'");
  return tensor(*e);
}

Expected<Tensor> SafetensorsFile::tensor(const SafetensorsEntry& e) const {
  const uint8_t* p = data_ + e.begin;
  const size_t align = dtype_size(e.dtype);
  if (reinterpret_cast<uintptr_t>(p) % align == 0) {
    return Tensor(e.dtype, e.shape, const_cast<uint8_t*>(p), owner_);
  }
  // Unaligned (a file not written with dtype-ordered data): copy into aligned memory.
  try {
    Tensor copy = Tensor::empty(e.dtype, e.shape);
    if (e.end > e.begin) std::memcpy(copy.raw(), p, e.end - e.begin);
    return copy;
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, file_name_ + ": tensor '" + e.name + "': out of memory copying " +
                                           std::to_string(e.end - e.begin) + " unaligned bytes");
  }
}

// ---- writer ---------------------------------------------------------------------------------

Expected<std::string> serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  std::string out;
  Status st = emit_safetensors(tensors, metadata, [&](const void* data, size_t size) {
    out.append(static_cast<const char*>(data), size);
    return Status::ok();
  });
  if (!st.is_ok()) return st;
  return out;
}

Status write_safetensors(const std::string& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  FULGUR_TRY(check_writable(tensors, metadata));
  return write_atomically(path, [&](const ByteSink& sink) { return emit_safetensors(tensors, metadata, sink); });
}

Status write_file_atomically(const std::string& path, std::string_view bytes) {
  return write_atomically(path, [&](const ByteSink& sink) { return sink(bytes.data(), bytes.size()); });
}

// ---- shard index ----------------------------------------------------------------------------

std::vector<std::string> ShardIndex::shard_files() const {
  std::set<std::string> files;
  for (const auto& [name, file] : weight_map) files.insert(file);
  return {files.begin(), files.end()};
}

Expected<ShardIndex> parse_shard_index(std::string_view json_text, std::string_view origin_view) {
  const std::string origin(origin_view);
  try {
    FULGUR_ASSIGN_OR_RETURN(json root, parse_json_text(json_text, origin, "index"));
    auto fail = [&](const std::string& m) { return Status(Errc::invalid_checkpoint, origin + ": " + m); };
    if (!root.is_object()) return fail("expected a JSON object");
    ShardIndex index;
    auto meta = root.find("metadata");
    if (meta != root.end() && !meta->is_null()) {
      if (!meta->is_object()) return fail("'metadata' must be an object");
      auto total = meta->find("total_size");
      if (total != meta->end() && !total->is_null()) {
        if (!total->is_number_integer() || total->get<int64_t>() < 0) {
          return fail("'metadata.total_size' must be a non-negative integer, got " + describe_value(*total));
        }
        index.total_size = total->get<int64_t>();
      }
    }
    auto map = root.find("weight_map");
    if (map == root.end()) return fail("missing 'weight_map'");
    if (!map->is_object()) return fail("'weight_map' must be an object");
    for (const auto& [name, file] : map->items()) {
      if (!file.is_string() || !is_plain_file_name(file.get<std::string>())) {
        return fail("tensor '" + name + "' maps to " + describe_value(file) + ", which is not a plain file name");
      }
      index.weight_map[name] = file.get<std::string>();
    }
    return index;
  } catch (const std::exception& e) {
    return Status(Errc::internal, origin + ": unexpected error: " + e.what());
  }
}

std::string shard_index_to_json(const ShardIndex& index) {
  json j;
  j["metadata"] = json::object();
  if (index.total_size >= 0) j["metadata"]["total_size"] = index.total_size;
  j["weight_map"] = index.weight_map;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string shard_file_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i, n);
  return buf;
}

Expected<std::vector<std::string>> write_sharded_safetensors(const std::string& dir, const NamedTensors& tensors,
                                                             uint64_t max_shard_bytes,
                                                             const SafetensorsMetadata& metadata) {
  FULGUR_TRY(check_writable(tensors, metadata));
  // Greedy split in the given order.
  std::vector<NamedTensors> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& named : tensors) {
    const uint64_t n = named.second.nbytes();
    if (!shards.back().empty() && shard_bytes + n > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(named);
    shard_bytes += n;
    total += n;
  }
  const int count = static_cast<int>(shards.size());
  ShardIndex index;
  index.total_size = static_cast<int64_t>(total);
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) {
    names.push_back(shard_file_name(i + 1, count));
    FULGUR_TRY(write_safetensors(join_path(dir, names.back()), shards[static_cast<size_t>(i)], metadata));
    for (const auto& named : shards[static_cast<size_t>(i)]) index.weight_map[named.first] = names.back();
  }
  const std::string text = shard_index_to_json(index);
  FULGUR_TRY(write_file_atomically(join_path(dir, kSafetensorsIndexFile), text));
  return names;
}

// ---- CheckpointFiles --------------------------------------------------------------------------

ProgressCallback stderr_progress() {
  return [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
}

namespace {

// Opens one file of a checkpoint, announcing it first.
Expected<SafetensorsFile> open_announced(const std::string& path, int i, int n, const ProgressCallback& progress) {
  uint64_t size = 0;
  if (!is_regular_file(path, &size)) return Status(Errc::not_found, path + ": no such file");
  if (progress) {
    progress("loading shard " + std::to_string(i) + "/" + std::to_string(n) + " " + base_name(path) + " (" +
             megabytes(size) + ")");
  }
  return SafetensorsFile::open(path);
}

// Every tensor of `file` must be mapped to it by the index.
Status check_shard_against_index(const SafetensorsFile& file, const ShardIndex& index) {
  for (const SafetensorsEntry& e : file.entries()) {
    auto it = index.weight_map.find(e.name);
    if (it == index.weight_map.end()) {
      return Status(Errc::invalid_checkpoint, file.file_name() + ": tensor '" + e.name + "' is not listed in " +
                                                  kSafetensorsIndexFile);
    }
    if (it->second != file.file_name()) {
      return Status(Errc::invalid_checkpoint, file.file_name() + ": tensor '" + e.name + "' is here but " +
                                                  kSafetensorsIndexFile + " maps it to " + it->second);
    }
  }
  return Status::ok();
}

}  // namespace

namespace {

// The shards named by `dir/model.safetensors.index.json`, opened in sorted order and checked
// against the index in both directions.
Expected<std::vector<SafetensorsFile>> open_shards(const std::string& dir, const ProgressCallback& progress) {
  FULGUR_ASSIGN_OR_RETURN(std::string text, read_text_file(join_path(dir, kSafetensorsIndexFile)));
  FULGUR_ASSIGN_OR_RETURN(ShardIndex index, parse_shard_index(text, kSafetensorsIndexFile));
  const std::vector<std::string> names = index.shard_files();
  std::map<std::string, size_t> position;  // shard file name -> index into `shards`
  std::vector<SafetensorsFile> shards;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string path = join_path(dir, names[i]);
    if (!is_regular_file(path)) {
      return Status(Errc::not_found, std::string(kSafetensorsIndexFile) + " references " + names[i] +
                                         ", which does not exist in " + dir);
    }
    const int n = static_cast<int>(names.size());
    FULGUR_ASSIGN_OR_RETURN(SafetensorsFile f, open_announced(path, static_cast<int>(i) + 1, n, progress));
    FULGUR_TRY(check_shard_against_index(f, index));
    position[names[i]] = shards.size();
    shards.push_back(std::move(f));
  }
  for (const auto& [name, file] : index.weight_map) {
    if (!shards[position.at(file)].contains(name)) {
      return Status(Errc::invalid_checkpoint, std::string(kSafetensorsIndexFile) + " maps tensor '" + name + "' to " +
                                                  file + ", which does not contain it");
    }
  }
  return shards;
}

}  // namespace

Expected<CheckpointFiles> CheckpointFiles::open(const std::string& dir, const ProgressCallback& progress) {
  CheckpointFiles ckpt;
  try {
    const std::string single = join_path(dir, kSafetensorsSingleFile);
    if (is_regular_file(dir)) {  // a single .safetensors file named directly
      const size_t slash = dir.find_last_of('/');
      ckpt.dir_ = slash == std::string::npos ? "." : dir.substr(0, slash);
      FULGUR_ASSIGN_OR_RETURN(SafetensorsFile f, open_announced(dir, 1, 1, progress));
      ckpt.files_.push_back(std::move(f));
    } else if (is_regular_file(single)) {
      ckpt.dir_ = dir;
      FULGUR_ASSIGN_OR_RETURN(SafetensorsFile f, open_announced(single, 1, 1, progress));
      ckpt.files_.push_back(std::move(f));
    } else if (is_regular_file(join_path(dir, kSafetensorsIndexFile))) {
      ckpt.dir_ = dir;
      ckpt.sharded_ = true;
      FULGUR_ASSIGN_OR_RETURN(ckpt.files_, open_shards(dir, progress));
    } else {
      return Status(Errc::not_found,
                    dir + ": no " + std::string(kSafetensorsSingleFile) + " and no " + kSafetensorsIndexFile);
    }
    for (size_t fi = 0; fi < ckpt.files_.size(); ++fi) {
      const auto& entries = ckpt.files_[fi].entries();
      for (size_t ei = 0; ei < entries.size(); ++ei) ckpt.by_name_.emplace(entries[ei].name, std::pair{fi, ei});
    }
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, dir + ": out of memory while opening the checkpoint");
  } catch (const std::exception& e) {
    return Status(Errc::internal, dir + ": unexpected error while opening the checkpoint: " + e.what());
  }
  return ckpt;
}

std::vector<std::string> CheckpointFiles::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, where] : by_name_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

CheckpointFiles::Located CheckpointFiles::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) return {};
  const SafetensorsFile& f = files_[it->second.first];
  return {&f, &f.entries()[it->second.second]};
}

std::string CheckpointFiles::file_for(std::string_view name) const {
  Located at = find(name);
  if (at.file != nullptr) return at.file->file_name();
  if (sharded_) return kSafetensorsIndexFile;
  return files_.empty() ? kSafetensorsSingleFile : files_.front().file_name();
}

Expected<Tensor> CheckpointFiles::tensor(std::string_view name) const {
  Located at = find(name);
  if (at.file == nullptr) {
    return Status(Errc::not_found, "tensor '" + std::string(name) + "' not found in " + file_for(name));
  }
  return at.file->tensor(*at.entry);
}

}  // namespace fulgur
