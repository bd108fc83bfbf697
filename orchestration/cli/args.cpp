#include <charconv>
#include <iostream>

#include "orchestration/cli/commands.h"

namespace fulgur::cli {

Expected<std::vector<int32_t>> parse_token_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(begin, end - begin);
    int32_t value = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size()) {
      return Status(Errc::invalid_argument, "--tokens: item " + std::to_string(ids.size()) + " ('" + item +
                                                "') is not a 32-bit integer");
    }
    ids.push_back(value);
    begin = end + 1;
  }
  return ids;
}

int fail(const std::string& command, const Status& status) {
  std::cerr << "fulgur " << command << ": " << status.to_string() << "\n";
  return 1;
}

}  // namespace fulgur::cli
