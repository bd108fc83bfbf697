// GPT-2 byte-level alphabet and UTF-8 helpers (internal to fulgur_tokenizer).
//
// Byte-level BPE never sees raw bytes in its vocabulary: every byte b is written as one
// printable code point `byte_to_codepoint(b)` (GPT-2's `bytes_to_unicode`):
//   bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF  -> the code point with the same value
//   the other 68 bytes (controls, space, 0x7F..0xA0, 0xAD), in increasing order -> U+0100..U+0143
// so a space is "Ġ" (U+0120) and "\n" is "Ċ" (U+010A) in tokenizer.json.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fulgur::tokenizer_detail {

constexpr bool byte_is_printable(uint32_t b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

// [256]: byte -> code point of its byte-level character.
constexpr std::array<uint32_t, 256> make_byte_to_codepoint() {
  std::array<uint32_t, 256> table{};
  uint32_t num_shifted = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    table[b] = byte_is_printable(b) ? b : 256 + num_shifted++;
  }
  return table;
}
inline constexpr std::array<uint32_t, 256> kByteToCodepoint = make_byte_to_codepoint();
inline constexpr uint32_t kNumByteLevelCodepoints = 256 + 68;  // code points < this may be bytes

// [kNumByteLevelCodepoints]: code point -> byte, or -1 when the code point is not in the alphabet.
constexpr std::array<int16_t, kNumByteLevelCodepoints> make_codepoint_to_byte() {
  std::array<int16_t, kNumByteLevelCodepoints> table{};
  for (auto& v : table) v = -1;
  for (uint32_t b = 0; b < 256; ++b) table[kByteToCodepoint[b]] = static_cast<int16_t>(b);
  return table;
}
inline constexpr std::array<int16_t, kNumByteLevelCodepoints> kCodepointToByte =
    make_codepoint_to_byte();

inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the well-formed UTF-8 sequence starting at text[pos], or 0 when it is malformed
// (truncated, overlong, surrogate, above U+10FFFF, stray continuation byte).
inline size_t utf8_sequence_length(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return 1;
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (pos + len > text.size()) return 0;
  if (byte(pos + 1) < lo || byte(pos + 1) > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) return 0;
  }
  return len;
}

// Byte offset of the first malformed UTF-8 sequence in `text`, or nullopt if it is all valid.
inline std::optional<size_t> find_invalid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t len = utf8_sequence_length(text, pos);
    if (len == 0) return pos;
    pos += len;
  }
  return std::nullopt;
}

// Decodes the code point of the valid UTF-8 sequence of length `len` at text[pos].
inline uint32_t decode_utf8_at(std::string_view text, size_t pos, size_t len) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + i])); };
  switch (len) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3: return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
             (byte(3) & 0x3F);
  }
}

// Start offset of the code point that ends at text[end) (end > 0, text valid UTF-8).
inline size_t utf8_previous_start(std::string_view text, size_t end) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

// Unicode White_Space (what Rust's char::is_whitespace tests; HF's lstrip/rstrip use it).
inline bool is_unicode_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Raw bytes -> byte-level string ("Hello world" -> "HelloĠworld").
inline std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(out, kByteToCodepoint[static_cast<uint8_t>(c)]);
  return out;
}

// Byte-level string -> raw bytes; nullopt when some character is outside the alphabet (or the
// string is not valid UTF-8).
inline std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t len = utf8_sequence_length(text, pos);
    if (len == 0) return std::nullopt;
    const uint32_t cp = decode_utf8_at(text, pos, len);
    if (cp >= kNumByteLevelCodepoints || kCodepointToByte[cp] < 0) return std::nullopt;
    out += static_cast<char>(kCodepointToByte[cp]);
    pos += len;
  }
  return out;
}

}  // namespace fulgur::tokenizer_detail
